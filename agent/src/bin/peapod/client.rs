//! Connecting to the daemon's CRI socket.

use std::error::Error;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use peapod_agent::extension::proto::images_client::ImagesClient;
use peapod_cri_proto::v1::image_service_client::ImageServiceClient;
use peapod_cri_proto::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

/// Both CRI services and peapod's own API, over one connection.
pub struct Cri {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
    /// `peapod.v1.Images` (import): only peapodd serves it, other CRI runtimes answer UNIMPLEMENTED.
    pub peapod: ImagesClient<Channel>,
}

impl Cri {
    pub async fn connect(endpoint: &str) -> anyhow::Result<Cri> {
        let socket = socket_path(endpoint)?;
        let channel = peapod_cri_proto::connect_unix(&socket).await.map_err(|e| {
            // tonic wraps the OS error several times over; its root says it all.
            anyhow!(
                "connecting to {}: {} (is peapodd running? see --endpoint)",
                socket.display(),
                root_cause(&e)
            )
        })?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel.clone()),
            peapod: ImagesClient::new(channel),
        })
    }
}

fn root_cause<'a>(error: &'a (dyn Error + 'static)) -> &'a (dyn Error + 'static) {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause
}

/// The socket path of `unix:///path` or a bare `/path`.
fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path = match endpoint.split_once("://") {
        Some(("unix", path)) => path,
        Some((scheme, _)) => {
            bail!("unsupported endpoint {endpoint:?}: only unix:// sockets ({scheme}:// given)")
        }
        None => endpoint,
    };
    if !path.starts_with('/') {
        bail!("endpoint {endpoint:?} must be an absolute socket path, e.g. unix:///run/peapod/peapod.sock");
    }
    Ok(PathBuf::from(path))
}

/// Readable text for a failed call: the server's message and the status code,
/// without tonic's metadata dump.
pub fn rpc_error(rpc: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{rpc}: {} ({:?})", status.message(), status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/peapod/peapod.sock").unwrap(),
            PathBuf::from("/run/peapod/peapod.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
        assert!(socket_path("relative.sock").is_err());
    }
}
