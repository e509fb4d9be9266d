//! The pod cgroup: the parent of the pod's container cgroups.
//!
//! With the cgroupfs driver the kubelet names it in `cgroup_parent` and usually makes it
//! itself (kubepods/<qos>/pod<uid>); then it is the kubelet's and is left alone at
//! removal. Otherwise the sandbox makes it and deletes it again.

use peapod_runtime::cgroups::Cgroup;

use super::{SandboxError, SandboxSpec};

/// Where the pods of callers that name no parent go.
const DEFAULT_PARENT: &str = "/peapod";

pub(super) fn path_for(spec: &SandboxSpec) -> String {
    if spec.cgroup_parent.is_empty() {
        format!("{DEFAULT_PARENT}/{}", spec.id)
    } else {
        spec.cgroup_parent.clone()
    }
}

/// Makes the cgroup unless it exists; returns whether it was made here.
pub(super) fn create(path: &str) -> Result<bool, SandboxError> {
    let cgroup = Cgroup::new(path)?;
    if exists(path)? {
        return Ok(false);
    }
    cgroup.create()?;
    Ok(true)
}

/// Deletes the cgroup (killing anything left inside). Idempotent.
pub(super) fn delete(path: &str) -> Result<(), SandboxError> {
    Ok(Cgroup::new(path)?.delete()?)
}

fn exists(path: &str) -> Result<bool, SandboxError> {
    let relative = path.trim_start_matches('/');
    Ok(Cgroup::hierarchies()?
        .iter()
        .any(|h| h.mountpoint.join(relative).is_dir()))
}
