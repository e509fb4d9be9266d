//! peapodd over its CRI socket: runtime identity and status, the whole
//! ImageService against a real registry, bad requests, restarts and two
//! daemons side by side. Run as root.

mod common;

use common::*;
use nix::sys::signal::Signal;
use peapod_cri_proto::v1;
use tonic::Code;

fn spec(image: &str) -> Option<v1::ImageSpec> {
    Some(v1::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    })
}

fn pull_request(image: &str) -> v1::PullImageRequest {
    v1::PullImageRequest {
        image: spec(image),
        ..Default::default()
    }
}

fn status_request(image: &str, verbose: bool) -> v1::ImageStatusRequest {
    v1::ImageStatusRequest {
        image: spec(image),
        verbose,
    }
}

async fn listed_ids(daemon: &Peapodd) -> Vec<String> {
    daemon
        .images()
        .await
        .list_images(v1::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images
        .into_iter()
        .map(|i| i.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_status_and_runtime_config() {
    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let mut runtime = daemon.runtime().await;

    let version = runtime
        .version(v1::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        version,
        v1::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "peapod".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }
    );

    // The CNI conf dir is empty: the runtime is ready, the network is not.
    let status = runtime
        .status(v1::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    let condition = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.r#type == kind)
            .unwrap()
            .clone()
    };
    assert!(condition("RuntimeReady").status);
    let network = condition("NetworkReady");
    assert!(!network.status);
    assert_eq!(network.reason, "NetworkPluginNotReady");
    assert!(
        network.message.contains("no CNI network config"),
        "{network:?}"
    );
    assert!(status.info.is_empty());

    // A conflist whose plugin exists makes the network ready.
    std::fs::write(
        dirs.path("cni/10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"test","plugins":[{"type":"loopback"}]}"#,
    )
    .unwrap();
    std::os::unix::fs::symlink("/bin/true", dirs.path("cni-bin/loopback")).unwrap();
    let verbose = runtime
        .status(v1::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let network = verbose
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(network.status, "{network:?}");
    let config: serde_json::Value = serde_json::from_str(&verbose.info["config"]).unwrap();
    assert_eq!(config["socket"], dirs.socket().display().to_string());
    let cni: serde_json::Value = serde_json::from_str(&verbose.info["cni"]).unwrap();
    assert_eq!(cni["network"], "test");

    let config = runtime
        .runtime_config(v1::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        config.linux.unwrap().cgroup_driver(),
        v1::CgroupDriver::Cgroupfs
    );

    runtime
        .update_runtime_config(v1::UpdateRuntimeConfigRequest {
            runtime_config: Some(v1::RuntimeConfig {
                network_config: Some(v1::NetworkConfig {
                    pod_cidr: "10.88.0.0/16".into(),
                }),
            }),
        })
        .await
        .unwrap();
    let verbose = runtime
        .status(v1::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["runtime"]).unwrap();
    assert_eq!(info["podCIDR"], "10.88.0.0/16");

    // What is not built yet says so, by name.
    let error = runtime
        .checkpoint_container(v1::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unimplemented);
    assert!(error.message().contains("CheckpointContainer"), "{error:?}");

    // SIGTERM stops the daemon cleanly and takes the socket away, even with
    // a client still connected (as the kubelet always is).
    let exit = daemon.stop_with(Signal::SIGTERM);
    assert!(exit.success(), "{exit}");
    assert!(!dirs.socket().exists());
    drop(runtime);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_service_against_a_registry() {
    let registry = Registry::start();
    let reference = registry.push("busybox", "test/busybox", "v1");
    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let mut images = daemon.images().await;

    // Unknown images have an empty status, not an error.
    let status = images
        .image_status(status_request(&reference, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.image, None);

    let pulled = images
        .pull_image(pull_request(&reference))
        .await
        .unwrap()
        .into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");
    assert_eq!(pulled.image_ref.len(), "sha256:".len() + 64);

    let listed = images
        .list_images(v1::ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);
    let image = &listed[0];
    assert_eq!(image.id, pulled.image_ref);
    assert_eq!(image.repo_tags, vec![reference.clone()]);
    assert_eq!(image.repo_digests.len(), 1);
    assert!(image.size > 0);

    // The filter finds it by reference and by ID, and nothing for another name.
    for filter in [
        reference.as_str(),
        pulled.image_ref.as_str(),
        "busybox:nope",
    ] {
        let found = images
            .list_images(v1::ListImagesRequest {
                filter: Some(v1::ImageFilter {
                    image: spec(filter),
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .images;
        let expected = usize::from(filter != "busybox:nope");
        assert_eq!(found.len(), expected, "filter {filter}");
    }

    // Status by tag, digest reference, ID and short ID.
    let short = pulled.image_ref["sha256:".len().."sha256:".len() + 12].to_string();
    for query in [
        reference.as_str(),
        image.repo_digests[0].as_str(),
        pulled.image_ref.as_str(),
        short.as_str(),
    ] {
        let status = images
            .image_status(status_request(query, false))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            status.image.as_ref().map(|i| &i.id),
            Some(&pulled.image_ref),
            "{query}"
        );
        assert!(status.info.is_empty());
    }

    // Verbose status carries the image config.
    let verbose = images
        .image_status(status_request(&reference, true))
        .await
        .unwrap()
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).unwrap();
    assert_eq!(info["imageSpec"]["config"]["Cmd"][0], "/bin/sh");
    assert_eq!(info["imageSpec"]["config"]["WorkingDir"], "/data");
    assert_eq!(info["imageSpec"]["os"], "linux");

    let fs = images
        .image_fs_info(v1::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fs.image_filesystems.len(), 1);
    let usage = &fs.image_filesystems[0];
    assert!(usage.timestamp > 0);
    assert!(usage
        .fs_id
        .as_ref()
        .unwrap()
        .mountpoint
        .starts_with(&dirs.path("root").display().to_string()));
    assert!(usage.used_bytes.unwrap().value > 0);
    assert!(usage.inodes_used.unwrap().value > 0);

    images
        .remove_image(v1::RemoveImageRequest {
            image: spec(&reference),
        })
        .await
        .unwrap();
    assert!(listed_ids(&daemon).await.is_empty());
    // Removing it again (or anything unknown) succeeds, as CRI requires.
    images
        .remove_image(v1::RemoveImageRequest {
            image: spec(&reference),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let registry = Registry::start();
    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let mut images = daemon.images().await;

    for (what, error) in [
        (
            "pull",
            images.pull_image(pull_request("")).await.unwrap_err(),
        ),
        (
            "pull without spec",
            images
                .pull_image(v1::PullImageRequest::default())
                .await
                .unwrap_err(),
        ),
        (
            "status",
            images
                .image_status(status_request("  ", false))
                .await
                .unwrap_err(),
        ),
        (
            "remove",
            images
                .remove_image(v1::RemoveImageRequest { image: spec("") })
                .await
                .unwrap_err(),
        ),
        (
            "malformed reference",
            images
                .pull_image(pull_request("UPPER/Case::x@@"))
                .await
                .unwrap_err(),
        ),
    ] {
        assert_eq!(error.code(), Code::InvalidArgument, "{what}: {error:?}");
        assert!(!error.message().is_empty(), "{what}");
    }

    // Nothing listens on port 1.
    let error = images
        .pull_image(pull_request("127.0.0.1:1/nothing/here:v1"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unavailable, "{error:?}");
    assert!(error.message().contains("127.0.0.1:1"), "{error:?}");

    // The registry answers, but does not have the image.
    let missing = format!("{}/no/such-image:v1", registry.host());
    let error = images.pull_image(pull_request(&missing)).await.unwrap_err();
    assert_eq!(error.code(), Code::NotFound, "{error:?}");
    assert!(error.message().contains("no/such-image"), "{error:?}");

    // The daemon is still fine after all that.
    assert!(listed_ids(&daemon).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_survive_kill_9_and_restart() {
    let registry = Registry::start();
    let reference = registry.push("multi", "test/multi", "v1");
    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let id = daemon
        .images()
        .await
        .pull_image(pull_request(&reference))
        .await
        .unwrap()
        .into_inner()
        .image_ref;

    let exit = daemon.stop_with(Signal::SIGKILL);
    assert!(!exit.success());
    // The socket file stays behind, stale; the new daemon replaces it.
    assert!(dirs.socket().exists());

    let daemon = Peapodd::start(&dirs);
    assert_eq!(listed_ids(&daemon).await, vec![id.clone()]);
    let status = daemon
        .images()
        .await
        .image_status(status_request(&reference, false))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.image.unwrap().id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_side_by_side_and_no_double_start() {
    let registry = Registry::start();
    let reference = registry.push("busybox", "test/busybox", "side");
    let (first_dirs, second_dirs) = (DaemonDirs::new(), DaemonDirs::new());
    let first = Peapodd::start(&first_dirs);
    let second = Peapodd::start(&second_dirs);

    first
        .images()
        .await
        .pull_image(pull_request(&reference))
        .await
        .unwrap();
    assert_eq!(listed_ids(&first).await.len(), 1);
    assert!(listed_ids(&second).await.is_empty());

    // A third daemon on the first one's socket (own root) refuses to start...
    let out = run_to_exit(second_dirs.command_with(&[
        ("--root", second_dirs.path("other-root")),
        ("--socket", first_dirs.socket()),
    ]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already serving"), "{}", stderr(&out));

    // ...and so does one on the first one's root (own socket).
    let out = run_to_exit(first_dirs.command_with(&[("--socket", first_dirs.path("other.sock"))]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already using root"),
        "{}",
        stderr(&out)
    );

    // Both daemons still answer.
    assert_eq!(listed_ids(&first).await.len(), 1);
    assert!(listed_ids(&second).await.is_empty());
}

#[test]
fn a_named_config_file_must_exist_and_parse() {
    let dirs = DaemonDirs::new();
    let out = run_to_exit(dirs.command_with(&[("--config", dirs.path("absent.toml"))]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("absent.toml"), "{}", stderr(&out));

    std::fs::write(dirs.path("bad.toml"), "sockett = 1\n").unwrap();
    let out = run_to_exit(dirs.command_with(&[("--config", dirs.path("bad.toml"))]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("sockett"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_with_credentials() {
    let registry = Registry::start_with_auth();
    let reference = registry.push("busybox", "private/busybox", "v1");
    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let mut images = daemon.images().await;

    let error = images
        .pull_image(pull_request(&reference))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");

    let wrong = v1::PullImageRequest {
        auth: Some(v1::AuthConfig {
            username: USER.into(),
            password: "wrong".into(),
            ..Default::default()
        }),
        ..pull_request(&reference)
    };
    let error = images.pull_image(wrong).await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");

    // `auth` is base64 of user:password, as in a Docker config.json.
    let encoded = v1::PullImageRequest {
        auth: Some(v1::AuthConfig {
            auth: "cGVhcG9kOnMzY3JldC1wYXNz".into(),
            ..Default::default()
        }),
        ..pull_request(&reference)
    };
    let pulled = images.pull_image(encoded).await.unwrap().into_inner();
    assert!(pulled.image_ref.starts_with("sha256:"));

    let undecodable = v1::PullImageRequest {
        auth: Some(v1::AuthConfig {
            auth: "not base64!".into(),
            ..Default::default()
        }),
        ..pull_request(&reference)
    };
    let error = images.pull_image(undecodable).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_in_use_is_not_removed_and_images_stream() {
    let registry = Registry::start();
    let reference = registry.push("busybox", "test/used", "v1");
    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start(&dirs);
    let mut images = daemon.images().await;
    let id = images
        .pull_image(pull_request(&reference))
        .await
        .unwrap()
        .into_inner()
        .image_ref;

    // A container's snapshot of the image, made the way container creation
    // will make it (the record is all RemoveImage looks at).
    let store = peapod_rootfs::RootfsStore::open_with(
        dirs.path("root/rootfs"),
        peapod_rootfs::StoreOptions {
            registries_conf: None,
            ..Default::default()
        },
    )
    .unwrap();
    store
        .prepare_snapshot("ctr-in-use", &id, false)
        .await
        .unwrap();

    let error = images
        .remove_image(v1::RemoveImageRequest { image: spec(&id) })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition, "{error:?}");
    assert!(error.message().contains("ctr-in-use"), "{error:?}");

    let mut pages = images
        .stream_images(v1::StreamImagesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut streamed = Vec::new();
    while let Some(page) = pages.message().await.unwrap() {
        streamed.extend(page.images.into_iter().map(|i| i.id));
    }
    assert_eq!(streamed, vec![id.clone()]);

    store.remove_snapshot("ctr-in-use").await.unwrap();
    images
        .remove_image(v1::RemoveImageRequest { image: spec(&id) })
        .await
        .unwrap();
    assert!(listed_ids(&daemon).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_does_not_wait_forever_for_a_stuck_call() {
    // A "registry" that accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let dirs = DaemonDirs::new();
    let daemon = Peapodd::start_with(&dirs, &[("--shutdown-grace-seconds", "1".into())]);
    let mut images = daemon.images().await;
    let stuck = tokio::spawn(async move {
        images
            .pull_image(pull_request(&format!("127.0.0.1:{port}/stuck:v1")))
            .await
    });
    // Wait until the daemon is inside the pull, so the call is in flight.
    while !daemon.log().contains("pulling image") {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let exit = tokio::task::spawn_blocking(move || daemon.stop_with(Signal::SIGTERM))
        .await
        .unwrap();
    assert!(exit.success(), "{exit}");
    assert!(!dirs.socket().exists());
    // The client sees its call cut off rather than answered.
    assert!(stuck.await.unwrap().is_err());
    drop(silent);
}
