//! The CRI gRPC services peapodd serves on its socket.

pub mod errors;
pub mod image;
pub mod lifecycle;
pub mod metrics;
pub mod podresources;
pub mod runtime;
pub mod stats;

pub use image::ImageApi;
pub use runtime::RuntimeApi;
