//! Test harness: test images built by scripts/make-test-images, stores, and the registry of
//! `peapod_tests::registry` (Debian's docker-registry on a free loopback port).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use peapod_rootfs::{RootfsStore, StoreOptions};

// Not every test binary uses all of them.
#[allow(unused_imports)]
pub use peapod_tests::registry::{free_port, Registry, PASSWORD, USER};

/// The images, built once and kept in cargo's per-target temp dir (keyed by the
/// script's content, so an edited script rebuilds them).
pub fn images() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| peapod_tests::test_images(&peapod_tests::target_tmp_dir()))
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
