//! Containers end to end below the gRPC layer: image snapshot, OCI spec, shim, logs, exit, removal.
use std::path::{Path, PathBuf};
use std::time::Duration;

use peapod_agent::containers::{ContainerError, Containers, PodContext};
use peapod_agent::containerspec::PodView;
use peapod_cri_proto::v1;
use peapod_rootfs::RootfsStore;
use peapod_tests::{unique, workspace_binary};

struct Fixture {
    dir: tempfile::TempDir,
    containers: Containers,
    image_id: String,
}

async fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("peapod-containers-")
        .tempdir()
        .unwrap();
    let images = peapod_tests::test_images(Path::new(env!("CARGO_TARGET_TMPDIR")));
    let store = RootfsStore::open(dir.path().join("root/rootfs")).unwrap();
    let imported = store.import(&images.join("oci.tar"), None).await.unwrap();
    let busybox = imported
        .iter()
        .find(|i| i.repo_tags.iter().any(|t| t.contains("busybox")))
        .expect("the busybox test image");
    let containers = Containers::new(
        &dir.path().join("root"),
        &dir.path().join("state"),
        workspace_binary("peapod-shim"),
        store.clone(),
    )
    .unwrap();
    Fixture {
        image_id: busybox.id.to_string(),
        containers,
        dir,
    }
}

fn config(image: &str, script: &str) -> v1::ContainerConfig {
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        image: Some(v1::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: "app/0.log".into(),
        ..Default::default()
    }
}

fn mounted(path: &Path) -> bool {
    peapod_tests::host_mounts().contains(path.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn create_start_log_exit_remove() {
    let f = fixture().await;
    let logs: PathBuf = f.dir.path().join("logs");
    let view = PodView {
        hostname: "pod1".into(),
        ..Default::default()
    };
    let pod = PodContext {
        sandbox_id: "sandbox1",
        view: &view,
        log_directory: logs.to_str().unwrap(),
    };
    let id = unique("ctr");
    let record = f
        .containers
        .create(
            &id,
            &pod,
            &config(&f.image_id, "echo hello; echo oops >&2; exit 3"),
        )
        .await
        .unwrap();
    assert_eq!(record.name, "app");
    assert_eq!(f.containers.load(&id).await.unwrap().image_id, f.image_id);
    let rootfs = f
        .dir
        .path()
        .join("state/containers")
        .join(&id)
        .join("rootfs");
    assert!(
        mounted(&rootfs),
        "the snapshot is mounted while the container exists"
    );

    f.containers.start(&id).await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(20), f.containers.shim(&id).wait())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(exit.exit_code, 3);

    let log = std::fs::read_to_string(logs.join("app/0.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines.iter().any(|l| l.ends_with(" stdout F hello")),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.ends_with(" stderr F oops")), "{log}");

    f.containers.remove(&id).await.unwrap();
    assert!(!mounted(&rootfs), "removal unmounts the snapshot");
    assert!(!f.dir.path().join("state/containers").join(&id).exists());
    assert!(matches!(
        f.containers.load(&id).await,
        Err(ContainerError::NotFound(_))
    ));
    // Removal is idempotent.
    f.containers.remove(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_escalates_to_sigkill() {
    let f = fixture().await;
    let view = PodView::default();
    let pod = PodContext {
        sandbox_id: "s",
        view: &view,
        log_directory: "",
    };
    let id = unique("stop");
    // A PID 1 that ignores SIGTERM: only SIGKILL after the timeout ends it.
    f.containers
        .create(
            &id,
            &pod,
            &config(&f.image_id, "trap '' TERM; while true; do sleep 1; done"),
        )
        .await
        .unwrap();
    f.containers.start(&id).await.unwrap();
    f.containers
        .stop(&id, Duration::from_millis(300), "SIGTERM")
        .await
        .unwrap();
    let state = f.containers.shim(&id).state().await.unwrap();
    assert_eq!(state.exit.unwrap().signal, Some(9));
    f.containers.remove(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_leave_nothing_behind() {
    let f = fixture().await;
    let view = PodView::default();
    let pod = PodContext {
        sandbox_id: "s",
        view: &view,
        log_directory: "",
    };
    let id = unique("bad");
    let err = f
        .containers
        .create(&id, &pod, &config("no-such-image:1", "true"))
        .await
        .unwrap_err();
    assert!(matches!(err, ContainerError::ImageNotFound(_)), "{err}");
    // A program that is not in the image: the shim's create fails, and everything is undone.
    let mut bad = config(&f.image_id, "true");
    bad.command = vec!["/no/such/binary".into()];
    let err = f.containers.create(&id, &pod, &bad).await.unwrap_err();
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    let state = f.dir.path().join("state/containers");
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "state left behind"
    );
    assert!(
        !peapod_tests::host_mounts().contains(state.to_str().unwrap()),
        "mount left behind"
    );
    assert!(f.containers.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_session_through_the_shim_client() {
    use peapod_agent::shim::SessionEvent;

    let f = fixture().await;
    let view = PodView::default();
    let pod = PodContext {
        sandbox_id: "s",
        view: &view,
        log_directory: "",
    };
    let id = unique("session");
    f.containers
        .create(&id, &pod, &config(&f.image_id, "exec sleep 1000"))
        .await
        .unwrap();
    f.containers.start(&id).await.unwrap();

    // The container's own process, running `cat` instead, as a streaming exec builds it.
    let mut process = f.containers.process(&id).await.unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "cat; echo done >&2".into(),
    ]));
    process.set_terminal(Some(false));
    let session = f
        .containers
        .shim(&id)
        .exec_session(process, true)
        .await
        .unwrap();
    let (mut input, mut output) = session.split();
    input.stdin(b"hello\n").await.unwrap();
    let mut stdout = Vec::new();
    while stdout != b"hello\n" {
        let event = tokio::time::timeout(Duration::from_secs(60), output.next())
            .await
            .unwrap()
            .unwrap();
        match event {
            Some(SessionEvent::Stdout(data)) => stdout.extend(data),
            other => panic!("unexpected {other:?}"),
        }
    }
    input.close_stdin().await.unwrap();
    let mut stderr = Vec::new();
    let exit = loop {
        let event = tokio::time::timeout(Duration::from_secs(60), output.next())
            .await
            .unwrap()
            .unwrap();
        match event {
            Some(SessionEvent::Stderr(data)) => stderr.extend(data),
            Some(SessionEvent::Exited(exit)) => break exit,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!((exit.exit_code, exit.signal), (0, None));
    assert_eq!(stderr, b"done\n");
    assert!(output.next().await.unwrap().is_none(), "the exit is last");

    f.containers
        .stop(&id, Duration::from_millis(100), "SIGKILL")
        .await
        .unwrap();
    f.containers.remove(&id).await.unwrap();
}
