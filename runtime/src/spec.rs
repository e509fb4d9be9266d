//! Reading and checking a bundle's `config.json` before anything is created.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// A parsed bundle: the spec plus the absolute path of its root filesystem.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub path: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(bundle: &Path) -> Result<Self> {
        let path = std::path::absolute(bundle).map_err(|e| invalid(bundle, e.to_string()))?;
        let config = path.join("config.json");
        let text = std::fs::read(&config)
            .map_err(|e| invalid(&path, format!("cannot read {}: {e}", config.display())))?;
        let spec: Spec = serde_json::from_slice(&text)
            .map_err(|e| invalid(&path, format!("config.json is not a valid OCI spec: {e}")))?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| invalid(&path, "config.json has no root"))?;
        let rootfs = if root.path().is_absolute() {
            root.path().clone()
        } else {
            path.join(root.path())
        };
        if !rootfs.is_dir() {
            return Err(invalid(
                &path,
                format!("root filesystem {} is not a directory", rootfs.display()),
            ));
        }
        let bundle = Bundle { path, spec, rootfs };
        bundle.validate()?;
        Ok(bundle)
    }

    fn validate(&self) -> Result<()> {
        let process = self
            .spec
            .process()
            .as_ref()
            .ok_or_else(|| invalid(&self.path, "config.json has no process"))?;
        if process.args().as_ref().is_none_or(|a| a.is_empty()) {
            return Err(invalid(&self.path, "process.args must not be empty"));
        }
        if !process.cwd().is_absolute() {
            return Err(invalid(&self.path, "process.cwd must be an absolute path"));
        }
        let linux = self
            .spec
            .linux()
            .as_ref()
            .ok_or_else(|| invalid(&self.path, "config.json has no linux section"))?;
        let mut seen = HashSet::new();
        for ns in linux.namespaces().iter().flatten() {
            if !seen.insert(ns.typ()) {
                return Err(invalid(
                    &self.path,
                    format!("namespace {} is listed twice", ns.typ()),
                ));
            }
            if matches!(
                ns.typ(),
                LinuxNamespaceType::User | LinuxNamespaceType::Time
            ) {
                return Err(invalid(
                    &self.path,
                    format!("{} namespaces are not supported", ns.typ()),
                ));
            }
        }
        let has_uts = seen.contains(&LinuxNamespaceType::Uts);
        if self.spec.hostname().as_ref().is_some_and(|h| !h.is_empty()) && !has_uts {
            return Err(invalid(
                &self.path,
                "a hostname needs a private UTS namespace",
            ));
        }
        if let Some(hooks) = self.spec.hooks() {
            let in_container = hooks
                .create_container()
                .iter()
                .chain(hooks.start_container().iter())
                .flatten()
                .count();
            if in_container > 0 {
                return Err(invalid(
                    &self.path,
                    "createContainer and startContainer hooks are not supported yet",
                ));
            }
        }
        for mount in self.spec.mounts().iter().flatten() {
            if !mount.destination().is_absolute() {
                return Err(invalid(
                    &self.path,
                    format!(
                        "mount destination {} is not absolute",
                        mount.destination().display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn invalid(bundle: &Path, reason: impl Into<String>) -> Error {
    Error::InvalidSpec {
        bundle: bundle.to_path_buf(),
        reason: reason.into(),
    }
}
