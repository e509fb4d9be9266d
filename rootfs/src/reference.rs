//! Image references, normalized the way Kubernetes and Docker do it:
//! `busybox` → `docker.io/library/busybox:latest`, `quay.io/a/b@sha256:…` keeps its
//! digest, and `name:tag@sha256:…` keeps both (the digest decides what is pulled).

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::Error;

pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Host and optional port, e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
    /// True when the user wrote no registry (`busybox`, `user/app`): such names may be
    /// resolved through `unqualified-search-registries`.
    pub short_name: bool,
}

impl Reference {
    /// `registry/repository`, the key image records group tags and digests under.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, if the reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `registry/repository@digest` for the given manifest digest.
    pub fn with_digest(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The same reference placed in another registry (used for short-name search).
    pub fn in_registry(&self, registry: &str) -> Reference {
        let mut r = self.clone();
        r.registry = registry.to_string();
        r.short_name = false;
        if registry != DEFAULT_REGISTRY {
            if let Some(rest) = r.repository.strip_prefix("library/") {
                if !self.repository_was_explicit_library() {
                    r.repository = rest.to_string();
                }
            }
        }
        r
    }

    fn repository_was_explicit_library(&self) -> bool {
        // Normalization adds `library/` only to single-component names, so a
        // multi-component `library/x/y` must have been written by the user.
        self.repository.matches('/').count() > 1
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| Error::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty"));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    d.parse::<Digest>()
                        .map_err(|_| bad("the digest is not sha256:<64 hex>"))?,
                ),
            ),
            None => (input, None),
        };
        // A tag is a ':' after the last '/', so `host:5000/app` is not mistaken for one.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            let valid = !tag.is_empty()
                && tag.len() <= 128
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && !tag.starts_with(['.', '-']);
            if !valid {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, repository, short_name) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':']) || first == "localhost" || first.starts_with('[') =>
            {
                let registry = if first == "index.docker.io" {
                    DEFAULT_REGISTRY
                } else {
                    first
                };
                (registry.to_string(), path.to_string(), false)
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string(), true),
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let valid_repo = !repository.is_empty()
            && repository.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                    && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            });
        if !valid_repo {
            return Err(bad(
                "repository names are lowercase letters, digits and separators",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
            short_name,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn normalizes_like_kubernetes() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b:t"), "127.0.0.1:5000/a/b:t");
        assert_eq!(
            norm("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        let d = Digest::of(b"x");
        assert_eq!(
            norm(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            norm(&format!("busybox:1@{d}")),
            format!("docker.io/library/busybox:1@{d}")
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "busybox:",
            "busybox@sha256:12",
            "a:b:c/d:-x",
        ] {
            assert!(
                bad.parse::<Reference>().is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn short_names_move_registries() {
        let r: Reference = "busybox".parse().unwrap();
        assert!(r.short_name);
        assert_eq!(
            r.in_registry("quay.io").to_string(),
            "quay.io/busybox:latest"
        );
        let r: Reference = "127.0.0.1:5000/x".parse().unwrap();
        assert!(!r.short_name);
    }
}
