//! Registry configuration in the containers-registries.conf(5) v2 format that CRI-O,
//! Podman and Skopeo read: `[[registry]]` entries with `prefix`, `location`,
//! `insecure`, `blocked` and `[[registry.mirror]]`s, plus
//! `unqualified-search-registries`.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::reference::Reference;

pub const DEFAULT_PATH: &str = "/etc/containers/registries.conf";

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistriesConf {
    #[serde(default)]
    pub unqualified_search_registries: Vec<String>,
    #[serde(default)]
    pub registry: Vec<RegistryEntry>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryEntry {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub blocked: bool,
    #[serde(default)]
    pub mirror: Vec<MirrorEntry>,
    /// Mirrors are used only for pulls by digest (a tag may differ on a mirror).
    #[serde(default)]
    pub mirror_by_digest_only: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MirrorEntry {
    pub location: String,
    #[serde(default)]
    pub insecure: bool,
}

/// One place to try pulling from, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The reference rewritten for this endpoint (registry and repository).
    pub reference: Reference,
    /// `insecure = true`: TLS certificates are not verified and plain HTTP is allowed.
    /// (Loopback registries may use plain HTTP even without it.)
    pub insecure: bool,
}

impl RegistriesConf {
    /// Reads `path`; a missing file means an empty configuration.
    pub fn load(path: &Path) -> Result<RegistriesConf> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text).map_err(|reason| Error::RegistriesConf {
                path: path.into(),
                reason,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RegistriesConf::default()),
            Err(e) => Err(Error::io("reading registries configuration", path)(e)),
        }
    }

    pub fn parse(text: &str) -> std::result::Result<RegistriesConf, String> {
        let conf: RegistriesConf = toml::from_str(text).map_err(|e| e.to_string())?;
        for entry in &conf.registry {
            if entry.prefix.is_none() && entry.location.is_none() {
                return Err("a [[registry]] needs a prefix or a location".into());
            }
        }
        Ok(conf)
    }

    /// The registries a short name (`busybox`) is looked up in, in order.
    pub fn search_registries(&self) -> &[String] {
        &self.unqualified_search_registries
    }

    /// Where to pull `reference` from: the matching entry's mirrors, then its location.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>> {
        let name = reference.name();
        let Some((entry, prefix)) = self.matching(&name) else {
            return Ok(vec![endpoint(reference.clone(), false)]);
        };
        if entry.blocked {
            return Err(Error::RegistryBlocked { registry: prefix });
        }
        let mut out = Vec::new();
        if !entry.mirror_by_digest_only || reference.digest.is_some() {
            for mirror in &entry.mirror {
                out.push(endpoint(
                    rewrite(reference, &prefix, &mirror.location)?,
                    mirror.insecure,
                ));
            }
        }
        let location = entry.location.clone().unwrap_or_else(|| prefix.clone());
        out.push(endpoint(
            rewrite(reference, &prefix, &location)?,
            entry.insecure,
        ));
        Ok(out)
    }

    /// The entry whose prefix matches most of `name`, with that prefix.
    fn matching(&self, name: &str) -> Option<(&RegistryEntry, String)> {
        self.registry
            .iter()
            .filter_map(|entry| {
                let prefix = entry.prefix.clone().or_else(|| entry.location.clone())?;
                let matched = if let Some(domain) = prefix.strip_prefix("*.") {
                    // `*.example.com` matches any subdomain host, whatever the path.
                    let host = name.split('/').next().unwrap_or_default();
                    host.ends_with(&format!(".{domain}"))
                } else {
                    name == prefix || name.starts_with(&format!("{prefix}/"))
                };
                matched.then_some((entry, prefix))
            })
            .max_by_key(|(_, prefix)| prefix.len())
    }
}

fn endpoint(reference: Reference, insecure: bool) -> Endpoint {
    Endpoint {
        reference,
        insecure,
    }
}

/// Replaces the matched `prefix` of the reference's name with `location`.
fn rewrite(reference: &Reference, prefix: &str, location: &str) -> Result<Reference> {
    let name = reference.name();
    let rest = if prefix.starts_with("*.") {
        &name[name.find('/').unwrap_or(name.len())..]
    } else {
        &name[prefix.len()..]
    };
    let mut text = format!("{}{}", location.trim_end_matches('/'), rest);
    if let Some(tag) = &reference.tag {
        text.push(':');
        text.push_str(tag);
    }
    if let Some(digest) = &reference.digest {
        text.push('@');
        text.push_str(&digest.to_string());
    }
    let mut rewritten: Reference = text.parse()?;
    rewritten.short_name = false;
    Ok(rewritten)
}

/// Registries on this machine may be reached over plain HTTP, as Docker allows.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"
unqualified-search-registries = ["quay.io", "docker.io"]

[[registry]]
prefix = "gcr.io"
location = "127.0.0.1:5000"
insecure = true
[[registry.mirror]]
location = "10.0.0.1:5000/cache"
[[registry.mirror]]
location = "mirror.example.com"
insecure = true

[[registry]]
prefix = "gcr.io/special"
location = "special.example.com/x"

[[registry]]
location = "blocked.example.com"
blocked = true
"#;

    fn endpoints(conf: &RegistriesConf, r: &str) -> Vec<(String, bool)> {
        conf.endpoints(&r.parse().unwrap())
            .unwrap()
            .into_iter()
            .map(|e| (e.reference.to_string(), e.insecure))
            .collect()
    }

    #[test]
    fn mirrors_then_location() {
        let conf = RegistriesConf::parse(CONF).unwrap();
        assert_eq!(conf.search_registries(), ["quay.io", "docker.io"]);
        assert_eq!(
            endpoints(&conf, "gcr.io/a/b:t"),
            vec![
                ("10.0.0.1:5000/cache/a/b:t".to_string(), false),
                ("mirror.example.com/a/b:t".to_string(), true),
                ("127.0.0.1:5000/a/b:t".to_string(), true),
            ]
        );
        assert_eq!(
            endpoints(&conf, "gcr.io/special/app:1"),
            vec![("special.example.com/x/app:1".to_string(), false)]
        );
        assert_eq!(
            endpoints(&conf, "gcr.ioo/a:1"),
            vec![("gcr.ioo/a:1".to_string(), false)]
        );
        assert_eq!(
            endpoints(&conf, "localhost:5000/a:1"),
            vec![("localhost:5000/a:1".to_string(), false)]
        );
        assert!(matches!(
            conf.endpoints(&"blocked.example.com/x".parse().unwrap()),
            Err(Error::RegistryBlocked { .. })
        ));
    }

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.4.5",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in [
            "docker.io",
            "10.0.0.1:5000",
            "[fe80::1]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
