//! The OCI lifecycle through the runc-compatible CLI: create, start, state, kill, delete, run,
//! exec, pause/resume, update — and what bad input must (not) leave behind.
mod common;

use common::{cgroup_dirs, unique, Bundle, Runtime};

#[test]
fn create_start_kill_delete() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    bundle.write();
    let id = unique("life");
    let pid_file = bundle.path().join("pid");
    rt.ok(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);

    let state = rt.state(&id);
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["bundle"], bundle.path().to_str().unwrap());
    assert!(state["ociVersion"].is_string());
    let pid = state["pid"].as_i64().unwrap();
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), pid.to_string());
    // Still held before exec: the init is not yet running `sleep`.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_ne!(comm.trim(), "sleep");
    assert!(
        !cgroup_dirs(&id).is_empty(),
        "the container's cgroup exists"
    );

    rt.ok(&["start", &id]);
    assert_eq!(rt.status(&id), "running");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "sleep");

    // A second start is refused.
    assert!(!rt.run(&["start", &id]).status.success());
    // A running container is not deleted without --force.
    let out = rt.run(&["delete", &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("running"));

    let list = rt.ok(&["list", "--format", "json"]);
    assert!(list.contains(&id));

    rt.ok(&["kill", &id, "KILL"]);
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
    assert!(
        rt.entries().is_empty(),
        "state left behind: {:?}",
        rt.entries()
    );
    assert!(
        cgroup_dirs(&id).is_empty(),
        "cgroup left behind: {:?}",
        cgroup_dirs(&id)
    );
    assert!(!rt.run(&["state", &id]).status.success());
}

#[test]
fn run_propagates_exit_codes_and_signals() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 42"]);
    let (code, out, err) = rt.run_bundle(&bundle);
    assert_eq!(code, 42, "stderr: {err}");
    assert_eq!(out, "out\n");
    assert_eq!(err, "err\n");
    assert!(
        rt.entries().is_empty(),
        "run removes the container after it exits"
    );

    // A container killed by a signal: `run` exits with 128 + signal, like a shell.
    let bundle = Bundle::new(&["sleep", "1000"]);
    bundle.write();
    let id = unique("sig");
    let mut child = rt
        .command()
        .args(["run", "--bundle", bundle.path().to_str().unwrap(), &id])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    rt.wait_status(&id, "running");
    rt.ok(&["kill", &id, "9"]);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(137));
}

#[test]
fn exec_joins_the_container() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    bundle.write();
    let id = unique("exec");
    rt.ok(&[
        "run",
        "--detach",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    let pid = rt.state(&id)["pid"].as_i64().unwrap();

    let out = rt.ok(&["exec", &id, "sh", "-c", "hostname; cat /proc/1/comm; for ns in net ipc uts mnt; do readlink /proc/self/ns/$ns; done"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "peapod-test");
    assert_eq!(lines[1], "sleep", "exec sees the container's PID 1");
    for (line, ns) in lines[2..].iter().zip(["net", "ipc", "uts", "mnt"]) {
        let host_view = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_eq!(*line, host_view.to_str().unwrap(), "{ns} namespace");
    }
    // The exec'd process is in the container's cgroup, and its exit code comes back.
    let out = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "cat /proc/self/cgroup | grep -c . ; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    let out = rt.run(&["exec", &id, "no-such-program"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --user and --env
    let out = rt.ok(&[
        "exec",
        "--user",
        "1000:1001",
        "--env",
        "GREETING=hi",
        &id,
        "sh",
        "-c",
        "echo $(id -u):$(id -g):$GREETING",
    ]);
    assert_eq!(out.trim(), "1000:1001:hi");
    rt.ok(&["delete", "--force", &id]);
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn pause_resume_update_ps_stats() {
    let rt = Runtime::new();
    let bundle = Bundle::new(&["sleep", "1000"]);
    bundle.write();
    let id = unique("pause");
    rt.ok(&[
        "run",
        "--detach",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "running");

    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let ps: Vec<i64> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(ps, vec![pid]);

    let resources = rt.root.path().join("res.json");
    std::fs::write(
        &resources,
        r#"{"memory": {"limit": 67108864}, "pids": {"limit": 33}}"#,
    )
    .unwrap();
    rt.ok(&["update", "--resources", resources.to_str().unwrap(), &id]);
    let stats: serde_json::Value =
        serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(stats["data"]["memory_limit_bytes"], 67108864);
    assert_eq!(stats["data"]["pids_limit"], 33);
    assert_eq!(stats["data"]["pids_current"], 1);
    rt.ok(&["delete", "--force", &id]);
}

#[test]
fn bad_input_fails_clearly_and_leaves_nothing() {
    let rt = Runtime::new();

    // Invalid config.json
    let bundle = Bundle::new(&["true"]);
    std::fs::write(bundle.path().join("config.json"), "{ not json").unwrap();
    let id = unique("bad");
    let out = rt.run(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a valid OCI spec"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Missing rootfs
    let mut bundle = Bundle::new(&["true"]);
    bundle.config["root"]["path"] = "no-such-rootfs".into();
    bundle.write();
    let out = rt.run(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("root filesystem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A namespace path that is not a namespace
    let mut bundle = Bundle::new(&["true"]);
    bundle.config["linux"]["namespaces"][1] =
        serde_json::json!({"type": "network", "path": "/etc/hostname"});
    bundle.write();
    let out = rt.run(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a namespace file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A program that does not exist: found out during create, not after start.
    let bundle = Bundle::new(&["/no/such/program"]);
    bundle.write();
    let out = rt.run(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such/program"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An invalid id
    let out = rt.run(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "../escape",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid container id"));

    assert!(
        rt.entries().is_empty(),
        "state left behind: {:?}",
        rt.entries()
    );
    assert!(cgroup_dirs(&id).is_empty(), "cgroup left behind");
    assert!(
        !peapod_tests::host_mounts().contains("peapod-bundle-"),
        "mounts leaked"
    );

    // Duplicate id: refused, and the first container is untouched.
    let bundle = Bundle::new(&["sleep", "1000"]);
    bundle.write();
    rt.ok(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let out = rt.run(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(rt.status(&id), "created");

    // Unknown signal
    let out = rt.run(&["kill", &id, "SIGNOPE"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown signal"));
    // Unknown container
    let out = rt.run(&["state", "no-such-container"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    rt.ok(&["delete", "--force", &id]);
    assert!(rt.entries().is_empty());
    assert!(cgroup_dirs(&id).is_empty());
}

#[test]
fn terminal_goes_to_the_console_socket() {
    use std::io::Read;
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["sh", "-c", "tty; stty size; echo hello-tty"]);
    bundle.config["process"]["terminal"] = true.into();
    bundle.config["process"]["consoleSize"] = serde_json::json!({"height": 40, "width": 100});
    bundle.write();
    let socket = bundle.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let id = unique("tty");
    rt.ok(&[
        "create",
        "--bundle",
        bundle.path().to_str().unwrap(),
        "--console-socket",
        socket.to_str().unwrap(),
        &id,
    ]);
    let (conn, _) = listener.accept().unwrap();
    let master = peapod_runtime::console::recv_fd(&conn).unwrap();
    rt.ok(&["start", &id]);
    let mut output = String::new();
    let mut file = std::fs::File::from(master);
    let mut buf = [0u8; 4096];
    // The master reads EIO once the container's side is closed.
    while let Ok(n) = file.read(&mut buf) {
        if n == 0 {
            break;
        }
        output.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(output.contains("/dev/pts/0"), "{output}");
    assert!(output.contains("40 100"), "{output}");
    assert!(output.contains("hello-tty"), "{output}");
    rt.wait_status(&id, "stopped");
    rt.ok(&["delete", &id]);
}

#[test]
fn hooks_run_with_the_state_on_stdin() {
    let rt = Runtime::new();
    let mut bundle = Bundle::new(&["sleep", "1000"]);
    let out = bundle.path().join("hooks");
    std::fs::create_dir(&out).unwrap();
    let hook = |name: &str| {
        let file = out.join(name);
        serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", file.display())], "env": ["PATH=/usr/bin:/bin"], "timeout": 5})
    };
    bundle.config["hooks"] = serde_json::json!({
        "createRuntime": [hook("createRuntime")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    bundle.write();
    let id = unique("hooks");
    rt.ok(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let pid = rt.state(&id)["pid"].clone();
    let created: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("createRuntime")).unwrap()).unwrap();
    assert_eq!(created["id"], id.as_str());
    assert_eq!(created["pid"], pid);
    assert_eq!(created["status"], "creating");
    rt.ok(&["start", &id]);
    let started: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("poststart")).unwrap()).unwrap();
    assert_eq!(started["status"], "running");
    rt.ok(&["delete", "--force", &id]);
    let stopped: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("poststop")).unwrap()).unwrap();
    assert_eq!(stopped["id"], id.as_str());

    // A failing createRuntime hook fails create, and nothing is left.
    bundle.config["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/false"}]});
    bundle.write();
    let out = rt.run(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("createRuntime hook /bin/false"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rt.entries().is_empty());
    assert!(cgroup_dirs(&id).is_empty());

    // One that outlives its timeout is killed, and create fails the same way.
    bundle.config["hooks"] = serde_json::json!({"createRuntime": [
        {"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}
    ]});
    bundle.write();
    let out = rt.run(&["create", "--bundle", bundle.path().to_str().unwrap(), &id]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("timed out after 1s"), "{stderr}");
    assert!(rt.entries().is_empty());
    assert!(cgroup_dirs(&id).is_empty());
}
