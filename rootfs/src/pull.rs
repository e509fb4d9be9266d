//! Pulling images from OCI / Docker v2 registries with `oci-client`.
//!
//! The steps: resolve where to pull from (registries.conf mirrors and locations),
//! fetch the manifest (resolving an index to the host platform), fetch the config,
//! then download and unpack layers in parallel, skipping what is already here.
//! Everything is verified against its digest before it is stored or unpacked.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::images::ImageRecord;
use crate::manifest::{parse_manifest, ConfigFile, Descriptor, ManifestKind, ACCEPTED_MANIFESTS};
use crate::reference::Reference;
use crate::registries::{is_loopback, Endpoint};
use crate::store::RootfsStore;

/// Registry credentials as the CRI `AuthConfig` carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`, as in a Docker config.json.
    pub auth: String,
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets into logs.
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

impl AuthConfig {
    pub fn anonymous() -> AuthConfig {
        AuthConfig::default()
    }

    pub fn basic(username: &str, password: &str) -> AuthConfig {
        AuthConfig {
            username: username.into(),
            password: password.into(),
            ..Default::default()
        }
    }

    fn to_registry_auth(&self) -> Result<RegistryAuth> {
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        if !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|e| Error::invalid("auth", e))?;
            let text = String::from_utf8(decoded).map_err(|e| Error::invalid("auth", e))?;
            let (user, pass) = text
                .split_once(':')
                .ok_or_else(|| Error::invalid("auth", "expected user:password"))?;
            return Ok(RegistryAuth::Basic(user.into(), pass.into()));
        }
        if !self.identity_token.is_empty() {
            // An identity token is an OAuth refresh token; registries that issue them
            // also accept it as a bearer credential for the token exchange.
            return Ok(RegistryAuth::Bearer(self.identity_token.clone()));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// How one attempt talks to a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    Https,
    /// TLS without certificate verification (`insecure = true`).
    HttpsUnverified,
    Http,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Https => "https",
            Transport::HttpsUnverified => "https, unverified",
            Transport::Http => "http",
        })
    }
}

fn pull_error(reference: &impl fmt::Display, reason: impl fmt::Display) -> Error {
    Error::Pull {
        reference: reference.to_string(),
        reason: reason.to_string(),
    }
}

fn oci_reference(r: &Reference) -> oci_client::Reference {
    match (&r.tag, &r.digest) {
        (Some(tag), Some(digest)) => oci_client::Reference::with_tag_and_digest(
            r.registry.clone(),
            r.repository.clone(),
            tag.clone(),
            digest.to_string(),
        ),
        (_, Some(digest)) => oci_client::Reference::with_digest(
            r.registry.clone(),
            r.repository.clone(),
            digest.to_string(),
        ),
        (Some(tag), None) => {
            oci_client::Reference::with_tag(r.registry.clone(), r.repository.clone(), tag.clone())
        }
        (None, None) => oci_client::Reference::with_tag(
            r.registry.clone(),
            r.repository.clone(),
            "latest".into(),
        ),
    }
}

fn oci_descriptor(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size,
        ..Default::default()
    }
}

impl RootfsStore {
    /// Pulls `reference` (normalized as Kubernetes does) and returns its record.
    pub async fn pull(&self, reference: &str, auth: &AuthConfig) -> Result<ImageRecord> {
        let wanted: Reference = reference.parse()?;
        let registry_auth = auth.to_registry_auth()?;
        let candidates: Vec<Reference> = match self.inner.registries.search_registries() {
            search if wanted.short_name && !search.is_empty() => {
                search.iter().map(|r| wanted.in_registry(r)).collect()
            }
            _ => vec![wanted.clone()],
        };
        let mut failures = Vec::new();
        for candidate in candidates {
            let endpoints = match self.inner.registries.endpoints(&candidate) {
                Ok(e) => e,
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            };
            for endpoint in endpoints {
                for transport in self.transports(&endpoint) {
                    match self
                        .pull_from(&candidate, &endpoint, transport, &registry_auth)
                        .await
                    {
                        Ok(record) => {
                            if let Ok(mut known) = self.inner.transports.lock() {
                                known.insert(endpoint.reference.registry.clone(), transport);
                            }
                            return Ok(record);
                        }
                        Err(e) => {
                            tracing::warn!(reference = %candidate, endpoint = %endpoint.reference, ?transport, error = %e, "pull attempt failed");
                            failures.push(format!("{} ({transport}): {e}", endpoint.reference));
                        }
                    }
                }
            }
        }
        Err(pull_error(&wanted, failures.join("; ")))
    }

    /// How to reach an endpoint, in order. Remote registries: TLS, then plain HTTP
    /// only when marked `insecure` (which also turns certificate checks off).
    /// Loopback registries: plain HTTP first (no one can listen in on loopback, and
    /// a local test registry usually speaks it), then TLS. The transport that worked
    /// last time for a registry is tried first.
    fn transports(&self, endpoint: &Endpoint) -> Vec<Transport> {
        let tls = if endpoint.insecure {
            Transport::HttpsUnverified
        } else {
            Transport::Https
        };
        let mut out = if is_loopback(&endpoint.reference.registry) {
            vec![Transport::Http, tls]
        } else if endpoint.insecure {
            vec![tls, Transport::Http]
        } else {
            vec![tls]
        };
        let known = self
            .inner
            .transports
            .lock()
            .ok()
            .and_then(|k| k.get(&endpoint.reference.registry).copied());
        if let Some(pos) = known.and_then(|k| out.iter().position(|t| *t == k)) {
            out.swap(0, pos);
        }
        out
    }

    fn client(&self, transport: Transport) -> Client {
        let protocol = match transport {
            Transport::Http => ClientProtocol::Http,
            Transport::Https | Transport::HttpsUnverified => ClientProtocol::Https,
        };
        Client::new(ClientConfig {
            protocol,
            accept_invalid_certificates: transport == Transport::HttpsUnverified,
            // We resolve indexes ourselves, to store the index and pick the platform.
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            max_concurrent_download: self.inner.options.max_concurrent_downloads,
            ..Default::default()
        })
    }

    /// One attempt against one endpoint. `wanted` names the image as recorded;
    /// `endpoint.reference` is where the bytes come from.
    async fn pull_from(
        &self,
        wanted: &Reference,
        endpoint: &Endpoint,
        transport: Transport,
        auth: &RegistryAuth,
    ) -> Result<ImageRecord> {
        let client = Arc::new(self.client(transport));
        let source = oci_reference(&endpoint.reference);
        let shown = &endpoint.reference;
        let mut lease = self.lease();

        let (top_bytes, _) = client
            .pull_manifest_raw(&source, auth, &ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| pull_error(shown, format!("fetching manifest: {e}")))?;
        let top_digest = Digest::of(&top_bytes);
        if let Some(expected) = &wanted.digest {
            if *expected != top_digest {
                return Err(Error::DigestMismatch {
                    expected: expected.to_string(),
                    actual: top_digest.to_string(),
                });
            }
        }
        let mut manifests = vec![top_digest.clone()];
        lease.add([top_digest.clone()]);
        let manifest = match parse_manifest(&top_bytes, None)? {
            ManifestKind::Image(m) => m,
            ManifestKind::Index(index) => {
                let platform = &self.inner.options.platform;
                let chosen = index
                    .select(platform)
                    .ok_or_else(|| Error::NoMatchingPlatform {
                        reference: wanted.to_string(),
                        platform: platform.to_string(),
                    })?;
                let by_digest = source.clone_with_digest(chosen.digest.to_string());
                let (bytes, _) = client
                    .pull_manifest_raw(&by_digest, auth, &ACCEPTED_MANIFESTS)
                    .await
                    .map_err(|e| {
                        pull_error(shown, format!("fetching manifest {}: {e}", chosen.digest))
                    })?;
                self.inner.content.put(&bytes, Some(&chosen.digest))?;
                manifests.push(chosen.digest.clone());
                lease.add([chosen.digest.clone()]);
                match parse_manifest(&bytes, Some(&chosen.media_type))? {
                    ManifestKind::Image(m) => m,
                    ManifestKind::Index(_) => {
                        return Err(pull_error(shown, "nested image indexes are not supported"))
                    }
                }
            }
        };

        let config_digest = manifest.config.digest.clone();
        lease.add([config_digest.clone()]);
        if !self.inner.content.contains(&config_digest) {
            let mut bytes = Vec::new();
            client
                .pull_blob(&source, &oci_descriptor(&manifest.config), &mut bytes)
                .await
                .map_err(|e| pull_error(shown, format!("fetching config {config_digest}: {e}")))?;
            self.inner.content.put(&bytes, Some(&config_digest))?;
        }
        let config: ConfigFile = serde_json::from_slice(&self.inner.content.read(&config_digest)?)
            .map_err(|e| Error::invalid(format!("image config {config_digest}"), e))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::invalid(
                format!("image {wanted}"),
                format!(
                    "{} layers but {} diff_ids in its config",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len()
                ),
            ));
        }
        let chains = chain_ids(&config.rootfs.diff_ids);
        lease.add(chains.iter().cloned());
        lease.add(manifest.layers.iter().map(|l| l.digest.clone()));

        self.fetch_layers(
            &client,
            &source,
            shown,
            &manifest.layers,
            &config.rootfs.diff_ids,
            &chains,
        )
        .await?;
        // The manifest goes in last: its presence never implies the layers are here.
        self.inner.content.put(&top_bytes, Some(&top_digest))?;

        let repo_tags = wanted.tagged().into_iter().collect();
        let repo_digests = vec![wanted.with_digest(&top_digest)];
        let record = self
            .record_image(
                &config_digest,
                config,
                manifest.layers,
                manifests,
                repo_tags,
                repo_digests,
            )
            .await?;
        tracing::info!(reference = %wanted, from = %shown, id = %record.id, "image pulled");
        drop(lease);
        Ok(record)
    }

    /// Downloads and unpacks layers, several at a time; each layer is unpacked as soon
    /// as its download is verified, while others are still downloading.
    async fn fetch_layers(
        &self,
        client: &Arc<Client>,
        source: &oci_client::Reference,
        shown: &Reference,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        chains: &[Digest],
    ) -> Result<()> {
        let jobs =
            layers
                .iter()
                .zip(diff_ids)
                .zip(chains)
                .map(|((desc, diff_id), chain)| async move {
                    if self.inner.layers.contains(chain) {
                        return Ok(());
                    }
                    if !self.inner.content.contains(&desc.digest) {
                        self.download(client, source, shown, desc).await?;
                    }
                    self.unpack(chain, diff_id, desc).await
                });
        let mut results = futures_util::stream::iter(jobs)
            .buffer_unordered(self.inner.options.max_concurrent_downloads.max(1));
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(())
    }

    async fn download(
        &self,
        client: &Client,
        source: &oci_client::Reference,
        shown: &Reference,
        desc: &Descriptor,
    ) -> Result<()> {
        let mut writer = self.inner.content.writer(&desc.digest).await?;
        let mut stream = client
            .pull_blob_stream(source, &oci_descriptor(desc))
            .await
            .map_err(|e| pull_error(shown, format!("fetching layer {}: {e}", desc.digest)))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                pull_error(shown, format!("downloading layer {}: {e}", desc.digest))
            })?;
            writer.write(&chunk).await?;
        }
        writer.commit().await
    }
}
