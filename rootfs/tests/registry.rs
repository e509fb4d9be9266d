//! Pulls from a real registry (Debian's docker-registry) on 127.0.0.1.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;
use peapod_rootfs::{AuthConfig, Digest, Error, Platform};

fn anon() -> AuthConfig {
    AuthConfig::anonymous()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_and_by_digest() {
    let registry = Registry::start();
    registry.push("multi", "test/multi", "v1");
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);

    let reference = format!("{}/test/multi:v1", registry.host());
    let record = store.pull(&reference, &anon()).await.unwrap();
    let manifest = blob_json(layout_manifest("multi")["digest"].as_str().unwrap());
    assert_eq!(
        record.id.to_string(),
        manifest["config"]["digest"].as_str().unwrap()
    );
    assert_eq!(record.repo_tags, vec![reference.clone()]);
    // skopeo may re-serialize the manifest on push, so take its digest from the record.
    assert_eq!(record.repo_digests.len(), 1);
    let by_digest = record.repo_digests[0].clone();
    assert!(by_digest.starts_with(&format!("{}/test/multi@sha256:", registry.host())));
    assert_eq!(record.layers.len(), 3);
    let types: Vec<&str> = record
        .layers
        .iter()
        .map(|l| l.media_type.as_str())
        .collect();
    assert!(
        types[0].ends_with("tar+gzip")
            && types[1].ends_with("layer.v1.tar")
            && types[2].ends_with("tar+zstd"),
        "{types:?}"
    );
    assert!(record.size > 0);
    assert_eq!(
        record.config.cmd.as_deref(),
        Some(&["/bin/sh".to_string()][..])
    );
    assert_eq!(record.config.working_dir.as_deref(), Some("/data"));
    assert_eq!(record.config.stop_signal.as_deref(), Some("SIGTERM"));
    assert!(record
        .config
        .env
        .as_ref()
        .unwrap()
        .contains(&"PEAPOD_TEST=1".to_string()));
    assert!(record
        .config
        .exposed_ports
        .as_ref()
        .unwrap()
        .contains_key("80/tcp"));
    assert!(record.config.volumes.as_ref().unwrap().contains_key("/vol"));
    assert_eq!(
        record.config.labels.as_ref().unwrap()["org.peapod.test"],
        "yes"
    );

    // By digest: same image, no new download (layers already unpacked).
    let again = store.pull(&by_digest, &anon()).await.unwrap();
    assert_eq!(again.id, record.id);
    assert_eq!(again.repo_tags, vec![reference.clone()]);

    // Status by reference, by digest reference, by ID, by short ID.
    for query in [
        reference.as_str(),
        by_digest.as_str(),
        &record.id.to_string(),
        record.id.hex(),
        &record.id.hex()[..12],
    ] {
        let found = store.image_status(query).await.unwrap();
        assert_eq!(
            found.map(|r| r.id),
            Some(record.id.clone()),
            "lookup {query}"
        );
    }
    assert!(store
        .image_status("docker.io/library/nothing:here")
        .await
        .unwrap()
        .is_none());
    assert_eq!(store.list_images().await.unwrap().len(), 1);

    // A wrong digest is refused rather than silently pulling something else.
    let wrong = format!("{}/test/multi@{}", registry.host(), Digest::of(b"other"));
    assert!(store.pull(&wrong, &anon()).await.is_err());

    let usage = store.fs_usage().await.unwrap();
    assert!(usage.bytes > 1_000_000 && usage.inodes > 10, "{usage:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_resolves_to_host_platform() {
    let registry = Registry::start();
    registry.push("multiarch", "test/multiarch", "latest");
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let record = store
        .pull(&format!("{}/test/multiarch", registry.host()), &anon())
        .await
        .unwrap();
    let host = Platform::host();
    assert_eq!(record.architecture, host.architecture);
    // The repo digest names the index, which is what the tag points at.
    assert_eq!(record.repo_digests.len(), 1);
    let by_digest = record.repo_digests[0].clone();
    let again = store.pull(&by_digest, &anon()).await.unwrap();
    assert_eq!(again.id, record.id);

    store
        .prepare_snapshot("arch-check", &record.id.to_string(), true)
        .await
        .unwrap();
    let target = MountDir::new();
    store
        .mount_snapshot("arch-check", target.path())
        .await
        .unwrap();
    let arch = std::fs::read_to_string(target.path().join("etc/arch")).unwrap();
    assert_eq!(arch.trim(), host.architecture);
    store.remove_snapshot("arch-check").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_success_and_failure() {
    let registry = Registry::start_with_auth();
    registry.push("busybox", "private/busybox", "1");
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let reference = format!("{}/private/busybox:1", registry.host());

    let err = store.pull(&reference, &anon()).await.unwrap_err();
    assert!(matches!(err, Error::Pull { .. }), "{err}");
    let err = store
        .pull(&reference, &AuthConfig::basic(USER, "wrong"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Pull { .. }), "{err}");
    assert!(store.list_images().await.unwrap().is_empty());

    store
        .pull(&reference, &AuthConfig::basic(USER, PASSWORD))
        .await
        .unwrap();
    // The `auth` field form (base64 user:pass), as in a docker config.json.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = common::store(&dir2);
    let auth = AuthConfig {
        auth: "cGVhcG9kOnMzY3JldC1wYXNz".into(),
        ..Default::default()
    };
    store2.pull(&reference, &auth).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_and_locations_from_registries_conf() {
    let registry = Registry::start();
    registry.push("busybox", "team/busybox", "1");
    let down = free_port();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            r#"
unqualified-search-registries = ["127.0.0.1:{down}", "short.invalid"]

[[registry]]
prefix = "gcr.invalid"
location = "{host}"
insecure = true

[[registry]]
prefix = "mirrored.invalid/team"
location = "127.0.0.1:{down}/nothing"
[[registry.mirror]]
location = "127.0.0.1:{down}/team"
[[registry.mirror]]
location = "{host}/team"

[[registry]]
prefix = "short.invalid"
location = "{host}/team"

[[registry]]
prefix = "blocked.invalid"
blocked = true
"#,
            host = registry.host()
        ),
    )
    .unwrap();
    let store = store_with_conf(&dir, Some(conf));

    // Location rewrites the prefix; the record keeps the name asked for.
    let record = store
        .pull("gcr.invalid/team/busybox:1", &anon())
        .await
        .unwrap();
    assert_eq!(
        record.repo_tags,
        vec!["gcr.invalid/team/busybox:1".to_string()]
    );

    // The first mirror is down, the second answers.
    let record = store
        .pull("mirrored.invalid/team/busybox:1", &anon())
        .await
        .unwrap();
    assert!(record
        .repo_tags
        .contains(&"mirrored.invalid/team/busybox:1".to_string()));

    // A short name goes through the search registries in order.
    let record = store.pull("busybox:1", &anon()).await.unwrap();
    // ...and is found again by the same short name.
    let found = store.image_status("busybox:1").await.unwrap().unwrap();
    assert_eq!(found.id, record.id);
    assert!(
        record
            .repo_tags
            .contains(&"short.invalid/busybox:1".to_string()),
        "{:?}",
        record.repo_tags
    );

    let err = store
        .pull("blocked.invalid/x:1", &anon())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("blocked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blob_is_rejected_and_not_stored() {
    let registry = Registry::start();
    registry.push("busybox", "test/busybox", "bad");
    let layer = blob_json(layout_manifest("busybox")["digest"].as_str().unwrap())["layers"][0]
        ["digest"]
        .as_str()
        .unwrap()
        .to_string();
    registry.corrupt_blob(layer.strip_prefix("sha256:").unwrap());

    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let err = store
        .pull(&format!("{}/test/busybox:bad", registry.host()), &anon())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&layer) || err.to_string().to_lowercase().contains("digest"),
        "{err}"
    );
    let root = dir.path().join("root");
    assert!(!root
        .join("content/sha256")
        .join(layer.strip_prefix("sha256:").unwrap())
        .exists());
    assert_eq!(
        std::fs::read_dir(root.join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert!(store.list_images().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_down_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let port = free_port();
    let err = store
        .pull(&format!("127.0.0.1:{port}/nothing/here:1"), &anon())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{port}")) && text.contains("manifest"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_pull_leaves_nothing_and_retry_succeeds() {
    let registry = Registry::start();
    registry.push("busybox", "test/busybox", "1");
    // Manifests and config are a few KiB; the ~1 MiB layer is cut part-way.
    let proxy = cutting_proxy(registry.port, 200 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let err = store
        .pull(&format!("127.0.0.1:{proxy}/test/busybox:1"), &anon())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Pull { .. } | Error::DigestMismatch { .. }),
        "{err}"
    );
    let root = dir.path().join("root");
    assert_eq!(
        std::fs::read_dir(root.join("content/ingest"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(std::fs::read_dir(root.join("layers")).unwrap().count(), 0);
    assert!(store.list_images().await.unwrap().is_empty());

    let record = store
        .pull(&format!("{}/test/busybox:1", registry.host()), &anon())
        .await
        .unwrap();
    assert_eq!(record.layers.len(), 1);
    let snapshot = store
        .prepare_snapshot("after-retry", "test/busybox:1", false)
        .await;
    assert!(
        snapshot.is_err(),
        "short name is docker.io, not the local registry"
    );
    store
        .prepare_snapshot(
            "after-retry",
            &format!("{}/test/busybox:1", registry.host()),
            false,
        )
        .await
        .unwrap();
    let target = MountDir::new();
    store
        .mount_snapshot("after-retry", target.path())
        .await
        .unwrap();
    assert!(
        std::fs::metadata(target.path().join("bin/busybox"))
            .unwrap()
            .mode()
            & 0o111
            != 0
    );
    store.remove_snapshot("after-retry").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_config_allows_an_unverified_tls_registry() {
    let registry = Registry::start_with_tls();
    registry.push("busybox", "test/busybox", "tls");
    let reference = format!("{}/test/busybox:tls", registry.host());

    // Without configuration the self-signed certificate is refused (and plain HTTP,
    // allowed for loopback, finds a TLS server).
    let dir = tempfile::tempdir().unwrap();
    let err = store(&dir).pull(&reference, &anon()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("(https)") && text.contains("(http)"),
        "{text}"
    );

    let conf = dir.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nlocation = \"{}\"\ninsecure = true\n",
            registry.host()
        ),
    )
    .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let store = store_with_conf(&dir2, Some(conf));
    let record = store.pull(&reference, &anon()).await.unwrap();
    assert_eq!(record.repo_tags, vec![reference]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_agree() {
    let registry = Registry::start();
    registry.push("multi", "test/multi", "same");
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let reference = format!("{}/test/multi:same", registry.host());
    let auth = anon();
    let (a, b) = tokio::join!(store.pull(&reference, &auth), store.pull(&reference, &auth));
    assert_eq!(a.unwrap().id, b.unwrap().id);
    let images = store.list_images().await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].repo_tags, vec![reference]);
    let layers = std::fs::read_dir(dir.path().join("root/layers"))
        .unwrap()
        .count();
    assert_eq!(layers, 3);
}
