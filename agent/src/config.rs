//! The daemon's settings: built-in defaults, overridden by the TOML file
//! (`/etc/peapod/config.toml` unless `--config` names another), overridden in
//! turn by command-line flags. Every setting has a flag, so peapodd runs with
//! no file at all.
//!
//! ```toml
//! root = "/var/lib/peapod"
//! state = "/run/peapod"
//! socket = "/run/peapod/peapod.sock"
//! registries_conf = "/etc/containers/registries.conf"
//! cni_conf_dir = "/etc/cni/net.d"
//! cni_bin_dirs = ["/usr/lib/cni", "/opt/cni/bin"]
//! log_level = "info"
//! shutdown_grace_seconds = 10
//! stream_address = "127.0.0.1:0"
//! stream_idle_timeout_seconds = 14400
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/peapod/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
}

/// Everything peapodd needs to know before it starts serving.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: images, and later pod and container metadata.
    pub root: PathBuf,
    /// Runtime state that does not survive a reboot (sockets, mounts).
    pub state: PathBuf,
    /// The CRI gRPC socket.
    pub socket: PathBuf,
    /// containers-registries.conf(5) file; `None` reads the system default
    /// (/etc/containers/registries.conf) when it exists.
    pub registries_conf: Option<PathBuf>,
    /// Where CNI network configurations are read from.
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugin binaries are searched, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Write a default bridge network (`peapod0`, 10.88.0.0/16, host-local, portmap) into
    /// `cni_conf_dir` at start when it holds no network configuration, so a fresh node has pod
    /// networking without setup, as containerd and CRI-O set-ups do.
    pub default_cni_network: bool,
    /// A tracing filter: `info`, `debug`, `peapod_agent=trace,info`, …
    pub log_level: String,
    /// How long calls still running at SIGTERM may take before peapodd exits
    /// anyway (long pulls, the kubelet's open event streams).
    pub shutdown_grace_seconds: u64,
    /// Where the streaming server (the URLs of Exec, Attach and PortForward) listens. Port 0
    /// lets the kernel pick one; loopback keeps it to this node (the kubelet proxies to it),
    /// as containerd's default does.
    pub stream_address: SocketAddr,
    /// A streaming session (exec, attach, port-forward) through which nothing passed for this
    /// long is closed; 0 never closes one. 4 hours, as the kubelet's
    /// `--streaming-connection-idle-timeout` and containerd's `stream_idle_timeout`.
    pub stream_idle_timeout_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: PathBuf::from("/var/lib/peapod"),
            state: PathBuf::from("/run/peapod"),
            socket: PathBuf::from("/run/peapod/peapod.sock"),
            registries_conf: None,
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            default_cni_network: true,
            log_level: "info".to_string(),
            shutdown_grace_seconds: 10,
            stream_address: crate::streaming::DEFAULT_ADDRESS,
            stream_idle_timeout_seconds: 4 * 60 * 60,
        }
    }
}

impl Config {
    /// Reads the configuration file at `path`.
    ///
    /// A missing file means "all defaults" only for the default location:
    /// when the operator named a file explicitly (`required`), its absence is
    /// almost certainly a typo and is reported.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source: Box::new(source),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn parse(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }

    /// The streaming idle timeout, `None` for none.
    pub fn stream_idle_timeout(&self) -> Option<std::time::Duration> {
        (self.stream_idle_timeout_seconds > 0)
            .then(|| std::time::Duration::from_secs(self.stream_idle_timeout_seconds))
    }

    /// The directory of the image store inside `root`.
    pub fn image_root(&self) -> PathBuf {
        self.root.join("rootfs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn file_overrides_some_settings() {
        let config = Config::parse(
            "root = \"/srv/peapod\"\ncni_bin_dirs = [\"/cni\"]\nlog_level = \"debug\"\n",
        )
        .unwrap();
        assert_eq!(config.root, Path::new("/srv/peapod"));
        assert_eq!(config.cni_bin_dirs, vec![PathBuf::from("/cni")]);
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.socket, Config::default().socket);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let error = Config::parse("sockett = \"/x\"\n").unwrap_err();
        assert!(error.to_string().contains("sockett"), "{error}");
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("config.toml");
        assert_eq!(Config::load(&absent, false).unwrap(), Config::default());
        assert!(matches!(
            Config::load(&absent, true),
            Err(ConfigError::Read { .. })
        ));
    }
}
