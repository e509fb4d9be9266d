//! Debian's docker-registry on a free loopback port (plain HTTP, htpasswd auth or TLS), and
//! skopeo to push the test images into it. The process is stopped (by PID) when the
//! [`Registry`] is dropped, also when a test fails.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The account of registries started with [`Registry::start_with_auth`].
pub const USER: &str = "peapod";
pub const PASSWORD: &str = "s3cret-pass";

/// How long a registry may take to start; only a guard against hanging forever.
const START_LIMIT: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Registry {
    _process: KillOnDrop,
    pub port: u16,
    pub auth: bool,
    pub storage: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        Self::start_inner(false, false)
    }

    /// Requires [`USER`] and [`PASSWORD`] (htpasswd) for every request.
    pub fn start_with_auth() -> Registry {
        Self::start_inner(true, false)
    }

    /// Serves HTTPS with a self-signed certificate for 127.0.0.1.
    pub fn start_with_tls() -> Registry {
        Self::start_inner(false, true)
    }

    fn start_inner(auth: bool, tls: bool) -> Registry {
        let storage = tempfile::tempdir().unwrap();
        // `tls:` belongs to the `http:` section, which the config below ends with.
        let mut extra = String::new();
        if tls {
            extra.push_str(&tls_config(&storage));
        }
        if auth {
            extra.push_str(&htpasswd_config(&storage));
        }
        // A free port can be taken again before docker-registry binds it (by a parallel
        // test's registry, say): each registry sends its own token in a header, so we know
        // the one answering is ours, or try another port.
        let token = crate::unique("registry");
        for _ in 0..10 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}/data\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  headers:\n    X-Peapod-Test: [{token}]\n{extra}",
                storage.path().display()
            );
            let config_path = storage.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start docker-registry");
            // Owned before waiting, so a failed start still stops the process.
            let mut process = KillOnDrop(child);
            if serves(&mut process.0, port, &token, tls) {
                return Registry {
                    _process: process,
                    port,
                    auth,
                    storage,
                };
            }
        }
        panic!("docker-registry did not start on any of 10 ports");
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes the test images' `tag` (scripts/make-test-images) as `repo:repo_tag`; returns
    /// the reference.
    pub fn push(&self, tag: &str, repo: &str, repo_tag: &str) -> String {
        let layout = crate::test_images(&crate::target_tmp_dir()).join("oci");
        let src = format!("oci:{}:{tag}", layout.display());
        let reference = format!("{}/{repo}:{repo_tag}", self.host());
        let mut skopeo = Command::new("skopeo");
        skopeo.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if self.auth {
            skopeo.arg(format!("--dest-creds={USER}:{PASSWORD}"));
        }
        let out = skopeo
            .arg(&src)
            .arg(format!("docker://{reference}"))
            .output()
            .expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy {src} {reference}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        reference
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

/// Waits until `child` answers on `port` with `token` in its headers; false if it exited or
/// another server answers there. A TLS registry is only checked for listening.
fn serves(child: &mut Child, port: u16, token: &str, tls: bool) -> bool {
    let deadline = Instant::now() + START_LIMIT;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            if tls {
                return true;
            }
            let mut answer = String::new();
            let asked = stream
                .write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .and_then(|_| stream.read_to_string(&mut answer));
            if asked.is_ok() && !answer.is_empty() {
                return answer.contains(token);
            }
        }
        assert!(Instant::now() < deadline, "registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (by PID) and reaped when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn htpasswd_config(storage: &tempfile::TempDir) -> String {
    let htpasswd = storage.path().join("htpasswd");
    let status = Command::new("htpasswd")
        .arg("-Bbc")
        .arg(&htpasswd)
        .args([USER, PASSWORD])
        .stderr(Stdio::null())
        .status()
        .expect("run htpasswd");
    assert!(status.success(), "htpasswd failed");
    format!(
        "auth:\n  htpasswd:\n    realm: peapod-test\n    path: {}\n",
        htpasswd.display()
    )
}

/// A self-signed certificate for 127.0.0.1, under the `http:` section.
fn tls_config(storage: &tempfile::TempDir) -> String {
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
    assert!(status.success(), "openssl failed");
    format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert.display(),
        key.display()
    )
}
