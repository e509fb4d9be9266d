//! Which namespace a sysctl belongs to, and writing it.
//!
//! Only namespaced sysctls can be set per pod (the same list as the kubelet's and runc's):
//! anything else would change the whole host. A sysctl is written from the thread that
//! made the pod's namespaces: /proc/sys resolves net, IPC and UTS entries through the
//! namespaces of the task that opens them (there is no /proc/thread-self/sys).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use super::SandboxError;

/// The IPC sysctls that live in an IPC namespace.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Namespace {
    Net,
    Ipc,
    Uts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Sysctl {
    pub(super) key: String,
    pub(super) value: String,
    pub(super) namespace: Namespace,
    /// Under /proc/sys.
    pub(super) path: PathBuf,
}

impl Sysctl {
    /// Writes the value; must run in the thread that is in the pod's namespaces.
    pub(super) fn write(&self) -> Result<(), SandboxError> {
        let error = |source| SandboxError::Sysctl {
            key: self.key.clone(),
            value: self.value.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(error)?;
        file.write_all(self.value.as_bytes()).map_err(error)
    }
}

/// Checks every sysctl against the namespaces the pod gets and finds its /proc/sys file.
pub(super) fn plan(
    sysctls: &BTreeMap<String, String>,
    host_network: bool,
    host_ipc: bool,
) -> Result<Vec<Sysctl>, SandboxError> {
    sysctls
        .iter()
        .map(|(key, value)| {
            let invalid =
                |why: &str| Err(SandboxError::InvalidSpec(format!("sysctl {key}: {why}")));
            let valid_chars = key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-'));
            if key.is_empty() || !valid_chars || key.split(['.', '/']).any(|p| p.is_empty()) {
                return invalid("not a sysctl name");
            }
            // The slashed form keeps dots that belong to a name (e.g. a VLAN
            // interface "eth0.100"); the dotted form has none.
            let (dotted, relative) = if key.contains('/') {
                (key.replace('/', "."), key.clone())
            } else {
                (key.clone(), key.replace('.', "/"))
            };
            let namespace = match namespace_of(&dotted) {
                Some(namespace) => namespace,
                None => return invalid("not a namespaced sysctl, it would change the host"),
            };
            match namespace {
                Namespace::Net | Namespace::Uts if host_network => {
                    return invalid("the pod shares the host's network and UTS namespaces")
                }
                Namespace::Ipc if host_ipc => {
                    return invalid("the pod shares the host's IPC namespace")
                }
                _ => {}
            }
            Ok(Sysctl {
                key: key.clone(),
                value: value.clone(),
                namespace,
                path: PathBuf::from("/proc/sys").join(relative),
            })
        })
        .collect()
}

fn namespace_of(dotted: &str) -> Option<Namespace> {
    if dotted.starts_with("net.") {
        Some(Namespace::Net)
    } else if IPC_SYSCTLS.contains(&dotted) || dotted.starts_with("fs.mqueue.") {
        Some(Namespace::Ipc)
    } else if dotted == "kernel.domainname" {
        // kernel.hostname is namespaced too, but the pod's hostname comes from the spec.
        Some(Namespace::Uts)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, host_network: bool, host_ipc: bool) -> Result<Sysctl, SandboxError> {
        let map = BTreeMap::from([(key.to_string(), "1".to_string())]);
        plan(&map, host_network, host_ipc).map(|mut v| v.remove(0))
    }

    #[test]
    fn namespaced_sysctls_are_accepted() {
        let s = one("net.ipv4.ip_unprivileged_port_start", false, false).unwrap();
        assert_eq!(s.namespace, Namespace::Net);
        assert_eq!(
            s.path,
            PathBuf::from("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        );
        let s = one("net/ipv4/conf/eth0.100/forwarding", false, false).unwrap();
        assert_eq!(
            s.path,
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(
            one("kernel.shmmax", false, false).unwrap().namespace,
            Namespace::Ipc
        );
        assert_eq!(
            one("fs.mqueue.msg_max", true, false).unwrap().namespace,
            Namespace::Ipc
        );
        assert_eq!(
            one("kernel.domainname", false, true).unwrap().namespace,
            Namespace::Uts
        );
    }

    #[test]
    fn host_wide_and_shared_namespace_sysctls_are_refused() {
        assert!(one("vm.swappiness", false, false).is_err());
        assert!(one("kernel.hostname", false, false).is_err());
        assert!(one("net.ipv4.ip_forward", true, false).is_err());
        assert!(one("kernel.sem", false, true).is_err());
        assert!(one("net..ipv4", false, false).is_err());
        assert!(one("net.ipv4/../../x", false, false).is_err());
    }
}
