//! Driving the `peapod-runtime` binary from tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use peapod_tests::{unique, Bundle};

/// A private state root, so tests never see each other's containers.
pub struct Runtime {
    pub root: tempfile::TempDir,
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}

impl Runtime {
    pub fn new() -> Runtime {
        Runtime {
            root: tempfile::Builder::new()
                .prefix("peapod-root-")
                .tempdir()
                .unwrap(),
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_peapod-runtime"));
        cmd.arg("--root").arg(self.root.path());
        cmd
    }

    /// Output goes through files, not pipes: the init of a created container inherits the
    /// runtime's stdout and stderr and keeps them open, so a pipe would never reach EOF.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = tempfile::tempfile().unwrap();
        let err = tempfile::tempfile().unwrap();
        let status = self
            .command()
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(err.try_clone().unwrap())
            .status()
            .expect("running peapod-runtime");
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = Vec::new();
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut v).unwrap();
            v
        };
        Output {
            status,
            stdout: read(out),
            stderr: read(err),
        }
    }

    /// Run and insist on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "peapod-runtime {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `run` a bundle to completion; returns (exit code, stdout, stderr).
    pub fn run_bundle(&self, bundle: &Bundle) -> (i32, String, String) {
        bundle.write();
        let id = unique("run");
        let out = self.run(&["run", "--bundle", bundle.path().to_str().unwrap(), &id]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }

    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn wait_status(&self, id: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.run(&["state", id]);
            let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if state["status"] == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} never became {want}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.path())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

/// Every directory a container's cgroup could occupy, on v1 or v2.
pub fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let dir = e.path().join("peapod").join(id);
            if dir.exists() {
                found.push(dir);
            }
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/peapod").join(id);
    if v2.exists() {
        found.push(v2);
    }
    found
}
