//! The runtime's error type: every failure names what was being done and to what.
use std::path::PathBuf;

use crate::cgroups::CgroupError;
use crate::seccomp::SeccompError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid bundle {bundle}: {reason}")]
    InvalidSpec { bundle: PathBuf, reason: String },

    #[error("invalid container id {0:?}: use 1 to 1024 characters from [A-Za-z0-9_.+-], not starting with '.'")]
    InvalidId(String),

    #[error("container {0:?} already exists")]
    Exists(String),

    #[error("container {0:?} does not exist")]
    NotFound(String),

    #[error("container {id:?} is {status}: {action}")]
    WrongState {
        id: String,
        status: String,
        action: String,
    },

    #[error("unknown signal {0:?}")]
    InvalidSignal(String),

    #[error("namespace {kind} path {path}: {reason}")]
    Namespace {
        kind: String,
        path: PathBuf,
        reason: String,
    },

    /// A failure inside the container's init or exec'd process before it ran the user's program,
    /// reported back over the sync socket.
    #[error("{0}")]
    Child(String),

    #[error("{context}: {source}")]
    Sys {
        context: String,
        #[source]
        source: nix::Error,
    },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },

    #[error(transparent)]
    Cgroup(#[from] CgroupError),

    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// Attach a human description of the failed step to low-level errors.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, nix::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Sys {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: what(),
            source,
        })
    }
}

impl<T> Context<T> for std::result::Result<T, serde_json::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Json {
            context: what(),
            source,
        })
    }
}
