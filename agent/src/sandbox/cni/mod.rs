//! Pod networking through CNI plugins, exec'd the way the CNI spec describes (as
//! containerd and CRI-O do; there is no CNI library in between).
//!
//! For every pod the `loopback` plugin brings up `lo`, then the plugins of the node's
//! network (the first config file of the conf dir) run in order on `eth0`, each getting
//! the previous one's result as `prevResult`. DEL runs them in reverse order, with the
//! configuration and result cached at ADD ([`cache`]).

mod cache;
mod config;
mod exec;
mod result;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

pub use config::{DefaultNetwork, NetworkList};
pub use result::{CniResult, Interface, IpConfig};

use crate::sandbox::files::write_atomic;
use exec::Invocation;

/// The pod's interface, as in every Kubernetes runtime.
const POD_IFNAME: &str = "eth0";
const LOOPBACK_PLUGIN: &str = "loopback";
const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a CNI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no CNI network config (*.conflist, *.conf, *.json) in {0}")]
    NoConfig(PathBuf),
    #[error("reading CNI config {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid CNI config {path}: {reason}")]
    InvalidConfig { path: PathBuf, reason: String },
    #[error("writing CNI config {path}: {reason}")]
    WriteConfig { path: PathBuf, reason: String },
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("running CNI plugin {plugin}: {source}")]
    Exec {
        plugin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} failed: {msg}{} (code {code})", if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin {
        plugin: String,
        command: &'static str,
        code: u64,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command} failed ({status}): {output}")]
    PluginCrashed {
        plugin: String,
        command: &'static str,
        status: String,
        output: String,
    },
    #[error("CNI plugin {plugin} {command} did not finish within {timeout:?} and was killed")]
    Timeout {
        plugin: String,
        command: &'static str,
        timeout: std::time::Duration,
    },
    #[error("invalid CNI result ({reason}): {result}")]
    InvalidResult { reason: String, result: String },
    #[error("CNI cache {path}: {reason}")]
    Cache { path: PathBuf, reason: String },
    #[error("no network was added for {0}")]
    NotAdded(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// A host port forwarded to the pod (the `portMappings` capability of portmap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub protocol: Protocol,
    pub container_port: u16,
    /// 0: not exposed on the host (kubelet sends such entries; they are skipped).
    pub host_port: u16,
    /// Empty: every host address.
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// One pod's attachment to the network.
#[derive(Debug, Clone, Copy)]
pub struct PodNetwork<'a> {
    /// The sandbox id (CNI_CONTAINERID).
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub port_mappings: &'a [PortMapping],
}

/// The node's CNI set-up: where configs, plugins and the ADD cache live.
#[derive(Debug, Clone)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    plugin_timeout: Duration,
}

impl Default for Cni {
    /// /etc/cni/net.d; /usr/lib/cni (Debian's package) then /opt/cni/bin; the cache in
    /// /var/lib/peapod/cni, which survives restarts of the daemon like the pods do.
    fn default() -> Self {
        Cni::new(
            "/etc/cni/net.d",
            vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
            "/var/lib/peapod/cni",
        )
    }
}

impl Cni {
    pub fn new(
        conf_dir: impl Into<PathBuf>,
        bin_dirs: Vec<PathBuf>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        Cni {
            conf_dir: conf_dir.into(),
            bin_dirs,
            cache_dir: cache_dir.into(),
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }

    /// How long one plugin may run before it is killed (default two minutes, the
    /// kubelet's runtime request timeout).
    pub fn with_plugin_timeout(mut self, timeout: Duration) -> Self {
        self.plugin_timeout = timeout;
        self
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// The network pods get now.
    pub fn network(&self) -> Result<NetworkList, CniError> {
        load_network(&self.conf_dir)
    }

    /// Ok when pods can be networked: a config exists and all its plugins are installed.
    /// The error is the reason for the CRI's NetworkReady=false.
    pub fn status(&self) -> Result<(), String> {
        let network = self.network().map_err(|e| e.to_string())?;
        self.binaries(&network).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Writes `default` into the conf dir if the dir has no config file at all. Returns
    /// whether it wrote it.
    pub fn ensure_default_config(&self, default: &DefaultNetwork) -> Result<bool, CniError> {
        if !config::candidates(&self.conf_dir)?.is_empty() {
            return Ok(false);
        }
        let path = self.conf_dir.join(&default.file_name);
        let error = |reason: String| CniError::WriteConfig {
            path: path.clone(),
            reason,
        };
        std::fs::create_dir_all(&self.conf_dir).map_err(|e| error(e.to_string()))?;
        let text =
            serde_json::to_vec_pretty(&default.to_conflist()).map_err(|e| error(e.to_string()))?;
        write_atomic(&path, &text).map_err(|e| error(e.to_string()))?;
        tracing::info!(path = %path.display(), "wrote the default CNI network config");
        Ok(true)
    }

    /// Attaches the pod to the network. On error whatever was done is deleted again.
    pub fn add(&self, pod: &PodNetwork) -> Result<CniResult, CniError> {
        let network = self.network()?;
        // All plugins must exist before any runs: a missing one is found with nothing
        // to undo.
        self.binaries(&network)?;
        let mut entry = cache::Entry {
            container_id: pod.container_id.to_string(),
            netns: pod.netns.to_path_buf(),
            ifname: POD_IFNAME.to_string(),
            cni_args: cni_args(pod),
            port_mappings: pod
                .port_mappings
                .iter()
                .filter(|m| m.host_port != 0)
                .cloned()
                .collect(),
            network,
            result: None,
        };
        cache::store(&self.cache_dir, &entry)?;
        match self.add_all(&mut entry) {
            Ok(result) => Ok(result),
            Err(e) => {
                if let Err(undo) = self.del(pod.container_id) {
                    tracing::warn!(container = pod.container_id, error = %undo, "CNI DEL after a failed ADD");
                }
                self.forget(pod.container_id);
                Err(e)
            }
        }
    }

    fn add_all(&self, entry: &mut cache::Entry) -> Result<CniResult, CniError> {
        // `lo` and the pod's interface are independent: loopback's ADD runs beside the
        // network's chain instead of before it (each plugin is a process start of its own;
        // this takes one off the pod's start-up time).
        let entry_ref: &cache::Entry = entry;
        let (lo, chain) = self.beside_loopback("ADD", entry_ref, || self.add_chain(entry_ref));
        lo?;
        let raw = chain?;
        entry.result = Some(raw.clone());
        cache::store(&self.cache_dir, entry)?;
        CniResult::parse(raw)
    }

    /// ADD through the network's plugins in order, each given the previous one's result;
    /// the last result.
    fn add_chain(&self, entry: &cache::Entry) -> Result<Value, CniError> {
        let mut previous: Option<Value> = None;
        for plugin in &entry.network.plugins {
            let output = self.run_plugin(
                &entry.network,
                plugin,
                "ADD",
                entry,
                &entry.ifname,
                previous.as_ref(),
            )?;
            let value: Value =
                serde_json::from_slice(&output).map_err(|e| CniError::InvalidResult {
                    reason: e.to_string(),
                    result: String::from_utf8_lossy(&output).into_owned(),
                })?;
            previous = Some(value);
        }
        Ok(previous.unwrap_or_else(|| json!({})))
    }

    /// Detaches the pod from the network, with what ADD used. Idempotent: without a
    /// cache entry nothing was added (or it is deleted already). Every plugin gets its
    /// DEL even when one fails; the entry is kept then so that DEL can be retried.
    pub fn del(&self, container_id: &str) -> Result<(), CniError> {
        let Some(entry) = cache::load(&self.cache_dir, container_id)? else {
            tracing::debug!(
                container = container_id,
                "no CNI cache entry: nothing to delete"
            );
            return Ok(());
        };
        let network = &entry.network;
        // prevResult on DEL came with spec 0.4.0; older plugins do not expect it.
        let prev = entry
            .result
            .as_ref()
            .filter(|_| version_at_least(&network.cni_version, (0, 4)));
        // As at ADD, the loopback network is independent of the chain: both go at once.
        let (lo, chain) = self.beside_loopback("DEL", &entry, || {
            let mut first_error = None;
            for plugin in network.plugins.iter().rev() {
                if let Err(e) = self.run_plugin(network, plugin, "DEL", &entry, &entry.ifname, prev)
                {
                    tracing::warn!(container = container_id, error = %e, "CNI DEL failed");
                    first_error.get_or_insert(e);
                }
            }
            first_error
        });
        let first_error = chain.or(lo.err());
        match first_error {
            Some(e) => Err(e),
            None => cache::remove(&self.cache_dir, container_id),
        }
    }

    /// Asks the plugins whether the pod's network is still as ADD left it (spec 0.4.0
    /// and later; older networks and `disableCheck` ones pass without asking).
    pub fn check(&self, container_id: &str) -> Result<(), CniError> {
        let entry = cache::load(&self.cache_dir, container_id)?
            .ok_or_else(|| CniError::NotAdded(container_id.to_string()))?;
        let Some(result) = &entry.result else {
            return Err(CniError::NotAdded(container_id.to_string()));
        };
        let network = &entry.network;
        if network.disable_check || !version_at_least(&network.cni_version, (0, 4)) {
            return Ok(());
        }
        for plugin in &network.plugins {
            self.run_plugin(
                network,
                plugin,
                "CHECK",
                &entry,
                &entry.ifname,
                Some(result),
            )?;
        }
        Ok(())
    }

    /// Drops the cache entry of a pod that is given up, whether its DEL worked or not.
    pub fn forget(&self, container_id: &str) {
        if let Err(e) = cache::remove(&self.cache_dir, container_id) {
            tracing::warn!(container = container_id, error = %e, "removing CNI cache entry");
        }
    }

    fn binaries(&self, network: &NetworkList) -> Result<Vec<PathBuf>, CniError> {
        plugins_needed(network)
            .map(|plugin| exec::find_plugin(plugin, &self.bin_dirs))
            .collect()
    }

    /// Runs `command` of the loopback network on `lo` in a thread of its own while `chain`
    /// runs here; both results.
    fn beside_loopback<R>(
        &self,
        command: &'static str,
        entry: &cache::Entry,
        chain: impl FnOnce() -> R,
    ) -> (Result<Vec<u8>, CniError>, R) {
        let loopback = loopback_network(&entry.network.cni_version);
        std::thread::scope(|scope| {
            let lo = scope.spawn(|| {
                self.run_plugin(&loopback, &loopback.plugins[0], command, entry, "lo", None)
            });
            let chain = chain();
            let lo = lo.join().unwrap_or_else(|_| {
                Err(CniError::InvalidResult {
                    reason: format!("the loopback {command} thread panicked"),
                    result: String::new(),
                })
            });
            (lo, chain)
        })
    }

    fn run_plugin(
        &self,
        network: &NetworkList,
        plugin: &Map<String, Value>,
        command: &'static str,
        entry: &cache::Entry,
        ifname: &str,
        prev_result: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let binary = exec::find_plugin(NetworkList::plugin_type(plugin), &self.bin_dirs)?;
        let config = plugin_config(network, plugin, prev_result, &entry.port_mappings);
        let path = std::env::join_paths(&self.bin_dirs)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let invocation = Invocation {
            command,
            container_id: &entry.container_id,
            netns: &entry.netns,
            ifname,
            args: &entry.cni_args,
            path: &path,
            timeout: self.plugin_timeout,
        };
        exec::run(&binary, &invocation, &config)
    }
}

/// The network of `conf_dir`: its first config file that parses (as libcni picks it).
pub fn load_network(conf_dir: &Path) -> Result<NetworkList, CniError> {
    config::load(conf_dir)
}

/// Every plugin binary attaching a pod to `network` runs: loopback (for the pod's `lo`)
/// and the network's chain.
pub fn plugins_needed(network: &NetworkList) -> impl Iterator<Item = &str> {
    std::iter::once(LOOPBACK_PLUGIN).chain(network.plugins.iter().map(NetworkList::plugin_type))
}

/// The plugins of [`plugins_needed`] that no directory of `bin_dirs` has as an executable.
pub fn missing_plugins(network: &NetworkList, bin_dirs: &[PathBuf]) -> Vec<String> {
    plugins_needed(network)
        .filter(|plugin| exec::find_plugin(plugin, bin_dirs).is_err())
        .map(str::to_string)
        .collect()
}

/// What a plugin reads on stdin: its own configuration plus the network's name and
/// version, the previous result, and the runtime values of the capabilities it declares.
fn plugin_config(
    network: &NetworkList,
    plugin: &Map<String, Value>,
    prev_result: Option<&Value>,
    port_mappings: &[PortMapping],
) -> Value {
    let mut config = plugin.clone();
    config.insert("name".into(), json!(network.name));
    config.insert("cniVersion".into(), json!(network.cni_version));
    if let Some(prev) = prev_result {
        config.insert("prevResult".into(), prev.clone());
    }
    let wants_ports = plugin
        .get("capabilities")
        .and_then(|c| c.get("portMappings"))
        .and_then(Value::as_bool)
        == Some(true);
    if wants_ports && !port_mappings.is_empty() {
        config.insert(
            "runtimeConfig".into(),
            json!({ "portMappings": port_mappings }),
        );
    }
    Value::Object(config)
}

/// The `lo` of every pod is brought up by the loopback plugin, as a network of its own.
fn loopback_network(cni_version: &str) -> NetworkList {
    let mut plugin = Map::new();
    plugin.insert("type".into(), json!(LOOPBACK_PLUGIN));
    NetworkList {
        name: "cni-loopback".to_string(),
        cni_version: cni_version.to_string(),
        disable_check: false,
        plugins: vec![plugin],
        source: PathBuf::new(),
    }
}

/// The Kubernetes CNI_ARGS; IgnoreUnknown lets plugins that know none of them run.
fn cni_args(pod: &PodNetwork) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.container_id, pod.uid
    )
}

/// Compares a "major.minor.patch" spec version with (major, minor).
fn version_at_least(version: &str, (major, minor): (u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_gets_name_version_prev_result_and_capabilities() {
        let network = DefaultNetwork::default();
        let conflist = network.to_conflist();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.conflist"), conflist.to_string()).unwrap();
        let list = config::load(dir.path()).unwrap();
        let ports = [PortMapping {
            protocol: Protocol::Udp,
            container_port: 53,
            host_port: 5353,
            host_ip: String::new(),
        }];
        let prev = json!({"cniVersion": "1.0.0", "ips": []});

        let bridge = plugin_config(&list, &list.plugins[0], None, &ports);
        assert_eq!(bridge["name"], "peapod");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert!(bridge.get("runtimeConfig").is_none());
        assert!(bridge.get("prevResult").is_none());

        let portmap = plugin_config(&list, &list.plugins[1], Some(&prev), &ports);
        assert_eq!(portmap["prevResult"], prev);
        assert_eq!(
            portmap["runtimeConfig"]["portMappings"],
            json!([{"protocol": "udp", "containerPort": 53, "hostPort": 5353}])
        );
    }

    #[test]
    fn args_and_versions() {
        let pod = PodNetwork {
            container_id: "abc",
            netns: Path::new("/x"),
            name: "web",
            namespace: "default",
            uid: "u-1",
            port_mappings: &[],
        };
        assert_eq!(
            cni_args(&pod),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
        );
        assert!(version_at_least("1.0.0", (0, 4)));
        assert!(version_at_least("0.4.0", (0, 4)));
        assert!(!version_at_least("0.3.1", (0, 4)));
    }
}
