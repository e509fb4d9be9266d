//! The pod's /etc files (hosts, resolv.conf, hostname) and small file helpers.
//!
//! Containers bind-mount these files, so every container of the pod sees the same ones
//! and the kubelet can read them back. Files that are replaced later (the CNI cache and
//! configs) are written atomically (temporary file, fsync, rename): a reader never sees
//! half a file, and a crash leaves the old or the new.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::{DnsConfig, Sandbox, SandboxError, SandboxSpec};

/// The hosts entries every pod gets, as in Docker and containerd.
const LOCAL_HOSTS: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n";

pub(super) fn write_etc_files(sandbox: &Sandbox, spec: &SandboxSpec) -> Result<(), SandboxError> {
    let hosts = if spec.host_network {
        // The pod is the host, network-wise: it resolves names the way the host does.
        read_host_file("/etc/hosts")?.unwrap_or_else(|| LOCAL_HOSTS.to_string())
    } else {
        pod_hosts(sandbox)
    };
    let resolv = match &spec.dns {
        Some(dns) => resolv_conf(dns),
        None => read_host_file("/etc/resolv.conf")?.unwrap_or_default(),
    };
    // New files in the pod's own directory, written before any container can open them, in
    // the volatile state dir: nothing can see them half-written and a machine crash takes the
    // pod anyway, so no temporary file, rename or fsync.
    let write = |path: &Path, content: &[u8]| {
        fs::write(path, content).map_err(SandboxError::io("writing", path))
    };
    write(&sandbox.hosts, hosts.as_bytes())?;
    write(&sandbox.resolv_conf, resolv.as_bytes())?;
    write(
        &sandbox.hostname_file,
        format!("{}\n", sandbox.hostname).as_bytes(),
    )
}

fn pod_hosts(sandbox: &Sandbox) -> String {
    let mut hosts = LOCAL_HOSTS.to_string();
    for ip in &sandbox.ips {
        hosts.push_str(&format!("{ip}\t{}\n", sandbox.hostname));
    }
    hosts
}

fn resolv_conf(dns: &DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// `None` when the host has no such file.
fn read_host_file(path: &str) -> Result<Option<String>, SandboxError> {
    match fs::read_to_string(path) {
        Ok(content) => Ok(Some(content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SandboxError::io("reading", Path::new(path))(e)),
    }
}

pub(super) fn host_hostname() -> Result<String, SandboxError> {
    let name = nix::unistd::gethostname().map_err(|source| SandboxError::Sys {
        what: "reading the hostname from",
        path: "/proc/sys/kernel/hostname".into(),
        source,
    })?;
    Ok(name.to_string_lossy().into_owned())
}

/// RFC 1123: dot-separated labels of letters, digits and inner hyphens, 63 bytes at most
/// each (the kernel's own limit for the whole name is 64).
pub(super) fn is_valid_hostname(name: &str) -> bool {
    name.len() <= 64
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Writes `path` so that readers see either the old or the complete new content.
pub(crate) fn write_atomic(path: &Path, content: &[u8]) -> Result<(), SandboxError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(tmp);
        SandboxError::io("writing", path)(e)
    })
}

/// Removes a directory tree. Idempotent.
pub(super) fn remove_dir(dir: &Path) -> Result<(), SandboxError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SandboxError::io("removing", dir)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "1.1.1.1".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search ns.svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:5\n"
        );
        assert_eq!(resolv_conf(&DnsConfig::default()), "");
    }

    #[test]
    fn hostnames() {
        assert!(is_valid_hostname("web-0"));
        assert!(is_valid_hostname("a.b-c.d"));
        assert!(!is_valid_hostname("-web"));
        assert!(!is_valid_hostname("a..b"));
        assert!(!is_valid_hostname("we_b"));
        assert!(!is_valid_hostname(&"a".repeat(65)));
    }
}
