//! Is pod networking usable? The kubelet will not schedule pods that need a
//! network until the runtime reports `NetworkReady`, so this looks for what a
//! CNI ADD would need: a network configuration in the conf dir and every
//! plugin binary it names.
//!
//! Like libcni, the configuration used is the first `*.conf`, `*.conflist` or
//! `*.json` file in lexical order that parses.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

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
    let mut files: Vec<PathBuf> = match std::fs::read_dir(conf_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("conf" | "conflist" | "json")
                )
            })
            .collect(),
        Err(e) => {
            return CniStatus::not_ready(format!(
                "cni config dir {} cannot be read: {e}",
                conf_dir.display()
            ))
        }
    };
    files.sort();

    let mut skipped = Vec::new();
    for file in files {
        match read_network(&file) {
            Ok((network, plugins)) => {
                let missing: Vec<&str> = plugins
                    .iter()
                    .filter(|p| find_plugin(p, bin_dirs).is_none())
                    .map(String::as_str)
                    .collect();
                let message = if missing.is_empty() {
                    String::new()
                } else {
                    format!(
                        "cni plugin(s) {} of network {network:?} ({}) not found in {}",
                        missing.join(", "),
                        file.display(),
                        join_paths(bin_dirs)
                    )
                };
                return CniStatus {
                    ready: missing.is_empty(),
                    message,
                    config_file: Some(file),
                    network: Some(network),
                    plugins,
                };
            }
            Err(reason) => {
                tracing::debug!(file = %file.display(), %reason, "skipping cni config");
                skipped.push(format!("{}: {reason}", file.display()));
            }
        }
    }
    let mut message = format!("no network config found in {}", conf_dir.display());
    if !skipped.is_empty() {
        message.push_str(&format!(" (unusable: {})", skipped.join("; ")));
    }
    CniStatus::not_ready(message)
}

/// The network name and plugin types of a `.conflist` (a `plugins` chain) or
/// a single-plugin `.conf`.
fn read_network(file: &Path) -> Result<(String, Vec<String>), String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let name = value["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or("missing \"name\"")?
        .to_string();
    let plugin_type = |plugin: &serde_json::Value| {
        plugin["type"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| "a plugin without \"type\"".to_string())
    };
    let plugins = match value.get("plugins") {
        Some(serde_json::Value::Array(list)) if !list.is_empty() => {
            list.iter().map(plugin_type).collect::<Result<_, _>>()?
        }
        Some(_) => return Err("\"plugins\" must be a non-empty list".into()),
        None => vec![plugin_type(&value)?],
    };
    Ok((name, plugins))
}

/// The first executable file named `plugin` in `bin_dirs`.
pub fn find_plugin(plugin: &str, bin_dirs: &[PathBuf]) -> Option<PathBuf> {
    // A type is a file name, never a path: "../x" must not escape the bin dirs.
    if plugin.contains('/') {
        return None;
    }
    bin_dirs.iter().map(|dir| dir.join(plugin)).find(|path| {
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
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
        assert!(status.message.contains("no network config"), "{status:?}");
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
        executable(&bin.path().join("bridge"));
        executable(&bin.path().join("portmap"));
        let status = check(
            conf.path(),
            &[PathBuf::from("/nonexistent"), bin.path().into()],
        );
        assert!(status.ready, "{status:?}");
        assert_eq!(status.network.as_deref(), Some("peapod"));
        assert_eq!(status.plugins, ["bridge", "portmap"]);
    }

    #[test]
    fn missing_or_non_executable_plugin_is_named() {
        let (conf, bin) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(conf.path().join("10-peapod.conflist"), CONFLIST).unwrap();
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
        assert_eq!(find_plugin("../../bin/sh", &[PathBuf::from("/usr")]), None);
    }
}
