//! Images and copy-on-write root filesystems for peapod.
//!
//! [`RootfsStore`] is the entry point: open it on a root directory (e.g.
//! `/var/lib/peapod/rootfs`), then [`pull`](RootfsStore::pull) or
//! [`import`](RootfsStore::import) images, and
//! [`prepare_snapshot`](RootfsStore::prepare_snapshot) +
//! [`mount_snapshot`](RootfsStore::mount_snapshot) a root filesystem per container.
//!
//! On disk (all JSON written atomically, so it can be read with `cat`):
//! ```text
//! content/sha256/<hex>      verified blobs (manifests, configs, compressed layers)
//! content/ingest/           downloads in progress (never read as content)
//! images/<id>.json          image records
//! layers/<chain-id>/fs      unpacked layers, shared and never modified
//! l/<short>                 short links to layers/*/fs for overlay options
//! snapshots/<key>/          a container's upper and work dirs
//! ```

mod atomic;
pub mod content;
pub mod digest;
mod error;
pub mod images;
mod import;
pub mod layers;
pub mod manifest;
mod pull;
pub mod reference;
pub mod registries;
pub mod snapshots;
mod store;
pub mod unpack;
pub mod usage;

pub use digest::Digest;
pub use error::{Error, Result};
pub use images::ImageRecord;
pub use manifest::{ImageConfig, Platform};
pub use pull::AuthConfig;
pub use reference::Reference;
pub use registries::RegistriesConf;
pub use snapshots::{Mount, SnapshotInfo};
pub use store::{FsUsage, GcStats, RootfsStore, StoreOptions};
pub use usage::Usage;
