//! Is pod networking usable? The kubelet will not schedule pods that need a
//! network until the runtime reports `NetworkReady`, so this looks for what a
//! CNI ADD would need: a network configuration in the conf dir and every
//! plugin binary it names.
//!
//! The configuration is found and read exactly as a pod's CNI ADD would find it
//! ([`crate::sandbox::cni`]), so "ready" means what it says.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::sandbox::cni;

/// The reason CRI reports while networking is not usable (the kubelet and
/// crictl know this string from containerd and CRI-O).
pub const NOT_READY_REASON: &str = "NetworkPluginNotReady";

/// What the CNI check found; serialized into `Status` verbose info.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CniStatus {
    pub ready: bool,
    /// Why networking is not ready, in words; empty when ready.
    pub message: String,
    /// The configuration file that would be used.
    pub config_file: Option<PathBuf>,
    /// The network's `name`.
    pub network: Option<String>,
    /// Plugin types the configuration chains, in order.
    pub plugins: Vec<String>,
}

impl CniStatus {
    fn not_ready(message: String) -> CniStatus {
        CniStatus {
            ready: false,
            message,
            config_file: None,
            network: None,
            plugins: Vec::new(),
        }
    }
}

/// Checks `conf_dir` for a usable network and `bin_dirs` for its plugins.
/// Reads a few small files; call it from a blocking context.
pub fn check(conf_dir: &Path, bin_dirs: &[PathBuf]) -> CniStatus {
    let network = match cni::load_network(conf_dir) {
        Ok(network) => network,
        Err(e) => return CniStatus::not_ready(e.to_string()),
    };
    let missing = cni::missing_plugins(&network, bin_dirs);
    let message = if missing.is_empty() {
        String::new()
    } else {
        format!(
            "cni plugin(s) {} of network {:?} ({}) not found in {}",
            missing.join(", "),
            network.name,
            network.source.display(),
            join_paths(bin_dirs)
        )
    };
    CniStatus {
        ready: missing.is_empty(),
        message,
        plugins: cni::plugins_needed(&network).map(str::to_string).collect(),
        config_file: Some(network.source),
        network: Some(network.name),
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    const CONFLIST: &str = r#"{"cniVersion":"1.0.0","name":"peapod","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#;

    #[test]
    fn empty_dir_is_not_ready() {
        let conf = tempfile::tempdir().unwrap();
        let status = check(conf.path(), &[]);
        assert!(!status.ready);
        assert!(
            status.message.contains("no CNI network config"),
            "{status:?}"
        );
    }

    #[test]
    fn missing_dir_is_not_ready() {
        let status = check(Path::new("/nonexistent/peapod/cni"), &[]);
        assert!(!status.ready);
        assert!(status.message.contains("/nonexistent/peapod/cni"));
    }

    #[test]
    fn conflist_with_all_plugins_is_ready() {
        let (conf, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(conf.path().join("10-peapod.conflist"), CONFLIST).unwrap();
        for plugin in ["loopback", "bridge", "portmap"] {
            executable(&bin.path().join(plugin));
        }
        let status = check(
            conf.path(),
            &[PathBuf::from("/nonexistent"), bin.path().into()],
        );
        assert!(status.ready, "{status:?}");
        assert_eq!(status.network.as_deref(), Some("peapod"));
        assert_eq!(status.plugins, ["loopback", "bridge", "portmap"]);
    }

    #[test]
    fn missing_or_non_executable_plugin_is_named() {
        let (conf, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(conf.path().join("10-peapod.conflist"), CONFLIST).unwrap();
        executable(&bin.path().join("loopback"));
        executable(&bin.path().join("bridge"));
        std::fs::write(bin.path().join("portmap"), "not executable").unwrap();
        let status = check(conf.path(), &[bin.path().into()]);
        assert!(!status.ready);
        assert!(status.message.contains("portmap"), "{status:?}");
        assert!(!status.message.contains("bridge,"), "{status:?}");
    }

    #[test]
    fn first_parseable_file_wins_and_single_plugin_conf_works() {
        let (conf, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(conf.path().join("00-broken.conf"), "{not json").unwrap();
        std::fs::write(
            conf.path().join("10-single.conf"),
            r#"{"name":"single","type":"loopback"}"#,
        )
        .unwrap();
        std::fs::write(conf.path().join("20-other.conflist"), CONFLIST).unwrap();
        executable(&bin.path().join("loopback"));
        let status = check(conf.path(), &[bin.path().into()]);
        assert!(status.ready, "{status:?}");
        assert_eq!(status.network.as_deref(), Some("single"));
    }

    #[test]
    fn plugin_types_cannot_be_paths() {
        let (conf, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(
            conf.path().join("10-escape.conflist"),
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[{"type":"../../bin/sh"}]}"#,
        )
        .unwrap();
        let status = check(conf.path(), &[bin.path().into()]);
        assert!(!status.ready);
        assert!(status.message.contains("not a binary name"), "{status:?}");
    }
}
