//! Network configuration files: finding, reading and writing them.
//!
//! As libcni does, the lexically first file of the conf dir ending in .conflist, .conf or
//! .json is the network. A single-plugin file (.conf/.json) is read as a list of one.
//! Files that do not parse are skipped with a warning, so a stray file does not take the
//! node's network down.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::CniError;

const EXTENSIONS: [&str; 3] = ["conflist", "conf", "json"];

/// A network: the plugins to run, in order, with their configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkList {
    pub name: String,
    pub cni_version: String,
    /// `disableCheck` of the conflist: CHECK is skipped.
    pub disable_check: bool,
    /// Each plugin's configuration object (it has a "type").
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from.
    pub source: PathBuf,
}

impl NetworkList {
    /// The plugin's type, i.e. the name of its binary.
    pub fn plugin_type(plugin: &Map<String, Value>) -> &str {
        plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The config files in `dir`, in the order they are considered.
pub(super) fn candidates(dir: &Path) -> Result<Vec<PathBuf>, CniError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CniError::ReadConfig {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| EXTENSIONS.contains(&ext))
                && path.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The network of `dir`: its first config file that parses.
pub(super) fn load(dir: &Path) -> Result<NetworkList, CniError> {
    let mut last_error = None;
    for path in candidates(dir)? {
        match read(&path) {
            Ok(list) => return Ok(list),
            Err(e) => {
                tracing::warn!(error = %e, "skipping CNI config file");
                last_error = Some(e);
            }
        }
    }
    Err(last_error.unwrap_or_else(|| CniError::NoConfig(dir.to_path_buf())))
}

fn read(path: &Path) -> Result<NetworkList, CniError> {
    let text = fs::read(path).map_err(|source| CniError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |reason: String| CniError::InvalidConfig {
        path: path.to_path_buf(),
        reason,
    };
    let value: Value = serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(invalid("not a JSON object".to_string()));
    };
    let is_list = path.extension().is_some_and(|ext| ext == "conflist");
    let string = |object: &Map<String, Value>, key: &str| {
        object.get(key).and_then(Value::as_str).map(str::to_string)
    };
    let name = string(&object, "name").ok_or_else(|| invalid("no \"name\"".to_string()))?;
    let cni_version = string(&object, "cniVersion").unwrap_or_else(|| "0.1.0".to_string());
    let (disable_check, plugins) = if is_list {
        let disable_check = object.get("disableCheck").and_then(Value::as_bool) == Some(true);
        let plugins = match object.remove("plugins") {
            Some(Value::Array(plugins)) if !plugins.is_empty() => plugins,
            _ => return Err(invalid("\"plugins\" is missing or empty".to_string())),
        };
        let plugins = plugins
            .into_iter()
            .map(|plugin| match plugin {
                Value::Object(plugin) => Ok(plugin),
                _ => Err(invalid("a plugin is not a JSON object".to_string())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        (disable_check, plugins)
    } else {
        (false, vec![object])
    };
    for plugin in &plugins {
        let kind = NetworkList::plugin_type(plugin);
        if kind.is_empty() || kind.contains('/') || kind.starts_with('.') {
            return Err(invalid(format!(
                "plugin type {kind:?} is not a binary name"
            )));
        }
    }
    Ok(NetworkList {
        name,
        cni_version,
        disable_check,
        plugins,
        source: path.to_path_buf(),
    })
}

/// The network written when the conf dir has none: a bridge with host-local addresses,
/// masquerading for traffic leaving the node, and host ports through portmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNetwork {
    pub name: String,
    /// Linux bridge name (at most 15 bytes).
    pub bridge: String,
    /// IPv4 subnet in CIDR form; the bridge gets its first address (the gateway).
    pub subnet: String,
    /// host-local's lease directory; `None` is the plugin's default /var/lib/cni/networks.
    pub ipam_data_dir: Option<PathBuf>,
    /// The file name inside the conf dir.
    pub file_name: String,
}

impl Default for DefaultNetwork {
    fn default() -> Self {
        DefaultNetwork {
            name: "peapod".to_string(),
            bridge: "peapod0".to_string(),
            subnet: "10.88.0.0/16".to_string(),
            ipam_data_dir: None,
            file_name: "10-peapod.conflist".to_string(),
        }
    }
}

impl DefaultNetwork {
    pub fn to_conflist(&self) -> Value {
        let mut ipam = json!({
            "type": "host-local",
            "ranges": [[{ "subnet": self.subnet }]],
            "routes": [{ "dst": "0.0.0.0/0" }],
        });
        if let Some(dir) = &self.ipam_data_dir {
            ipam["dataDir"] = json!(dir);
        }
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": ipam,
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
            ],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_valid_file_wins_and_single_confs_are_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| fs::write(dir.path().join(name), text).unwrap();
        assert!(matches!(load(dir.path()), Err(CniError::NoConfig(_))));

        write(
            "30-single.conf",
            r#"{"cniVersion":"0.4.0","name":"one","type":"bridge"}"#,
        );
        write("README", "not a config");
        let list = load(dir.path()).unwrap();
        assert_eq!(list.name, "one");
        assert_eq!(list.cni_version, "0.4.0");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(NetworkList::plugin_type(&list.plugins[0]), "bridge");

        write("20-broken.conflist", "{");
        write(
            "10-list.conflist",
            r#"{"cniVersion":"1.0.0","name":"net","disableCheck":true,
                "plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        );
        let list = load(dir.path()).unwrap();
        assert_eq!(list.name, "net");
        assert!(list.disable_check);
        assert_eq!(list.plugins.len(), 2);

        fs::remove_file(dir.path().join("10-list.conflist")).unwrap();
        assert_eq!(load(dir.path()).unwrap().name, "one", "broken file skipped");
    }

    #[test]
    fn plugin_types_must_be_binary_names() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("a.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
        )
        .unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(CniError::InvalidConfig { .. })
        ));
    }

    #[test]
    fn default_network_shape() {
        let conf = DefaultNetwork::default().to_conflist();
        assert_eq!(conf["plugins"][0]["bridge"], "peapod0");
        assert_eq!(
            conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.88.0.0/16"
        );
        assert!(conf["plugins"][0]["ipam"].get("dataDir").is_none());
        assert_eq!(conf["plugins"][1]["capabilities"]["portMappings"], true);
    }
}
