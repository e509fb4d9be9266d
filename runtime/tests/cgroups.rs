//! Real cgroups on the host (run as root). Each test uses its own cgroup path, so the
//! tests run in parallel, and every cgroup and child process is cleaned up on drop.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};
use peapod_runtime::cgroups::{version, Cgroup, CgroupVersion};

/// A generous bound for things that happen "soon"; tests poll, they never sleep-then-assert.
const PATIENCE: Duration = Duration::from_secs(60);

/// A cgroup removed at the end of the test, even if the test fails.
struct TestCgroup(Cgroup);

impl TestCgroup {
    fn new(name: &str) -> Self {
        let path = format!("/peapod-test-{}-{name}", std::process::id());
        let cgroup = Cgroup::new(&path).unwrap();
        cgroup.create().unwrap();
        TestCgroup(cgroup)
    }

    /// The cgroup's directory for a v1 controller (or the unified directory on v2).
    fn dir(&self, v1_controller: &str) -> PathBuf {
        let hierarchy = Cgroup::hierarchies()
            .unwrap()
            .into_iter()
            .find(|h| h.fstype == "cgroup2" || h.options.split(',').any(|o| o == v1_controller))
            .unwrap();
        hierarchy
            .mountpoint
            .join(self.0.path().trim_start_matches('/'))
    }

    fn read(&self, v1_controller: &str, file: &str) -> String {
        std::fs::read_to_string(self.dir(v1_controller).join(file))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.0.delete();
    }
}

/// A child process killed and reaped at the end of the test.
struct TestChild(Child);

impl TestChild {
    fn spawn(script: &str) -> Self {
        TestChild(
            Command::new("sh")
                .arg("-c")
                .arg(script)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Lets a child blocked in `read go` continue.
    fn go(&mut self) {
        self.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }

    fn state(&self) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // The state follows the command name, which is in parentheses.
        stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
    }
}

impl Drop for TestChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn poll_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn memory_limits(limit: i64) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                // memory+swap = memory: no swapping, the OOM killer must act.
                .swap(limit)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

#[test]
fn version_matches_the_host() {
    let hierarchies = Cgroup::hierarchies().unwrap();
    assert!(!hierarchies.is_empty());
    match version() {
        CgroupVersion::V2 => {
            assert_eq!(hierarchies.len(), 1);
            assert_eq!(hierarchies[0].mountpoint, Path::new("/sys/fs/cgroup"));
        }
        CgroupVersion::V1 => {
            assert!(hierarchies.iter().all(|h| h.fstype == "cgroup"));
            assert!(hierarchies
                .iter()
                .any(|h| h.options.split(',').any(|o| o == "memory")));
        }
    }
}

#[test]
fn limits_are_written_to_the_files() {
    let cg = TestCgroup::new("limits");
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(20_000i64)
                .period(100_000u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64i64 << 20)
                .swap(64i64 << 20)
                .reservation(32i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(50i64).build().unwrap())
        .build()
        .unwrap();
    cg.0.apply(&resources).unwrap();
    // `update` with the same values must work too.
    cg.0.apply(&resources).unwrap();

    let mib64 = (64u64 << 20).to_string();
    match version() {
        CgroupVersion::V1 => {
            assert_eq!(cg.read("cpu", "cpu.shares"), "512");
            assert_eq!(cg.read("cpu", "cpu.cfs_quota_us"), "20000");
            assert_eq!(cg.read("cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(cg.read("memory", "memory.limit_in_bytes"), mib64);
            assert_eq!(
                cg.read("memory", "memory.soft_limit_in_bytes"),
                (32u64 << 20).to_string()
            );
            if cg
                .dir("memory")
                .join("memory.memsw.limit_in_bytes")
                .exists()
            {
                assert_eq!(cg.read("memory", "memory.memsw.limit_in_bytes"), mib64);
            }
        }
        CgroupVersion::V2 => {
            assert_eq!(cg.read("cpu", "cpu.weight"), "20");
            assert_eq!(cg.read("cpu", "cpu.max"), "20000 100000");
            assert_eq!(cg.read("memory", "memory.max"), mib64);
            assert_eq!(cg.read("memory", "memory.low"), (32u64 << 20).to_string());
        }
    }
    assert_eq!(cg.read("pids", "pids.max"), "50");
    assert_eq!(cg.read("cpuset", "cpuset.cpus"), "0");
    assert_eq!(cg.read("cpuset", "cpuset.mems"), "0");

    // Raising the limits (memory before memory+swap on v1) works as an update.
    cg.0.apply(&memory_limits(128 << 20)).unwrap();
    let file = if version() == CgroupVersion::V1 {
        "memory.limit_in_bytes"
    } else {
        "memory.max"
    };
    assert_eq!(cg.read("memory", file), (128u64 << 20).to_string());

    // Lifting the pids limit.
    let unlimited = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(-1i64).build().unwrap())
        .build()
        .unwrap();
    cg.0.apply(&unlimited).unwrap();
    assert_eq!(cg.read("pids", "pids.max"), "max");
}

#[test]
fn processes_join_and_are_listed() {
    let cg = TestCgroup::new("procs");
    let child = TestChild::spawn("exec sleep 1000");
    cg.0.add_process(child.pid()).unwrap();
    assert_eq!(cg.0.procs().unwrap(), vec![child.pid()]);
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid())).unwrap();
    assert!(own.contains(cg.0.path()), "{own}");
    drop(child);
}

#[test]
fn freeze_and_thaw() {
    let cg = TestCgroup::new("freezer");
    let child = TestChild::spawn("while :; do :; done");
    cg.0.add_process(child.pid()).unwrap();
    assert!(!cg.0.is_frozen().unwrap());

    cg.0.freeze().unwrap();
    assert!(cg.0.is_frozen().unwrap());
    // A frozen busy loop is no longer runnable.
    assert_ne!(child.state(), 'R');

    cg.0.thaw().unwrap();
    assert!(!cg.0.is_frozen().unwrap());
    poll_until("the thawed loop to run", || child.state() == 'R');
    drop(child);
}

#[test]
fn stats_of_a_busy_process() {
    let cg = TestCgroup::new("stats");
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(256i64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(20i64).build().unwrap())
        .build()
        .unwrap();
    cg.0.apply(&resources).unwrap();
    // Memory is charged where it is allocated, so allocate after joining.
    let mut child = TestChild::spawn(
        "read go; x=$(head -c 4000000 /dev/zero | tr '\\0' a); while :; do :; done",
    );
    cg.0.add_process(child.pid()).unwrap();
    child.go();

    poll_until("CPU and memory usage to be counted", || {
        let stats = cg.0.stats().unwrap();
        stats.cpu_usage_ns > 0
            && stats.cpu_user_ns + stats.cpu_system_ns > 0
            && stats.memory_usage_bytes > 0
    });
    let stats = cg.0.stats().unwrap();
    assert!(stats.memory_usage_bytes > 0, "{stats:?}");
    assert!(stats.memory_working_set_bytes <= stats.memory_usage_bytes);
    assert_eq!(stats.memory_limit_bytes, Some(256 << 20));
    assert!(
        stats.memory_max_usage_bytes >= stats.memory_usage_bytes || version() == CgroupVersion::V2
    );
    assert!(stats.pids_current >= 1);
    assert_eq!(stats.pids_limit, Some(20));
    assert_eq!(stats.oom_kills, 0);
    drop(child);
}

#[test]
fn memory_hog_is_oom_killed() {
    let cg = TestCgroup::new("oom");
    cg.0.apply(&memory_limits(32 << 20)).unwrap();
    // The shell keeps the 256 MiB command substitution in its own memory.
    let mut child =
        TestChild::spawn("read go; x=$(head -c 268435456 /dev/zero | tr '\\0' a); echo survived");
    cg.0.add_process(child.pid()).unwrap();
    child.go();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "the hog survived: {status:?}");
    assert!(cg.0.oom_kills().unwrap() >= 1);
    assert!(cg.0.stats().unwrap().oom_kills >= 1);
    drop(child);
}

#[test]
fn delete_kills_what_is_left_and_is_idempotent() {
    let cg = TestCgroup::new("delete");
    // v2 allows processes only in leaves, so both go into sub-cgroups.
    let deep = Cgroup::new(&format!("{}/pod/ctr", cg.0.path())).unwrap();
    let shallow = Cgroup::new(&format!("{}/other", cg.0.path())).unwrap();
    let mut children = Vec::new();
    for cgroup in [&deep, &shallow] {
        cgroup.create().unwrap();
        let child = TestChild::spawn("exec sleep 1000");
        cgroup.add_process(child.pid()).unwrap();
        children.push(child);
    }
    assert_eq!(cg.0.procs().unwrap().len(), 2);

    cg.0.delete().unwrap();
    for h in Cgroup::hierarchies().unwrap() {
        let dir = h.mountpoint.join(cg.0.path().trim_start_matches('/'));
        assert!(!dir.exists(), "{} still exists", dir.display());
    }
    for child in &mut children {
        let status = child.0.wait().unwrap();
        assert!(!status.success());
    }
    cg.0.delete().unwrap();
    assert!(cg.0.procs().unwrap().is_empty());
}

#[test]
fn delete_of_a_frozen_cgroup() {
    let cg = TestCgroup::new("frozen-delete");
    let mut child = TestChild::spawn("exec sleep 1000");
    cg.0.add_process(child.pid()).unwrap();
    cg.0.freeze().unwrap();
    cg.0.delete().unwrap();
    assert!(!child.0.wait().unwrap().success());
}

#[test]
fn unified_is_rejected_on_v1() {
    if version() != CgroupVersion::V1 {
        return;
    }
    let cg = TestCgroup::new("unified");
    let resources = LinuxResourcesBuilder::default()
        .unified(HashMap::from([(
            "memory.high".to_string(),
            "1000000".to_string(),
        )]))
        .build()
        .unwrap();
    let err = cg.0.apply(&resources).unwrap_err();
    assert!(err.to_string().contains("unified"), "{err}");
}

#[test]
fn invalid_paths_are_refused() {
    assert!(Cgroup::new("/../etc").is_err());
    assert!(Cgroup::new("/").is_err());
}
