//! What a container can see and do, asserted from inside it: the isolation the spec asks for
//! really holds, and the limits really bite.
mod common;

use common::{Bundle, Runtime};
use serde_json::json;

fn run_sh(script: &str, edit: impl FnOnce(&mut serde_json::Value)) -> (i32, String, String) {
    let mut bundle = Bundle::new(&["sh", "-c", script]);
    edit(&mut bundle.config);
    Runtime::new().run_bundle(&bundle)
}

#[test]
fn own_pid_uts_net_ipc_namespaces() {
    let script = "echo $$; hostname; ls /sys/class/net; readlink /proc/self/ns/ipc; readlink /proc/self/ns/net";
    let (code, out, err) = run_sh(script, |_| {});
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1", "the container's process is PID 1");
    assert_eq!(lines[1], "peapod-test");
    assert_eq!(lines[2], "lo", "a new network namespace has only lo");
    assert_eq!(lines.len(), 5, "{out}");
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(lines[3], host_ipc.to_str().unwrap());
    assert_ne!(lines[4], host_net.to_str().unwrap());
}

#[test]
fn joins_a_namespace_by_path() {
    // The host's network namespace, joined by path: the container sees the host's interfaces.
    let ours = format!("/proc/{}/ns/net", std::process::id());
    let (code, out, err) = run_sh("readlink /proc/self/ns/net", |c| {
        c["linux"]["namespaces"][1] = json!({"type": "network", "path": ours});
    });
    assert_eq!(code, 0, "{err}");
    let host_net = std::fs::read_link(&ours).unwrap();
    assert_eq!(out.trim(), host_net.to_str().unwrap());
}

#[test]
fn mounts_made_inside_stay_inside() {
    let (code, out, err) = run_sh("mkdir -p /mnt/peapod-inner && mount -t tmpfs none /mnt/peapod-inner && grep -c /mnt/peapod-inner /proc/self/mounts", |c| {
        c["process"]["capabilities"]["effective"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into());
        c["process"]["capabilities"]["permitted"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into());
        c["process"]["capabilities"]["bounding"].as_array_mut().unwrap().push("CAP_SYS_ADMIN".into());
    });
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1");
    assert!(
        !peapod_tests::host_mounts().contains("/mnt/peapod-inner"),
        "the container's mount leaked to the host"
    );
}

#[test]
fn readonly_rootfs_refuses_writes() {
    let (code, _, err) = run_sh("touch /newfile", |c| c["root"]["readonly"] = true.into());
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    // ...while the tmpfs mounts on top stay writable.
    let (code, _, err) = run_sh("touch /dev/shm/ok", |c| c["root"]["readonly"] = true.into());
    assert_eq!(code, 0, "{err}");
}

#[test]
fn masked_and_readonly_paths() {
    let script = "wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l; echo 1 > /proc/sys/kernel/ns_last_pid && echo writable";
    let (_, out, err) = run_sh(script, |_| {});
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["0", "0", "0"],
        "masked paths read empty: {out} {err}"
    );
    assert!(!out.contains("writable"), "/proc/sys is read-only");
    assert!(err.contains("Read-only file system"), "{err}");
    // The host's files really have content: the masks, not the kernel, made them empty.
    assert!(std::fs::read_to_string("/proc/timer_list")
        .map(|t| !t.is_empty())
        .unwrap_or(true));
}

/// The bit of each default capability, as in linux/capability.h.
fn cap_bit(name: &str) -> u32 {
    match name {
        "CAP_CHOWN" => 0,
        "CAP_DAC_OVERRIDE" => 1,
        "CAP_FOWNER" => 3,
        "CAP_FSETID" => 4,
        "CAP_KILL" => 5,
        "CAP_SETGID" => 6,
        "CAP_SETUID" => 7,
        "CAP_SETPCAP" => 8,
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_CHROOT" => 18,
        "CAP_MKNOD" => 27,
        "CAP_AUDIT_WRITE" => 29,
        "CAP_SETFCAP" => 31,
        other => panic!("unexpected capability {other}"),
    }
}

fn cap_sets(out: &str) -> impl Fn(&str) -> u64 + '_ {
    move |name: &str| {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    }
}

fn mask(names: &[&str]) -> u64 {
    names.iter().fold(0u64, |m, n| m | 1 << cap_bit(n))
}

const SHOW_CAPS: &str = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status";

#[test]
fn capabilities_match_the_spec() {
    // As root, execve makes the effective set equal to the permitted one (the kernel's rule for
    // uid 0); no_new_privs keeps the permitted set from growing back to the bounding set.
    let (code, out, err) = run_sh(SHOW_CAPS, |c| {
        c["process"]["capabilities"]["effective"] = json!(["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"]);
        c["process"]["capabilities"]["permitted"] = json!(["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"]);
    });
    assert_eq!(code, 0, "{err}");
    let field = cap_sets(&out);
    assert_eq!(
        field("CapEff"),
        mask(&["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"])
    );
    assert_eq!(
        field("CapPrm"),
        mask(&["CAP_CHOWN", "CAP_KILL", "CAP_SETUID"])
    );
    assert_eq!(field("CapBnd"), mask(&peapod_tests::DEFAULT_CAPS));
    assert_eq!(field("CapInh"), 0);
    assert_eq!(field("CapAmb"), 0);

    // A non-root user keeps across execve only its ambient capabilities.
    let (code, out, err) = run_sh(SHOW_CAPS, |c| {
        c["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        c["process"]["capabilities"]["inheritable"] = json!(["CAP_NET_BIND_SERVICE"]);
        c["process"]["capabilities"]["ambient"] = json!(["CAP_NET_BIND_SERVICE"]);
    });
    assert_eq!(code, 0, "{err}");
    let field = cap_sets(&out);
    assert_eq!(field("CapEff"), mask(&["CAP_NET_BIND_SERVICE"]));
    assert_eq!(field("CapAmb"), mask(&["CAP_NET_BIND_SERVICE"]));
    assert_eq!(field("CapBnd"), mask(&peapod_tests::DEFAULT_CAPS));
}

#[test]
fn user_group_and_supplementary_groups() {
    let (code, out, err) = run_sh(
        "grep -E '^(Uid|Gid|Groups)' /proc/self/status; umask",
        |c| {
            c["process"]["user"] =
                json!({"uid": 1000, "gid": 2000, "additionalGids": [3000, 3001], "umask": 63});
        },
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Uid:\t1000\t1000\t1000\t1000"), "{out}");
    assert!(out.contains("Gid:\t2000\t2000\t2000\t2000"), "{out}");
    assert!(out.contains("Groups:\t3000 3001"), "{out}");
    assert!(out.contains("0077"), "umask 63 = 0077: {out}");
}

#[test]
fn rlimits_are_applied() {
    let (code, out, err) = run_sh("ulimit -n; grep 'Max open files' /proc/self/limits", |c| {
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]);
    });
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("123\n"), "{out}");
    assert!(out.contains("123                  456"), "{out}");
}

#[test]
fn seccomp_denies_a_blocked_syscall() {
    let (code, out, err) = run_sh("mkdir /tmp/blocked && echo made; echo after", |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
    });
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "after\n", "mkdir was refused");
    assert!(err.contains("Operation not permitted"), "{err}");
}

#[test]
fn memory_limit_oom_kills_and_is_reported() {
    let rt = Runtime::new();
    // `tail` buffers /dev/zero looking for a newline that never comes: memory grows without bound.
    let mut bundle = Bundle::new(&["sh", "-c", "tail /dev/zero; echo survived"]);
    bundle.config["linux"]["resources"] = json!({"memory": {"limit": 33554432, "swap": 33554432}});
    bundle.write();
    let id = common::unique("oom");
    let out = rt.run(&[
        "run",
        "--keep",
        "--bundle",
        bundle.path().to_str().unwrap(),
        &id,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "survived\n",
        "sh survives; its child tail was killed"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert!(stats["data"]["oom_kills"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["data"]["memory_limit_bytes"], 33554432);
    rt.ok(&["delete", &id]);

    // When the init itself is the victim, `run` reports SIGKILL's 137.
    let mut bundle = Bundle::new(&["tail", "/dev/zero"]);
    bundle.config["linux"]["resources"] = json!({"memory": {"limit": 33554432, "swap": 33554432}});
    let (code, _, _) = rt.run_bundle(&bundle);
    assert_eq!(code, 137);
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let script = "i=0; while [ $i -lt 64 ]; do sleep 30 & i=$((i+1)); done; echo done";
    let (_, out, err) = run_sh(script, |c| {
        c["linux"]["resources"] = json!({"pids": {"limit": 16}});
    });
    assert!(
        err.contains("can't fork") || err.contains("Resource temporarily unavailable"),
        "stderr: {err} stdout: {out}"
    );
}

#[test]
fn environment_cwd_and_hostname() {
    let (code, out, err) = run_sh("pwd; echo $FOO", |c| {
        c["process"]["cwd"] = "/tmp".into();
        c["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push("FOO=bar baz".into());
    });
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "/tmp\nbar baz\n");
}

#[test]
fn signals_start_at_their_defaults() {
    // Nothing the runtime ignored or blocked leaks into the container (Rust ignores SIGPIPE).
    let bundle = Bundle::new(&["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]);
    let (code, out, err) = Runtime::new().run_bundle(&bundle);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
    );
}
