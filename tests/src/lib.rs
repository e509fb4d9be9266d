//! Shared helpers for peapod's end-to-end tests: busybox bundles, unique names, and the paths of
//! the binaries under test.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{json, Value};

pub mod registry;

/// The workspace root (tests run with the package directory as cwd).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A name no other test in this run (or a concurrent run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// An OCI bundle with a busybox root filesystem in a temporary directory.
pub struct Bundle {
    dir: tempfile::TempDir,
    pub config: Value,
}

impl Bundle {
    /// A bundle that runs `args` with runc's default isolation (new pid, net, ipc, uts, mount and
    /// cgroup namespaces, the usual mounts, masked and read-only paths) but no terminal.
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("peapod-bundle-")
            .tempdir()
            .expect("tempdir");
        let status = Command::new(workspace_root().join("scripts/mk-busybox-rootfs"))
            .arg(dir.path().join("rootfs"))
            .status()
            .expect("running scripts/mk-busybox-rootfs");
        assert!(status.success(), "mk-busybox-rootfs failed");
        Bundle {
            dir,
            config: default_config(args),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// Write config.json (call after editing `config`).
    pub fn write(&self) -> &Self {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&self.config).unwrap(),
        )
        .expect("writing config.json");
        self
    }
}

/// The default capability set of runc and containerd.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub fn default_config(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"],
            "cwd": "/",
            "capabilities": {
                "bounding": DEFAULT_CAPS, "effective": DEFAULT_CAPS, "permitted": DEFAULT_CAPS
            },
            "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "peapod-test",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Mount points of the host (this test's mount namespace), for leak checks.
pub fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// A binary of the workspace (`peapod-runtime`, `peapod-shim`, `peapodd`…) from the target
/// directory the running test was built into. `scripts/test` builds every binary first; a test
/// of another package cannot use `CARGO_BIN_EXE_*`, which only names the package's own.
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// Cargo's temporary directory for tests (`CARGO_TARGET_TMPDIR`), found from the running test's
/// own path (target/<profile>/deps/<test>), so that library code shared by tests finds it too.
pub fn target_tmp_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors()
        .nth(3)
        .expect("a target directory")
        .join("tmp")
}

/// The test images of `scripts/make-test-images` (busybox, multi-layer, multi-platform…), built
/// once per version of the script under `cache` (a test's `CARGO_TARGET_TMPDIR`) and shared by
/// every test binary after that. Returns the directory holding `oci/`, `oci.tar` and
/// `docker-archive.tar`.
pub fn test_images(cache: &Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let script = workspace_root().join("scripts/make-test-images");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(&script)
        .expect("reading make-test-images")
        .hash(&mut hasher);
    let dir = cache.join(format!("test-images-{:016x}", hasher.finish()));
    if dir.join("oci.tar").exists() {
        return dir;
    }
    // Built aside and renamed, so parallel test binaries never see half a build.
    let tmp = dir.with_extension(format!("tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let status = Command::new("python3")
        .arg(&script)
        .arg(&tmp)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running make-test-images");
    assert!(status.success(), "make-test-images failed");
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another test binary won the race; its build is as good as ours.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}
