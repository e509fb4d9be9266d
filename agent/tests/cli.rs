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

/// Every file left in the daemon's import spool dir and every import dir left in its image
/// store: after an import, finished or failed, there must be none.
fn import_leftovers(dirs: &DaemonDirs) -> Vec<std::path::PathBuf> {
    let spool = peapod_agent::extension::spool_dir(&dirs.path("root"));
    let mut left: Vec<_> = std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .map(|e| e.unwrap().path())
        .collect();
    left.extend(
        std::fs::read_dir(dirs.path("root/rootfs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("import-")
            }),
    );
    left
}

#[test]
fn import_layout_tar_layout_dir_and_docker_archives() {
    let dirs = DaemonDirs::new();
    let _daemon = Peapodd::start(&dirs);
    let endpoint = dirs.endpoint();
    let run = |args: &[&str]| {
        let out = peapod(&endpoint, args);
        assert!(out.status.success(), "peapod {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let images = images();

    // An OCI layout tar: every tag of the layout, named under --name.
    let oci_tar = images.join("oci.tar");
    let table = run(&[
        "import",
        oci_tar.to_str().unwrap(),
        "--name",
        "test.local/tar",
    ]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("IMAGE "), "{table}");
    for tag in ["busybox", "multi", "multiarch"] {
        assert!(
            lines
                .iter()
                .any(|l| l.split_whitespace().take(2).eq(["test.local/tar", tag])),
            "{tag} missing:\n{table}"
        );
    }

    // An OCI layout directory, tarred by the CLI on the way.
    let oci_dir = images.join("oci");
    let json = run(&[
        "import",
        oci_dir.to_str().unwrap(),
        "--name",
        "test.local/dir",
        "-o",
        "json",
    ]);
    let imported: serde_json::Value = serde_json::from_str(&json).unwrap();
    let imported = imported["images"].as_array().unwrap();
    assert_eq!(imported.len(), 3, "{json}");
    let busybox = imported
        .iter()
        .find(|i| i["repoTags"][0] == "test.local/dir:busybox")
        .unwrap_or_else(|| panic!("{json}"));
    let busybox_id = busybox["id"].as_str().unwrap();
    assert!(busybox_id.starts_with("sha256:"), "{json}");

    // The script's `docker save` archive carries its own tag.
    let docker = images.join("docker-archive.tar");
    let yaml = run(&["import", docker.to_str().unwrap(), "-o", "yaml"]);
    assert!(yaml.contains("peapod-test/docker-multi:v1"), "{yaml}");

    // And one skopeo wrote, as docker tools do.
    let skopeo_tar = dirs.path("skopeo-docker.tar");
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci:{}:busybox", oci_dir.display()))
        .arg(format!(
            "docker-archive:{}:test.local/skopeo/busybox:1",
            skopeo_tar.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
    let table = run(&["import", skopeo_tar.to_str().unwrap()]);
    assert!(table.contains("test.local/skopeo/busybox   1"), "{table}");

    // All of them are CRI images now.
    let listed = run(&["images"]);
    for name in [
        "test.local/tar",
        "test.local/dir",
        "peapod-test/docker-multi",
        "test.local/skopeo/busybox",
    ] {
        assert!(listed.contains(name), "{name} not listed:\n{listed}");
    }
    let inspected: serde_json::Value =
        serde_json::from_str(&run(&["inspecti", "test.local/dir:busybox"])).unwrap();
    assert_eq!(inspected["status"]["id"], busybox_id);
    assert!(
        import_leftovers(&dirs).is_empty(),
        "{:?}",
        import_leftovers(&dirs)
    );
}

#[test]
fn a_bad_import_fails_readably_and_leaves_nothing() {
    let dirs = DaemonDirs::new();
    let _daemon = Peapodd::start(&dirs);
    let endpoint = dirs.endpoint();

    // Bytes that are no tar at all (a bad header checksum), and a tar of something else.
    let garbage = dirs.path("garbage.tar");
    std::fs::write(&garbage, vec![0x5au8; 64 * 1024]).unwrap();
    let out = peapod(&endpoint, &["import", garbage.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(message.starts_with("peapod: importing "), "{message}");
    assert!(message.contains("garbage.tar"), "{message}");
    assert!(message.contains("InvalidArgument"), "{message}");
    // The tar reader quotes the garbage; it reaches the terminal made printable.
    assert!(
        !message.contains('\u{fffd}') && !message.trim_end().contains(char::is_control),
        "{message}"
    );

    let not_an_image = dirs.path("not-an-image.tar");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&not_an_image)
        .arg("-C")
        .arg(dirs.path(""))
        .arg("config.toml")
        .status()
        .unwrap();
    assert!(status.success());
    let out = peapod(&endpoint, &["import", not_an_image.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.contains("neither an OCI image layout") && message.contains("InvalidArgument"),
        "{message}"
    );

    // A name with a tag: the archive gives the tags.
    let layout = images().join("oci.tar");
    let out = peapod(
        &endpoint,
        &["import", layout.to_str().unwrap(), "--name", "x/y:v1"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("without tag"), "{}", stderr(&out));

    // What is not there, or a directory that is no layout, fails in the CLI.
    let out = peapod(&endpoint, &["import", "/no/such/archive.tar"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("/no/such/archive.tar"),
        "{}",
        stderr(&out)
    );
    let out = peapod(&endpoint, &["import", dirs.path("cni").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no index.json"), "{}", stderr(&out));

    // A read error midway (reading /proc/self/mem at 0 is EIO) cancels the upload: the daemon
    // never sees a clean end of an archive that is not all there.
    let out = peapod(&endpoint, &["import", "/proc/self/mem"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("peapod: reading /proc/self/mem: "),
        "{}",
        stderr(&out)
    );

    assert_eq!(peapod(&endpoint, &["images", "-q"]).stdout, b"");
    // The daemon learns of the cancelled call on its own time.
    wait_for(|| import_leftovers(&dirs).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_leaving_mid_import_leaves_no_spool() {
    use peapod_agent::extension::proto::{images_client::ImagesClient, ImportRequest};

    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let mut client = ImagesClient::new(daemon.channel().await);
    let (sender, chunks) = tokio::sync::mpsc::channel(1);
    sender
        .send(ImportRequest {
            name: String::new(),
            chunk: vec![0; 1024 * 1024],
        })
        .await
        .unwrap();
    // The stream stays open while `sender` lives: the daemon waits for more.
    let call = tokio::spawn(async move {
        client
            .import(tokio_stream::wrappers::ReceiverStream::new(chunks))
            .await
    });
    let spool = peapod_agent::extension::spool_dir(&dirs.path("root"));
    wait_for(|| std::fs::read_dir(&spool).is_ok_and(|mut d| d.next().is_some()));

    call.abort();
    let _ = call.await;
    wait_for(|| import_leftovers(&dirs).is_empty());
    drop(sender);
}

/// Waits until `done` holds; the limit only keeps a broken daemon from hanging the test.
fn wait_for(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "gave up waiting");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A container from an image imported with `peapod import` runs, and `peapod stats` shows it
/// and its pod; every command also takes a bare socket path as endpoint, as crictl does.
#[tokio::test(flavor = "multi_thread")]
async fn stats_of_a_container_from_an_imported_image() {
    use peapod_cri_proto::v1;

    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let bare = dirs.socket().display().to_string();
    let run = |args: &[&str]| {
        let out = peapod(&bare, args);
        assert!(out.status.success(), "peapod {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let layout = images().join("oci");
    run(&[
        "import",
        layout.to_str().unwrap(),
        "--name",
        "test.local/stats",
    ]);

    let mut rt = daemon.runtime().await;
    let pod = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: "stats-pod".into(),
            uid: "uid-stats-pod".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: dirs.path("logs").display().to_string(),
        linux: Some(v1::LinuxPodSandboxConfig {
            security_context: Some(v1::LinuxSandboxSecurityContext {
                // The host's network: no CNI needed.
                namespace_options: Some(v1::NamespaceOption {
                    network: v1::NamespaceMode::Node as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod_id = rt
        .run_pod_sandbox(v1::RunPodSandboxRequest {
            config: Some(pod.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    // Whatever the assertions do, the pod and its container go again.
    let body = tokio::spawn(stats_body(rt.clone(), pod_id.clone(), pod, bare.clone()));
    let result = body.await;
    let _ = rt
        .remove_pod_sandbox(v1::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        })
        .await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn stats_body(
    mut rt: peapod_cri_proto::v1::runtime_service_client::RuntimeServiceClient<
        tonic::transport::Channel,
    >,
    pod_id: String,
    pod: peapod_cri_proto::v1::PodSandboxConfig,
    endpoint: String,
) {
    use peapod_cri_proto::v1;

    let container_id = rt
        .create_container(v1::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(v1::ContainerConfig {
                metadata: Some(v1::ContainerMetadata {
                    name: "busy".into(),
                    attempt: 0,
                }),
                image: Some(v1::ImageSpec {
                    image: "test.local/stats:busybox".into(),
                    ..Default::default()
                }),
                // Busy for a while, so CPU % has something to show, then idle.
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; exec sleep 1000".into(),
                ],
                log_path: "busy.log".into(),
                ..Default::default()
            }),
            sandbox_config: Some(pod),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    rt.start_container(v1::StartContainerRequest {
        container_id: container_id.clone(),
    })
    .await
    .unwrap();

    let run = |args: &[&str]| {
        let out = peapod(&endpoint, args);
        assert!(out.status.success(), "peapod {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let short = &container_id[..13];

    let table = run(&["stats"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0]
            .split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>(),
        ["CONTAINER", "NAME", "CPU %", "MEM", "DISK", "INODES"],
        "{table}"
    );
    assert_eq!(lines.len(), 2, "{table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..2], [short, "busy"], "{table}");
    let cpu: f64 = row[2].parse().unwrap_or_else(|_| panic!("{table}"));
    assert!(cpu >= 0.0, "{table}");
    assert!(row[3].ends_with('B') && row[3] != "0B", "{table}");
    assert!(row[4].ends_with('B'), "{table}");
    row[5].parse::<u64>().unwrap_or_else(|_| panic!("{table}"));

    // By ID prefix and by pod; JSON is the answer itself.
    let by_id = run(&["stats", &container_id[..6], "-o", "json"]);
    let answer: serde_json::Value = serde_json::from_str(&by_id).unwrap();
    let stats = answer["stats"].as_array().unwrap();
    assert_eq!(stats.len(), 1, "{by_id}");
    assert_eq!(stats[0]["attributes"]["id"], container_id.as_str());
    assert_eq!(stats[0]["attributes"]["metadata"]["name"], "busy");
    assert!(
        stats[0]["cpu"]["usageCoreNanoSeconds"]["value"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(
        stats[0]["memory"]["workingSetBytes"]["value"]
            .as_u64()
            .unwrap()
            > 0
    );
    let by_pod = run(&["stats", "--pod", &pod_id[..8], "-o", "yaml"]);
    assert!(by_pod.contains(&container_id), "{by_pod}");

    let pods = run(&["stats", "--pods"]);
    let lines: Vec<&str> = pods.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["POD", "NAME", "CPU", "%", "MEM"],
        "{pods}"
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..2], [&pod_id[..13], "stats-pod"], "{pods}");
    row[2].parse::<f64>().unwrap_or_else(|_| panic!("{pods}"));
    assert!(row[3].ends_with('B'), "{pods}");
    let answer: serde_json::Value =
        serde_json::from_str(&run(&["stats", "--pods", "-o", "json"])).unwrap();
    assert_eq!(answer["stats"][0]["attributes"]["id"], pod_id.as_str());
    let pod_cpu = &answer["stats"][0]["linux"]["cpu"]["usageCoreNanoSeconds"]["value"];
    assert!(pod_cpu.as_u64().unwrap() > 0, "{answer}");
    assert_eq!(
        answer["stats"][0]["linux"]["containers"][0]["attributes"]["id"],
        container_id.as_str()
    );

    // The bare socket path works for the other commands too.
    assert!(run(&["ps"]).contains(short));
    assert!(run(&["pods"]).contains("stats-pod"));
    assert!(run(&["version"]).contains("peapod"));

    // A stopped container leaves the default view, not -a's.
    run(&["stop", "--timeout", "0", short]);
    assert_eq!(run(&["stats"]).lines().count(), 1);
    assert!(run(&["stats", "-a"]).contains(short));
    let out = peapod(&endpoint, &["stats", "no-such-id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no container matches"),
        "{}",
        stderr(&out)
    );
}
