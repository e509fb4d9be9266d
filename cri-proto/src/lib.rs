//! Kubernetes Container Runtime Interface (CRI) v1 for peapod.
//!
//! The messages and gRPC stubs are generated at build time from
//! `proto/api.proto`, a wire-identical copy of upstream's `runtime.v1` API.
//! The daemon implements [`v1::runtime_service_server::RuntimeService`] and
//! [`v1::image_service_server::ImageService`]; the `peapod` CLI and the tests
//! talk to it through [`v1::runtime_service_client::RuntimeServiceClient`] and
//! [`v1::image_service_client::ImageServiceClient`], usually over a channel
//! from [`connect_unix`].

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tonic::transport::{Channel, Endpoint};

/// The `runtime.v1` protobuf package: messages, enums and gRPC stubs.
pub mod v1 {
    // Generated code: its style is prost's and tonic's, not ours.
    #![allow(clippy::all, clippy::pedantic)]

    tonic::include_proto!("runtime.v1");

    /// Encoded `FileDescriptorSet` of `api.proto` (without comments), for
    /// gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/runtime.v1.descriptor.bin"));
}

/// Value a runtime reports as `VersionResponse.runtime_api_version`.
pub const CRI_API_VERSION: &str = "v1";

/// Opens a gRPC channel to a CRI server listening on the unix socket `path`.
///
/// The connection is established before this returns, so a missing socket or
/// a server that is not accepting shows up here rather than on the first call.
pub async fn connect_unix(path: &Path) -> Result<Channel, tonic::transport::Error> {
    // tonic dials `unix:` endpoints itself; a non-UTF-8 path is rejected by
    // `from_shared` as an invalid URI.
    let mut uri = b"unix://".to_vec();
    uri.extend_from_slice(path.as_os_str().as_bytes());
    Endpoint::from_shared(uri)?.connect().await
}
