//! Standard input, output and error for a container process, when the caller wants them wired to
//! something other than its own (the shim passes pipes to capture logs).
use std::os::fd::OwnedFd;

use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout};

use crate::error::{Context, Result};

#[derive(Debug, Default)]
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl Stdio {
    /// In the child: put the descriptors on 0, 1 and 2 (dup2 clears close-on-exec on them).
    pub fn install(&self) -> Result<()> {
        if let Some(fd) = &self.stdin {
            dup2_stdin(fd).context(|| "redirecting stdin".into())?;
        }
        if let Some(fd) = &self.stdout {
            dup2_stdout(fd).context(|| "redirecting stdout".into())?;
        }
        if let Some(fd) = &self.stderr {
            dup2_stderr(fd).context(|| "redirecting stderr".into())?;
        }
        Ok(())
    }
}
