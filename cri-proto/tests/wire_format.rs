//! Wire facts of the generated types, checked against byte strings written
//! out by hand from upstream's field numbers and types. If api.proto drifts
//! from upstream (a renumbered field, int64 turned into sint64, a map turned
//! into a repeated message...), these bytes stop matching.

use std::collections::HashMap;

use prost::Message;
use prost_types::FileDescriptorSet;

use peapod_cri_proto::v1::{
    self, image_service_server::ImageServiceServer, runtime_service_server::RuntimeServiceServer,
    security_profile::ProfileType,
};
use tonic::server::NamedService;

#[test]
fn pod_sandbox_config_metadata_is_field_1() {
    let config = v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: "a".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    // 0x0a = field 1, length-delimited; inside, name is field 1 as well.
    assert_eq!(config.encode_to_vec(), [0x0a, 0x03, 0x0a, 0x01, b'a']);
}

#[test]
fn pod_sandbox_config_labels_are_a_string_map_at_field_6() {
    let config = v1::PodSandboxConfig {
        labels: HashMap::from([("k".to_string(), "v".to_string())]),
        ..Default::default()
    };
    // A map entry is a nested message with key = 1 and value = 2.
    assert_eq!(
        config.encode_to_vec(),
        [0x32, 0x06, 0x0a, 0x01, b'k', 0x12, 0x01, b'v']
    );
}

#[test]
fn linux_container_resources_numbers_and_int64_encoding() {
    let memory = v1::LinuxContainerResources {
        memory_limit_in_bytes: 1,
        ..Default::default()
    };
    // memory_limit_in_bytes is field 4, varint.
    assert_eq!(memory.encode_to_vec(), [0x20, 0x01]);

    let oom = v1::LinuxContainerResources {
        oom_score_adj: -1,
        ..Default::default()
    };
    // oom_score_adj is field 5 and a plain int64, so -1 takes ten bytes
    // (a sint64 would have been zigzag-encoded into one).
    let mut expected = vec![0x28];
    expected.extend([0xff; 9]);
    expected.push(0x01);
    assert_eq!(oom.encode_to_vec(), expected);

    let unified = v1::LinuxContainerResources {
        unified: HashMap::from([("a".to_string(), "b".to_string())]),
        memory_swap_limit_in_bytes: 2,
        ..Default::default()
    };
    assert_eq!(
        unified.encode_to_vec(),
        [0x4a, 0x06, 0x0a, 0x01, b'a', 0x12, 0x01, b'b', 0x50, 0x02]
    );
}

#[test]
fn sandbox_security_context_packs_groups_and_wraps_run_as_group() {
    let ctx = v1::LinuxSandboxSecurityContext {
        supplemental_groups: vec![1, 2],
        run_as_group: Some(v1::Int64Value { value: 0 }),
        supplemental_groups_policy: v1::SupplementalGroupsPolicy::Strict as i32,
        ..Default::default()
    };
    assert_eq!(
        ctx.encode_to_vec(),
        [
            0x2a, 0x02, 0x01, 0x02, // supplemental_groups = 5, packed
            0x42, 0x00, // run_as_group = 8, present even though the value is 0
            0x58, 0x01, // supplemental_groups_policy = 11
        ]
    );
}

#[test]
fn high_field_numbers_use_two_byte_tags() {
    let spec = v1::ImageSpec {
        user_specified_image: "x".into(),
        image_ref: "y".into(),
        ..Default::default()
    };
    // user_specified_image = 18 and image_ref = 20.
    assert_eq!(
        spec.encode_to_vec(),
        [0x92, 0x01, 0x01, b'x', 0xa2, 0x01, 0x01, b'y']
    );

    let config = v1::ContainerConfig {
        cdi_devices: vec![v1::CdiDevice { name: "g".into() }],
        stop_signal: v1::Signal::Sigkill as i32,
        ..Default::default()
    };
    // CDI_devices = 17, stop_signal = 18 with SIGKILL = 13.
    assert_eq!(
        config.encode_to_vec(),
        [0x8a, 0x01, 0x03, 0x0a, 0x01, b'g', 0x90, 0x01, 0x0d]
    );
}

#[test]
fn container_status_user_decodes_from_upstream_bytes() {
    // ContainerStatus.user (18) -> ContainerUser.linux (1) -> uid (1) = 1000,
    // followed by stop_signal (19) = SIGTERM (23).
    let bytes = [
        0x92, 0x01, 0x05, 0x0a, 0x03, 0x08, 0xe8, 0x07, 0x98, 0x01, 0x17,
    ];
    let status = v1::ContainerStatus::decode(&bytes[..]).unwrap();
    assert_eq!(status.stop_signal(), v1::Signal::Sigterm);
    let user = status.user.and_then(|u| u.linux).unwrap();
    assert_eq!(user.uid, 1000);
}

#[test]
fn newer_messages_have_upstream_numbers() {
    let update = v1::UpdatePodSandboxResourcesRequest {
        pod_sandbox_id: "p".into(),
        resources: Some(v1::LinuxContainerResources {
            cpu_shares: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        update.encode_to_vec(),
        [0x0a, 0x01, b'p', 0x1a, 0x02, 0x18, 0x02]
    );

    let config = v1::RuntimeConfigResponse {
        linux: Some(v1::LinuxRuntimeConfiguration {
            cgroup_driver: v1::CgroupDriver::Cgroupfs as i32,
        }),
    };
    assert_eq!(config.encode_to_vec(), [0x0a, 0x02, 0x08, 0x01]);

    let fs = v1::ImageFsInfoResponse {
        container_filesystems: vec![v1::FilesystemUsage {
            timestamp: 1,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert_eq!(fs.encode_to_vec(), [0x12, 0x02, 0x08, 0x01]);

    let psi = v1::PsiData {
        avg10: 1.5,
        ..Default::default()
    };
    let mut expected = vec![0x11]; // Avg10 = 2, 64-bit double
    expected.extend(1.5f64.to_le_bytes());
    assert_eq!(psi.encode_to_vec(), expected);

    let exec = v1::ExecRequest {
        audit_request_id: "r".into(),
        ..Default::default()
    };
    assert_eq!(exec.encode_to_vec(), [0x3a, 0x01, b'r']);
}

#[test]
fn enum_numbers_and_names_match_upstream() {
    assert_eq!(v1::Signal::RuntimeDefault as i32, 0);
    assert_eq!(v1::Signal::Sigkill as i32, 13);
    assert_eq!(v1::Signal::Sigrtmax as i32, 65);
    assert_eq!(v1::Signal::Sigrtmaxminus1.as_str_name(), "SIGRTMAXMINUS1");
    assert_eq!(v1::NamespaceMode::Target as i32, 3);
    assert_eq!(v1::ContainerState::ContainerUnknown as i32, 3);
    assert_eq!(v1::PodSandboxState::SandboxNotready as i32, 1);
    assert_eq!(v1::MountPropagation::PropagationBidirectional as i32, 2);
    assert_eq!(v1::ContainerEventType::ContainerDeletedEvent as i32, 3);
    assert_eq!(v1::MetricType::Gauge as i32, 1);
    assert_eq!(v1::CgroupDriver::Systemd as i32, 0);
    assert_eq!(v1::Protocol::Sctp as i32, 2);
    assert_eq!(ProfileType::Localhost as i32, 2);
    assert_eq!(ProfileType::RuntimeDefault.as_str_name(), "RuntimeDefault");
    assert_eq!(v1::SupplementalGroupsPolicy::Merge.as_str_name(), "Merge");
}

#[test]
fn service_names_match_upstream() {
    assert_eq!(
        <RuntimeServiceServer<()> as NamedService>::NAME,
        "runtime.v1.RuntimeService"
    );
    assert_eq!(
        <ImageServiceServer<()> as NamedService>::NAME,
        "runtime.v1.ImageService"
    );
}

#[test]
fn descriptor_set_lists_every_upstream_rpc() {
    let set = FileDescriptorSet::decode(v1::FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "runtime.v1")
        .unwrap();
    let rpcs = |service: &str| -> Vec<(String, bool)> {
        let service = file.service.iter().find(|s| s.name() == service).unwrap();
        service
            .method
            .iter()
            .map(|m| (m.name().to_string(), m.server_streaming()))
            .collect()
    };

    let streamed = |names: &[&str]| -> Vec<(String, bool)> {
        names.iter().map(|n| (n.to_string(), true)).collect()
    };
    let runtime = rpcs("RuntimeService");
    assert_eq!(runtime.len(), 35);
    for needed in [
        "RuntimeConfig",
        "UpdatePodSandboxResources",
        "ListMetricDescriptors",
        "ListPodSandboxMetrics",
        "CheckpointContainer",
    ] {
        assert!(runtime.contains(&(needed.to_string(), false)), "{needed}");
    }
    for stream in streamed(&[
        "GetContainerEvents",
        "StreamPodSandboxes",
        "StreamContainers",
        "StreamContainerStats",
        "StreamPodSandboxStats",
        "StreamPodSandboxMetrics",
    ]) {
        assert!(runtime.contains(&stream), "{}", stream.0);
    }
    assert_eq!(runtime.iter().filter(|(_, s)| *s).count(), 6);

    let image = rpcs("ImageService");
    assert_eq!(image.len(), 6);
    assert!(image.contains(&("StreamImages".to_string(), true)));
}

#[test]
fn descriptor_set_keeps_debug_redact_on_credentials() {
    // prost-types drops FieldOptions it does not model, so look for the raw
    // encoding instead: `options` (field 8 of FieldDescriptorProto) holding
    // just `debug_redact = true` (field 16 of FieldOptions).
    let redacted_options = [0x42, 0x03, 0x80, 0x01, 0x01];
    let count = v1::FILE_DESCRIPTOR_SET
        .windows(redacted_options.len())
        .filter(|w| *w == redacted_options)
        .count();
    // AuthConfig: password, auth, identity_token, registry_token.
    assert_eq!(count, 4);
}
