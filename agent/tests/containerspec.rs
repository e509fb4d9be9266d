//! The OCI specs built from CRI configs, run for real with peapod-runtime: what Kubernetes asks
//! for is what the container gets.
use std::process::Command;

use peapod_agent::containerspec::{build, Input, PodView};
use peapod_cri_proto::v1;
use peapod_rootfs::ImageConfig;
use peapod_tests::{unique, workspace_binary, Bundle};

/// Build the spec for `config`, run it in a busybox bundle, return (exit code, stdout, stderr).
fn run(config: v1::ContainerConfig, image: ImageConfig) -> (i32, String, String) {
    let bundle = Bundle::new(&["true"]);
    let pod = PodView {
        hostname: "specpod".into(),
        ..Default::default()
    };
    let id = unique("spec");
    let spec = build(&Input {
        id: &id,
        config: &config,
        pod: &pod,
        image: &image,
        rootfs: &bundle.rootfs(),
        min_oom_score_adj: -1000,
    })
    .expect("building the spec");
    spec.save(bundle.path().join("config.json")).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_binary("peapod-runtime"))
        .arg("--root")
        .arg(root.path())
        .args(["run", "--bundle", bundle.path().to_str().unwrap(), &id])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn sh(script: &str) -> v1::ContainerConfig {
    v1::ContainerConfig {
        command: vec!["sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

#[test]
fn image_defaults_and_pod_settings_reach_the_process() {
    let image = ImageConfig {
        env: Some(vec!["FROM_IMAGE=1".into(), "PATH=/bin".into()]),
        working_dir: Some("/tmp".into()),
        user: Some("nobody".into()),
        ..Default::default()
    };
    let mut config = sh("echo $FROM_IMAGE $FROM_POD; pwd; id -u; echo $HOSTNAME");
    config.envs = vec![v1::KeyValue {
        key: "FROM_POD".into(),
        value: "2".into(),
    }];
    let (code, out, err) = run(config, image);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1 2\n/tmp\n65534\nspecpod\n");
}

#[test]
fn runtime_default_seccomp_denies_mount_but_not_ordinary_calls() {
    let mut config =
        sh("mkdir /tmp/m && echo mkdir-ok; mount -t tmpfs none /tmp/m && echo mounted");
    config.linux = Some(v1::LinuxContainerConfig {
        security_context: Some(v1::LinuxContainerSecurityContext {
            // CAP_SYS_ADMIN would release `mount` again: the profile alone must stop it.
            seccomp: Some(v1::SecurityProfile {
                profile_type: v1::security_profile::ProfileType::RuntimeDefault as i32,
                localhost_ref: String::new(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (_, out, err) = run(config, ImageConfig::default());
    assert_eq!(out, "mkdir-ok\n");
    assert!(
        err.to_lowercase().contains("permission denied") || err.contains("Operation not permitted"),
        "{err}"
    );
}

#[test]
fn readonly_rootfs_and_dropped_capabilities() {
    let mut config = sh("touch /x 2>/dev/null || echo ro; grep CapEff /proc/self/status");
    config.linux = Some(v1::LinuxContainerConfig {
        security_context: Some(v1::LinuxContainerSecurityContext {
            readonly_rootfs: true,
            capabilities: Some(v1::Capability {
                drop_capabilities: vec!["ALL".into()],
                add_capabilities: vec!["CHOWN".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let (code, out, err) = run(config, ImageConfig::default());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ro\nCapEff:\t0000000000000001\n");
}
