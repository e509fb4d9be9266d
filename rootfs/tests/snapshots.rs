//! Snapshots over imported images: whiteouts, copy-on-write isolation, read-only
//! views, usage, removal while in use, and imports of OCI layouts and docker archives.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use common::*;
use peapod_rootfs::unpack::get_xattr;
use peapod_rootfs::Error;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_oci_layout_dir_and_tar_and_docker_archive() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let imported = store
        .import(&oci_layout(), Some("peapod.test/layout"))
        .await
        .unwrap();
    let tags: Vec<String> = imported.iter().flat_map(|r| r.repo_tags.clone()).collect();
    for tag in ["busybox", "multi", "multiarch"] {
        assert!(
            tags.contains(&format!("peapod.test/layout:{tag}")),
            "{tags:?}"
        );
    }
    let from_tar = store
        .import(&images().join("oci.tar"), Some("peapod.test/tar"))
        .await
        .unwrap();
    assert_eq!(from_tar.len(), imported.len());
    // Same content, same image IDs: the records merge names.
    let multi = store
        .image_status("peapod.test/tar:multi")
        .await
        .unwrap()
        .unwrap();
    assert!(multi
        .repo_tags
        .contains(&"peapod.test/layout:multi".to_string()));

    let docker = store
        .import(&images().join("docker-archive.tar"), None)
        .await
        .unwrap();
    assert_eq!(docker.len(), 1);
    assert!(docker[0]
        .repo_tags
        .contains(&"docker.io/peapod-test/docker-multi:v1".to_string()));
    // docker save and the OCI layout hold the same multi image (same config).
    assert_eq!(docker[0].id, multi.id);
    assert!(store
        .image_status("peapod-test/docker-multi:v1")
        .await
        .unwrap()
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_and_copy_on_write_isolation() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store
        .import(&oci_layout(), Some("peapod.test/cow"))
        .await
        .unwrap();
    let image = "peapod.test/cow:multi";
    let record = store.image_status(image).await.unwrap().unwrap();

    // Whiteouts were unpacked as overlayfs expects them.
    let top = dir
        .path()
        .join("root/layers")
        .join(record.chain_ids()[2].hex())
        .join("fs");
    let whiteout = std::fs::symlink_metadata(top.join("data/gone.txt")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert_eq!(
        get_xattr(&top.join("data/dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );

    let (a, b) = (MountDir::new(), MountDir::new());
    store.prepare_snapshot("cow-a", image, false).await.unwrap();
    store.mount_snapshot("cow-a", a.path()).await.unwrap();
    // The one-step form, by image ID.
    let info = store
        .prepare_and_mount_snapshot("cow-b", &record.id.to_string(), false, b.path())
        .await
        .unwrap();
    assert_eq!(info.mounted_at.as_deref(), Some(b.path()));
    assert!(matches!(
        store.prepare_snapshot("cow-a", image, false).await,
        Err(Error::SnapshotExists(_))
    ));
    // A failed mount leaves no snapshot behind.
    let missing = dir.path().join("no-such-dir");
    assert!(store
        .prepare_and_mount_snapshot("cow-c", image, false, &missing)
        .await
        .is_err());
    assert!(store.snapshot("cow-c").await.unwrap().is_none());

    for root in [a.path(), b.path()] {
        assert!(
            !root.join("data/gone.txt").exists(),
            "whiteout hides the file"
        );
        assert!(
            !root.join("data/dir/old.txt").exists(),
            "opaque dir hides lower content"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("data/dir/new.txt")).unwrap(),
            "new\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("etc/motd")).unwrap(),
            "v2\n"
        );
        assert_eq!(
            std::fs::read_to_string(root.join("data/hard.txt")).unwrap(),
            "keep\n"
        );
        assert_eq!(
            std::fs::read_link(root.join("data/link")).unwrap().to_str(),
            Some("keep.txt")
        );
        let owned = std::fs::metadata(root.join("data/owned.txt")).unwrap();
        assert_eq!(
            (owned.uid(), owned.gid(), owned.mode() & 0o7777),
            (1234, 5678, 0o640)
        );
        assert_eq!(owned.mtime(), 1_700_000_000);
        assert_eq!(
            std::fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
    }

    std::fs::write(a.path().join("etc/motd"), "changed by a\n").unwrap();
    std::fs::write(a.path().join("data/only-a"), vec![7u8; 64 * 1024]).unwrap();
    std::fs::remove_file(a.path().join("data/keep.txt")).unwrap();
    assert_eq!(
        std::fs::read_to_string(b.path().join("etc/motd")).unwrap(),
        "v2\n"
    );
    assert!(!b.path().join("data/only-a").exists());
    assert!(b.path().join("data/keep.txt").exists());
    // The shared layers are untouched.
    let middle = dir
        .path()
        .join("root/layers")
        .join(record.chain_ids()[1].hex())
        .join("fs");
    assert!(middle.join("data/keep.txt").exists());
    assert_eq!(
        std::fs::read_to_string(top.join("etc/motd")).unwrap(),
        "v2\n"
    );

    let usage = store.snapshot_usage("cow-a").await.unwrap();
    assert!(usage.bytes >= 64 * 1024 && usage.inodes >= 3, "{usage:?}");
    let usage_b = store.snapshot_usage("cow-b").await.unwrap();
    assert!(usage_b.bytes < usage.bytes);

    // Removal unmounts and deletes, and can be repeated.
    store.remove_snapshot("cow-a").await.unwrap();
    store.remove_snapshot("cow-a").await.unwrap();
    assert!(!a.path().join("etc").exists(), "unmounted");
    assert!(store.snapshot("cow-a").await.unwrap().is_none());
    assert!(b.path().join("etc/motd").exists());
    store.remove_snapshot("cow-b").await.unwrap();
    assert!(!b.path().join("etc").exists(), "unmounted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readonly_snapshot_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store
        .import(&oci_layout(), Some("peapod.test/ro"))
        .await
        .unwrap();
    store
        .prepare_snapshot("ro-1", "peapod.test/ro:busybox", true)
        .await
        .unwrap();
    let target = MountDir::new();
    store.mount_snapshot("ro-1", target.path()).await.unwrap();
    assert!(target.path().join("bin/busybox").exists());
    let err = std::fs::write(target.path().join("new-file"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let mount = store.snapshot_mount("ro-1").await.unwrap();
    assert_eq!(mount.fstype, "overlay");
    assert!(mount.options.contains(&"ro".to_string()));
    store.remove_snapshot("ro-1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_image_refused_while_in_use_then_content_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let records = store
        .import(&images().join("docker-archive.tar"), None)
        .await
        .unwrap();
    let id = records[0].id.to_string();
    store.prepare_snapshot("user-1", &id, false).await.unwrap();

    let err = store
        .remove_image("peapod-test/docker-multi:v1")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::ImageInUse { users, .. } if users == &vec!["user-1".to_string()]),
        "{err}"
    );
    assert!(err.to_string().contains("user-1"));
    assert!(store.image_status(&id).await.unwrap().is_some());

    store.remove_snapshot("user-1").await.unwrap();
    assert!(store
        .remove_image("peapod-test/docker-multi:v1")
        .await
        .unwrap());
    assert!(
        !store.remove_image(&id).await.unwrap(),
        "already gone is not an error"
    );
    let root = dir.path().join("root");
    assert_eq!(
        std::fs::read_dir(root.join("content/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(root.join("l")).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagging_keeps_the_image_until_the_last_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    store
        .import(&oci_layout(), Some("peapod.test/one"))
        .await
        .unwrap();
    store
        .import(&oci_layout(), Some("peapod.test/two"))
        .await
        .unwrap();
    assert!(store.remove_image("peapod.test/one:busybox").await.unwrap());
    let record = store
        .image_status("peapod.test/two:busybox")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.repo_tags,
        vec!["peapod.test/two:busybox".to_string()]
    );
    assert!(store.remove_image("peapod.test/two:busybox").await.unwrap());
    assert!(store
        .image_status(&record.id.to_string())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_layer_image_mounts_despite_option_limit() {
    // 120 layers: absolute lowerdir paths would pass the kernel's 4 KiB option limit.
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("deep");
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(DEEP_IMAGE)
        .arg(&layout)
        .status()
        .unwrap();
    assert!(status.success());
    let store = store(&dir);
    store
        .import(&layout, Some("peapod.test/deep"))
        .await
        .unwrap();
    store
        .prepare_snapshot("deep-1", "peapod.test/deep:latest", false)
        .await
        .unwrap();
    let spec = store.snapshot_mount("deep-1").await.unwrap();
    assert!(
        spec.options.join(",").len() > 4096,
        "the absolute form really is too long"
    );
    let target = MountDir::new();
    store.mount_snapshot("deep-1", target.path()).await.unwrap();
    for i in [0, 59, 119] {
        assert_eq!(
            std::fs::read_to_string(target.path().join(format!("f{i}"))).unwrap(),
            format!("{i}")
        );
    }
    store.remove_snapshot("deep-1").await.unwrap();
}

const DEEP_IMAGE: &str = r#"
import hashlib, io, json, os, sys, tarfile
root = sys.argv[1]
os.makedirs(root + "/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{root}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
layers, diffs = [], []
for i in range(120):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = str(i).encode()
        info = tarfile.TarInfo(f"f{i}"); info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    d, n = blob(buf.getvalue())
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
    diffs.append(d)
cd, cn = blob(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diffs}}).encode())
md, mn = blob(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn}, "layers": layers}).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
    "size": mn, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, open(root + "/index.json", "w"))
open(root + "/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let target = MountDir::new();
    let id = {
        let store = store(&dir);
        let records = store
            .import(&oci_layout(), Some("peapod.test/reopen"))
            .await
            .unwrap();
        store
            .prepare_and_mount_snapshot(
                "reopen-1",
                "peapod.test/reopen:busybox",
                false,
                target.path(),
            )
            .await
            .unwrap();
        std::fs::write(target.path().join("root/note"), "kept").unwrap();
        records.len()
    };
    // A restarted daemon opens the same root and finds everything as it was.
    let store = store(&dir);
    assert_eq!(store.list_images().await.unwrap().len(), id);
    let snapshots = store.list_snapshots().await.unwrap();
    assert_eq!(snapshots.len(), 1);
    assert_eq!(snapshots[0].mounted_at.as_deref(), Some(target.path()));
    assert!(store.snapshot_usage("reopen-1").await.unwrap().bytes > 0);
    assert!(matches!(
        store.remove_image("peapod.test/reopen:busybox").await,
        Err(Error::ImageInUse { .. })
    ));
    store.remove_snapshot("reopen-1").await.unwrap();
    assert!(!target.path().join("root/note").exists());
    assert!(store
        .remove_image("peapod.test/reopen:busybox")
        .await
        .unwrap());
}
