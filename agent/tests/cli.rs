//! The `peapod` command line against a real peapodd and registry.

mod common;

use common::*;

#[test]
fn version_images_pull_inspect_and_rmi() {
    let registry = Registry::start();
    let reference = registry.push("busybox", "test/cli", "v1");
    let dirs = DaemonDirs::new();
    let _daemon = Peapodd::start(&dirs);
    let endpoint = dirs.endpoint();
    let run = |args: &[&str]| {
        let out = peapod(&endpoint, args);
        assert!(out.status.success(), "peapod {args:?}: {}", stderr(&out));
        stdout(&out)
    };

    let version = run(&["version"]);
    assert!(version.contains("RuntimeName:        peapod"), "{version}");
    assert!(version.contains("RuntimeApiVersion:  v1"), "{version}");

    let info: serde_json::Value = serde_json::from_str(&run(&["info"])).unwrap();
    let conditions = info["status"]["conditions"].as_array().unwrap();
    assert!(conditions
        .iter()
        .any(|c| c["type"] == "NetworkReady" && c["status"] == false));
    assert!(info["config"]["root"].is_string());

    let empty = run(&["images"]);
    assert_eq!(empty, "IMAGE   TAG   IMAGE ID   SIZE\n");

    let pulled = run(&["pull", &reference]);
    assert!(
        pulled.starts_with("Image is up to date for sha256:"),
        "{pulled}"
    );
    let id = pulled.trim().rsplit(' ').next().unwrap().to_string();

    let table = run(&["images"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("IMAGE "), "{table}");
    let columns: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(columns[0], format!("{}/test/cli", registry.host()));
    assert_eq!(columns[1], "v1");
    assert_eq!(columns[2], &id["sha256:".len().."sha256:".len() + 12]);
    assert!(columns[3].ends_with('B'), "{table}");

    assert_eq!(run(&["images", "-q"]).trim(), id);
    let listed: serde_json::Value = serde_json::from_str(&run(&["images", "-o", "json"])).unwrap();
    assert_eq!(listed["images"][0]["id"], id.as_str());
    let yaml = run(&["images", "-o", "yaml"]);
    assert!(yaml.contains(&format!("id: {id}")), "{yaml}");

    // inspecti by a short ID prefix.
    let prefix = &id["sha256:".len().."sha256:".len() + 4];
    let inspected: serde_json::Value = serde_json::from_str(&run(&["inspecti", prefix])).unwrap();
    assert_eq!(inspected["status"]["id"], id.as_str());
    assert_eq!(
        inspected["info"]["info"]["imageSpec"]["config"]["Cmd"][0],
        "/bin/sh"
    );

    let removed = run(&["rmi", prefix]);
    assert_eq!(removed.trim(), format!("Deleted: {prefix}"));
    assert_eq!(run(&["images", "-q"]), "");

    // Removing what is not there is an error for a person, with a reason.
    let out = peapod(&endpoint, &["rmi", "no-such-image:v9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no such image: no-such-image:v9"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn errors_go_to_stderr_with_exit_code_1() {
    let dirs = DaemonDirs::new();
    // No daemon yet.
    let out = peapod(&dirs.endpoint(), &["version"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is peapodd running?"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());

    let _daemon = Peapodd::start(&dirs);
    let out = peapod(&dirs.endpoint(), &["pull", "127.0.0.1:1/nothing:v1"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("pulling 127.0.0.1:1/nothing:v1"),
        "{message}"
    );
    assert!(message.contains("Unavailable"), "{message}");

    // PEAPOD_ENDPOINT works as well as the flag.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_peapod"))
        .arg("version")
        .env("PEAPOD_ENDPOINT", dirs.endpoint())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn pull_with_creds() {
    let registry = Registry::start_with_auth();
    let reference = registry.push("busybox", "private/cli", "v1");
    let dirs = DaemonDirs::new();
    let _daemon = Peapodd::start(&dirs);
    let endpoint = dirs.endpoint();

    let out = peapod(&endpoint, &["pull", &reference]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("Unauthenticated"), "{}", stderr(&out));

    let out = peapod(&endpoint, &["pull", "--creds", "no-colon", &reference]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("USER:PASSWORD"), "{}", stderr(&out));

    let creds = format!("{USER}:{PASSWORD}");
    let out = peapod(&endpoint, &["pull", "--creds", &creds, &reference]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("Image is up to date for sha256:"));
}
