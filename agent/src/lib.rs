//! peapodd, the CRI node agent: pod sandboxes, containers and images behind the CRI v1 API.
//!
//! - [`config`]: settings from defaults, `/etc/peapod/config.toml` and flags
//! - [`daemon`]: the state all services share ([`daemon::Daemon`])
//! - [`server`]: binding the CRI socket and serving on it
//! - [`pods`] on [`sandbox`]: pod sandboxes without a pause container
//! - [`containers`] on [`containerspec`] and [`shim`]: containers, each owned by a peapod-shim
//! - [`cri`]: the RuntimeService and ImageService implementations
//! - [`streaming`]: the server behind the Exec, Attach and PortForward URLs
//! - [`extension`]: the `peapod.v1` service beside them (image import)
//! - [`network`]: whether CNI networking is usable
pub mod config;
pub mod containers;
pub mod containerspec;
pub mod cri;
pub mod daemon;
pub mod extension;
pub mod netstats;
pub mod network;
pub mod pods;
pub mod records;
pub mod sandbox;
pub mod server;
pub mod shim;
pub mod streaming;
