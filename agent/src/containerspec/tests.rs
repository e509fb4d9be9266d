use super::*;

fn image() -> ImageConfig {
    ImageConfig {
        env: Some(vec!["PATH=/bin".into(), "LANG=C".into()]),
        entrypoint: Some(vec!["/entry".into()]),
        cmd: Some(vec!["default-arg".into()]),
        working_dir: Some("/work".into()),
        user: Some("1000".into()),
        ..Default::default()
    }
}

fn pod() -> PodView {
    PodView {
        hostname: "pod-host".into(),
        netns: Some("/run/peapod/pods/p/ns/net".into()),
        ipcns: Some("/run/peapod/pods/p/ns/ipc".into()),
        utsns: Some("/run/peapod/pods/p/ns/uts".into()),
        etc_hosts: Some("/run/peapod/pods/p/hosts".into()),
        cgroup_parent: "/kubepods/podabc".into(),
        ..Default::default()
    }
}

fn build_with(config: v1::ContainerConfig) -> Result<Spec, SpecError> {
    let rootfs = tempfile::tempdir().unwrap();
    build(&Input {
        id: "c1",
        config: &config,
        pod: &pod(),
        image: &image(),
        rootfs: rootfs.path(),
        min_oom_score_adj: -500,
    })
}

#[test]
fn command_and_args_follow_kubernetes() {
    let spec = build_with(v1::ContainerConfig::default()).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["/entry", "default-arg"]
    );
    let spec = build_with(v1::ContainerConfig {
        args: vec!["x".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["/entry", "x"]
    );
    let spec = build_with(v1::ContainerConfig {
        command: vec!["/bin/sh".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["/bin/sh"]
    );
    let spec = build_with(v1::ContainerConfig {
        command: vec!["/bin/sh".into()],
        args: vec!["-c".into(), "true".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_ref().unwrap(),
        &["/bin/sh", "-c", "true"]
    );
}

#[test]
fn env_user_cwd_namespaces_and_cgroup() {
    let config = v1::ContainerConfig {
        envs: vec![
            v1::KeyValue {
                key: "LANG".into(),
                value: "en".into(),
            },
            v1::KeyValue {
                key: "X".into(),
                value: "1".into(),
            },
        ],
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(v1::LinuxContainerResources {
                memory_limit_in_bytes: 1 << 26,
                cpu_shares: 512,
                oom_score_adj: -999,
                ..Default::default()
            }),
            security_context: Some(v1::LinuxContainerSecurityContext {
                run_as_group: Some(v1::Int64Value { value: 3 }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let spec = build_with(config).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(
        p.env().as_ref().unwrap(),
        &["HOSTNAME=pod-host", "PATH=/bin", "LANG=en", "X=1"]
    );
    assert_eq!((p.user().uid(), p.user().gid()), (1000, 3));
    assert_eq!(p.cwd(), Path::new("/work"));
    assert_eq!(
        p.oom_score_adj(),
        Some(-500),
        "never below the daemon's own"
    );
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/kubepods/podabc/c1"))
    );
    let ns = serde_json::to_value(linux.namespaces()).unwrap();
    assert!(ns
        .as_array()
        .unwrap()
        .contains(&json!({"type": "network", "path": "/run/peapod/pods/p/ns/net"})));
    assert!(ns.as_array().unwrap().contains(&json!({"type": "pid"})));
    let res = linux.resources().as_ref().unwrap();
    assert_eq!(res.memory().as_ref().unwrap().limit(), Some(1 << 26));
    assert_eq!(res.cpu().as_ref().unwrap().shares(), Some(512));
}

#[test]
fn capabilities_and_privileged() {
    let sc = v1::LinuxContainerSecurityContext {
        capabilities: Some(v1::Capability {
            add_capabilities: vec!["NET_ADMIN".into()],
            drop_capabilities: vec!["CAP_KILL".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let spec = build_with(v1::ContainerConfig {
        linux: Some(v1::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    let caps = serde_json::to_value(spec.process().as_ref().unwrap().capabilities()).unwrap();
    let bounding: Vec<String> = serde_json::from_value(caps["bounding"].clone()).unwrap();
    assert!(bounding.contains(&"CAP_NET_ADMIN".to_string()));
    assert!(!bounding.contains(&"CAP_KILL".to_string()));

    let sc = v1::LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    let spec = build_with(v1::ContainerConfig {
        linux: Some(v1::LinuxContainerConfig {
            security_context: Some(sc),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.seccomp().is_none());

    let bad = v1::LinuxContainerSecurityContext {
        capabilities: Some(v1::Capability {
            add_capabilities: vec!["CAP_NOPE".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = build_with(v1::ContainerConfig {
        linux: Some(v1::LinuxContainerConfig {
            security_context: Some(bad),
            ..Default::default()
        }),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("CAP_NOPE"));
}

#[test]
fn seccomp_profiles() {
    let sc = |t: v1::security_profile::ProfileType, r: &str| v1::LinuxContainerSecurityContext {
        seccomp: Some(v1::SecurityProfile {
            profile_type: t as i32,
            localhost_ref: r.into(),
        }),
        ..Default::default()
    };
    let with = |s| {
        build_with(v1::ContainerConfig {
            linux: Some(v1::LinuxContainerConfig {
                security_context: Some(s),
                ..Default::default()
            }),
            ..Default::default()
        })
    };
    let spec = with(sc(v1::security_profile::ProfileType::RuntimeDefault, "")).unwrap();
    let seccomp = serde_json::to_value(spec.linux().as_ref().unwrap().seccomp()).unwrap();
    let denied = seccomp["syscalls"][0]["names"].as_array().unwrap();
    assert!(denied.contains(&json!("mount")) && denied.contains(&json!("kexec_load")));
    assert!(with(sc(v1::security_profile::ProfileType::Unconfined, ""))
        .unwrap()
        .linux()
        .as_ref()
        .unwrap()
        .seccomp()
        .is_none());
    let err = with(sc(
        v1::security_profile::ProfileType::Localhost,
        "/no/such/profile.json",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("/no/such/profile.json"));
}

#[test]
fn mounts_and_bad_input() {
    let config = v1::ContainerConfig {
        mounts: vec![v1::Mount {
            container_path: "/data".into(),
            host_path: "/tmp".into(),
            readonly: true,
            propagation: v1::MountPropagation::PropagationHostToContainer as i32,
            ..Default::default()
        }],
        ..Default::default()
    };
    let spec = build_with(config).unwrap();
    let mounts = serde_json::to_value(spec.mounts()).unwrap();
    let data = mounts
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == "/data")
        .unwrap();
    assert_eq!(data["options"], json!(["rbind", "rslave", "ro"]));
    assert!(mounts
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["destination"] == "/etc/hosts"));

    let relative = v1::ContainerConfig {
        mounts: vec![v1::Mount {
            container_path: "data".into(),
            host_path: "/tmp".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(build_with(relative).is_err());
    let no_command = ImageConfig::default();
    let rootfs = tempfile::tempdir().unwrap();
    let err = build(&Input {
        id: "c",
        config: &v1::ContainerConfig::default(),
        pod: &pod(),
        image: &no_command,
        rootfs: rootfs.path(),
        min_oom_score_adj: 0,
    })
    .unwrap_err();
    assert!(err.to_string().contains("no command"));
}
