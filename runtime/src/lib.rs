//! peapod's low-level runtime: turns an OCI runtime bundle into a running, isolated process.
//!
//! The path of a container, in the order the code runs:
//! [`spec`] reads the bundle, [`namespaces`] plans what to create and join, [`container`] makes
//! the state directory and cgroup and [`clone`]s the init, whose life until `execve` is in
//! [`init`]: [`mounts`] and [`devices`] build its filesystem (every path resolved through
//! [`beneath`]), [`process`] and [`capabilities`] set who it is, [`seccomp`] what it may call.
//! [`exec`] runs further processes inside a live container.
pub mod beneath;
pub mod capabilities;
pub mod cgroups;
pub mod clone;
pub mod console;
pub mod container;
pub mod crilog;
pub mod devices;
pub mod error;
pub mod exec;
pub mod hooks;
pub mod init;
pub mod memory;
pub mod mounts;
pub mod namespaces;
pub mod pidfd;
pub mod process;
pub mod seccomp;
pub mod shim_protocol;
pub mod signal;
pub mod spec;
pub mod state;
pub mod stdio;
pub mod sync;

pub use container::{Container, CreateOptions};
pub use error::{Error, Result};
pub use exec::ExecOptions;
pub use state::Status;
pub use stdio::Stdio;
