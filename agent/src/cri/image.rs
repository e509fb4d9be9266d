//! The CRI ImageService, backed by the rootfs image store.
//!
//! Image IDs are config digests (`sha256:…`), as containerd reports them:
//! `PullImageResponse.image_ref`, `Image.id` and later `Container.image_id`
//! must agree for the kubelet to match images with containers.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use peapod_cri_proto::v1::{self, image_service_server::ImageService};
use peapod_rootfs::{AuthConfig, ImageRecord, RootfsStore};
use tonic::{Request, Response, Status};

use super::errors::{image_error, missing};
use crate::daemon::Daemon;

/// Images per `StreamImages` message, keeping each well under gRPC's 4 MiB.
const STREAM_PAGE: usize = 256;

pub struct ImageApi {
    daemon: Arc<Daemon>,
}

impl ImageApi {
    pub fn new(daemon: Arc<Daemon>) -> ImageApi {
        ImageApi { daemon }
    }

    /// All images, or the one a filter names (by reference, ID or ID prefix).
    async fn filtered(&self, filter: Option<v1::ImageFilter>) -> Result<Vec<v1::Image>, Status> {
        let wanted = filter
            .and_then(|f| f.image)
            .map(|spec| spec.image)
            .filter(|image| !image.trim().is_empty());
        let records = match wanted {
            Some(image) => self
                .daemon
                .images
                .image_status(&image)
                .await
                .map_err(image_error)?
                .into_iter()
                .collect(),
            None => self
                .daemon
                .images
                .list_images()
                .await
                .map_err(image_error)?,
        };
        Ok(records.iter().map(cri_image).collect())
    }
}

/// The image name a request carries, which every image RPC requires.
fn image_name(spec: Option<v1::ImageSpec>) -> Result<String, Status> {
    spec.map(|s| s.image.trim().to_string())
        .filter(|image| !image.is_empty())
        .ok_or_else(|| missing("image"))
}

fn cri_image(record: &ImageRecord) -> v1::Image {
    let (uid, username) = record.user();
    v1::Image {
        id: record.id.to_string(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid: uid.map(|value| v1::Int64Value { value }),
        username,
        spec: Some(v1::ImageSpec {
            image: record.id.to_string(),
            ..Default::default()
        }),
        pinned: false,
    }
}

fn rootfs_auth(auth: v1::AuthConfig) -> AuthConfig {
    AuthConfig {
        username: auth.username,
        password: auth.password,
        auth: auth.auth,
        server_address: auth.server_address,
        identity_token: auth.identity_token,
        registry_token: auth.registry_token,
    }
}

/// The `info` map of a verbose ImageStatus: the image's OCI config, the way
/// `crictl inspecti` shows it for containerd.
fn verbose_info(record: &ImageRecord) -> Result<std::collections::HashMap<String, String>, Status> {
    let info = serde_json::json!({
        "id": record.id.to_string(),
        "chainID": record.chain_ids().last().map(ToString::to_string),
        "imageSpec": {
            "architecture": record.architecture,
            "os": record.os,
            "config": record.config,
            "rootfs": { "type": "layers", "diff_ids": record.diff_ids },
        },
        "layers": record.layers,
        "manifests": record.manifests,
    });
    let text = serde_json::to_string(&info)
        .map_err(|e| Status::internal(format!("encoding image info: {e}")))?;
    Ok([("info".to_string(), text)].into())
}

/// Runs `RootfsStore::pull` to completion on a blocking-pool thread of the
/// current runtime.
///
/// tonic needs every RPC future to be `Send`, and today's compiler cannot
/// prove that of the store's pull future (its parallel layer downloads are a
/// stream of closures borrowing locals, which trips rustc's higher-ranked
/// lifetime check: "implementation of `FnOnce` is not general enough").
/// `block_on` does not need `Send`, and the pull's own tasks still run on the
/// shared runtime.
async fn pull_on_own_thread(
    store: RootfsStore,
    image: String,
    auth: AuthConfig,
) -> Result<ImageRecord, peapod_rootfs::Error> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(store.pull(&image, &auth))).await?
}

fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

type ImagePages = tokio_stream::Iter<std::vec::IntoIter<Result<v1::StreamImagesResponse, Status>>>;

#[tonic::async_trait]
impl ImageService for ImageApi {
    async fn list_images(
        &self,
        request: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let images = self.filtered(request.into_inner().filter).await?;
        Ok(Response::new(v1::ListImagesResponse { images }))
    }

    type StreamImagesStream = ImagePages;

    async fn stream_images(
        &self,
        request: Request<v1::StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let images = self.filtered(request.into_inner().filter).await?;
        let pages: Vec<_> = images
            .chunks(STREAM_PAGE)
            .map(|page| {
                Ok(v1::StreamImagesResponse {
                    images: page.to_vec(),
                })
            })
            .collect();
        Ok(Response::new(tokio_stream::iter(pages)))
    }

    async fn image_status(
        &self,
        request: Request<v1::ImageStatusRequest>,
    ) -> Result<Response<v1::ImageStatusResponse>, Status> {
        let request = request.into_inner();
        let image = image_name(request.image)?;
        // An unknown image is an answer, not an error: the kubelet asks before
        // every pull and expects an empty status for "not here".
        let Some(record) = self
            .daemon
            .images
            .image_status(&image)
            .await
            .map_err(image_error)?
        else {
            return Ok(Response::new(v1::ImageStatusResponse::default()));
        };
        let info = if request.verbose {
            verbose_info(&record)?
        } else {
            Default::default()
        };
        Ok(Response::new(v1::ImageStatusResponse {
            image: Some(cri_image(&record)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        request: Request<v1::PullImageRequest>,
    ) -> Result<Response<v1::PullImageResponse>, Status> {
        let request = request.into_inner();
        let image = image_name(request.image)?;
        let auth = request.auth.map(rootfs_auth).unwrap_or_default();
        tracing::info!(%image, "pulling image");
        let record = pull_on_own_thread(self.daemon.images.clone(), image.clone(), auth)
            .await
            .map_err(|e| {
                tracing::warn!(%image, error = %e, "pull failed");
                image_error(e)
            })?;
        tracing::info!(%image, id = %record.id, "pulled image");
        Ok(Response::new(v1::PullImageResponse {
            image_ref: record.id.to_string(),
        }))
    }

    async fn remove_image(
        &self,
        request: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        let image = image_name(request.into_inner().image)?;
        // Removing what is not there succeeds: CRI calls must be idempotent.
        let removed = self
            .daemon
            .images
            .remove_image(&image)
            .await
            .map_err(image_error)?;
        tracing::info!(%image, removed, "remove image");
        Ok(Response::new(v1::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _request: Request<v1::ImageFsInfoRequest>,
    ) -> Result<Response<v1::ImageFsInfoResponse>, Status> {
        let usage = self.daemon.images.fs_usage().await.map_err(image_error)?;
        let filesystem = v1::FilesystemUsage {
            timestamp: unix_nanos(SystemTime::now()),
            fs_id: Some(v1::FilesystemIdentifier {
                mountpoint: usage.root.display().to_string(),
            }),
            used_bytes: Some(v1::UInt64Value { value: usage.bytes }),
            inodes_used: Some(v1::UInt64Value {
                value: usage.inodes,
            }),
        };
        Ok(Response::new(v1::ImageFsInfoResponse {
            image_filesystems: vec![filesystem],
            container_filesystems: Vec::new(),
        }))
    }
}
