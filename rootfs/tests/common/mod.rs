//! Test harness: test images built by scripts/make-test-images, a real registry
//! (Debian's docker-registry) on a free loopback port, and skopeo to push.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use peapod_rootfs::{RootfsStore, StoreOptions};

pub const USER: &str = "peapod";
pub const PASSWORD: &str = "s3cret-pass";

/// The images, built once and kept in cargo's per-target temp dir (keyed by the
/// script's content, so an edited script rebuilds them).
pub fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| peapod_tests::test_images(Path::new(env!("CARGO_TARGET_TMPDIR"))))
}

pub fn oci_layout() -> PathBuf {
    images().join("oci")
}

/// A store in a fresh temp dir, ignoring the machine's registries.conf.
pub fn store(dir: &tempfile::TempDir) -> RootfsStore {
    store_with_conf(dir, None)
}

pub fn store_with_conf(dir: &tempfile::TempDir, conf: Option<PathBuf>) -> RootfsStore {
    let options = StoreOptions {
        registries_conf: conf,
        ..Default::default()
    };
    RootfsStore::open_with(dir.path().join("root"), options).unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Registry {
    child: Child,
    pub port: u16,
    pub storage: tempfile::TempDir,
    pub auth: bool,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_inner(false, false)
    }

    pub fn start_with_auth() -> Registry {
        Self::start_inner(true, false)
    }

    /// Serves HTTPS with a self-signed certificate for 127.0.0.1.
    pub fn start_with_tls() -> Registry {
        Self::start_inner(false, true)
    }

    fn start_inner(auth: bool, tls: bool) -> Registry {
        let storage = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.path().display()
        );
        if auth {
            let htpasswd = storage.path().join("htpasswd");
            let status = Command::new("htpasswd")
                .args(["-Bbc", htpasswd.to_str().unwrap(), USER, PASSWORD])
                .stderr(Stdio::null())
                .status()
                .expect("run htpasswd");
            assert!(status.success());
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: peapod-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        if tls {
            let (cert, key) = (
                storage.path().join("cert.pem"),
                storage.path().join("key.pem"),
            );
            let status = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=127.0.0.1",
                ])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .stderr(Stdio::null())
                .status()
                .expect("run openssl");
            assert!(status.success());
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        let config_path = storage.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            port,
            storage,
            auth,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes `tag` of the test layout as `repo:repo_tag`.
    pub fn push(&self, tag: &str, repo: &str, repo_tag: &str) {
        let src = format!("oci:{}:{tag}", oci_layout().display());
        let dest = format!("docker://{}/{repo}:{repo_tag}", self.host());
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if self.auth {
            cmd.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        let out = cmd.arg(&src).arg(&dest).output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {src} {dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Overwrites the stored bytes of a blob, as a broken or malicious registry would.
    pub fn corrupt_blob(&self, hex: &str) {
        let path = self.storage.path().join(format!(
            "data/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ));
        let mut data = std::fs::read(&path).expect("blob in registry storage");
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
        std::fs::write(&path, data).unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Digest hex of the manifest, config and layers of `tag` in the test layout.
pub fn layout_manifest(tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(oci_layout().join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    entry
}

pub fn blob_json(digest: &str) -> serde_json::Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(oci_layout().join("blobs/sha256").join(hex)).unwrap())
        .unwrap()
}

/// A mount point that is unmounted (lazily) and removed when dropped.
pub struct MountDir(pub tempfile::TempDir);

impl MountDir {
    pub fn new() -> MountDir {
        MountDir(tempfile::tempdir().unwrap())
    }
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A TCP proxy that forwards to `target` and cuts every connection once it has
/// relayed `limit` bytes back to the client: an interrupted download.
pub fn cutting_proxy(target: u16, limit: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            std::thread::spawn(move || {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    return;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                });
                let (mut s_read, mut c_write) = (server, client);
                let mut sent = 0usize;
                let mut buf = [0u8; 16384];
                loop {
                    let n = match s_read.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = n.min(limit - sent);
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    sent += n;
                    if sent >= limit {
                        break;
                    }
                }
                let _ = c_write.shutdown(std::net::Shutdown::Both);
                let _ = s_read.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    port
}
