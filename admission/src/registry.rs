//! OCI registries: credentials, plain HTTP only where it is allowed, timeouts, and every
//! manifest and blob checked against its digest.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciImageIndex;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::Digest as _;

use crate::config::RegistryAccess;

/// Manifest media types this client asks for.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Largest manifest or metadata blob (signature payload, bundle, config) read into memory.
pub const MAX_METADATA_BYTES: usize = 4 * 1024 * 1024;

/// A registry problem; every variant names the registry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The manifest, tag or blob does not exist.
    #[error("registry {registry}: {what} not found")]
    NotFound {
        /// The registry host.
        registry: String,
        /// What was asked for.
        what: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("registry {registry} unavailable: {message}")]
    Unavailable {
        /// The registry host.
        registry: String,
        /// Why.
        message: String,
    },
    /// The registry answered something that breaks the distribution spec or its digest.
    #[error("registry {registry}: {message}")]
    Invalid {
        /// The registry host.
        registry: String,
        /// What is wrong.
        message: String,
    },
    /// The credentials configuration is unusable.
    #[error("registry credentials: {0}")]
    Credentials(String),
}

impl RegistryError {
    /// Whether the error means "could not ask" rather than "asked and got an answer".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}

/// A manifest as served: its bytes, their digest, and its media type.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The raw JSON.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Parsed JSON.
    pub json: serde_json::Value,
}

impl Manifest {
    /// `mediaType` of the manifest (from its body).
    pub fn media_type(&self) -> &str {
        self.json["mediaType"].as_str().unwrap_or("")
    }

    /// Whether this is an image index / manifest list.
    pub fn is_index(&self) -> bool {
        self.json.get("manifests").is_some()
    }
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// Registry access shared by the webhook and the CLI.
pub struct Registries {
    https: Client,
    http: Client,
    auths: HashMap<String, RegistryAuth>,
    default_auth: Option<RegistryAuth>,
    insecure: Vec<String>,
    /// Whether a registry answered `GET /v2/` without an auth challenge, probed once each.
    open: std::sync::Mutex<HashMap<String, bool>>,
}

impl Registries {
    /// Access per the configuration: `access` entries win over `docker_config` (a Docker
    /// `config.json`, as mounted from an imagePullSecret). `timeout` bounds connecting and each
    /// read.
    pub fn new(
        access: &[RegistryAccess],
        docker_config: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, RegistryError> {
        let mut auths = HashMap::new();
        if let Some(path) = docker_config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| RegistryError::Credentials(format!("{}: {e}", path.display())))?;
            auths = parse_docker_config(&text)
                .map_err(|e| RegistryError::Credentials(format!("{}: {e}", path.display())))?;
        }
        let mut insecure = Vec::new();
        for entry in access {
            let password = match (&entry.password, &entry.password_file) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(file)) => Some(
                    std::fs::read_to_string(file)
                        .map_err(|e| {
                            RegistryError::Credentials(format!("{}: {e}", file.display()))
                        })?
                        .trim_end()
                        .to_string(),
                ),
                (None, None) => None,
            };
            match (&entry.username, password) {
                (Some(user), Some(password)) => {
                    auths.insert(
                        normalize_host(&entry.host),
                        RegistryAuth::Basic(user.clone(), password),
                    );
                }
                (None, None) => {}
                _ => {
                    return Err(RegistryError::Credentials(format!(
                        "{}: username and password go together",
                        entry.host
                    )));
                }
            }
            if entry.insecure {
                insecure.push(normalize_host(&entry.host));
            }
        }
        let client = |protocol| {
            Client::new(ClientConfig {
                protocol,
                connect_timeout: Some(timeout),
                read_timeout: Some(timeout),
                ..Default::default()
            })
        };
        Ok(Self {
            https: client(ClientProtocol::Https),
            http: client(ClientProtocol::Http),
            auths,
            default_auth: None,
            insecure,
            open: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Anonymous access with credentials from `MESHGATE_REGISTRY_USERNAME`/`_PASSWORD` when
    /// both are set (the CLI's way).
    pub fn from_env(timeout: Duration) -> Result<Self, RegistryError> {
        let mut registries = Self::new(&[], None, timeout)?;
        if let (Ok(user), Ok(password)) = (
            std::env::var("MESHGATE_REGISTRY_USERNAME"),
            std::env::var("MESHGATE_REGISTRY_PASSWORD"),
        ) {
            registries.default_auth = Some(RegistryAuth::Basic(user, password));
        }
        Ok(registries)
    }

    /// Whether plain HTTP is used for `registry`: loopback registries and those marked
    /// `insecure`.
    pub fn plain_http(&self, registry: &str) -> bool {
        crate::artifact::is_loopback(registry) || self.insecure.iter().any(|h| h == registry)
    }

    fn client(&self, registry: &str) -> &Client {
        if self.plain_http(registry) {
            &self.http
        } else {
            &self.https
        }
    }

    /// The credentials used for `registry`.
    pub fn auth(&self, registry: &str) -> RegistryAuth {
        self.auths
            .get(registry)
            .or(self.default_auth.as_ref())
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }

    async fn prepare(&self, reference: &Reference) -> (&Client, String) {
        let registry = reference.resolve_registry().to_string();
        let client = self.client(&registry);
        let auth = self.auth(&registry);
        if matches!(auth, RegistryAuth::Anonymous)
            && self.is_open(client, reference, &registry).await
        {
            // oci-client caches tokens, not "no auth needed": without a cached credential it asks
            // `GET /v2/` again before every request. A registry that challenges nothing ignores
            // credentials, so an empty basic credential for the repository saves that round trip.
            client
                .tokens
                .insert(
                    reference,
                    oci_client::RegistryOperation::Pull,
                    oci_client::token_cache::RegistryTokenType::Basic(String::new(), String::new()),
                )
                .await;
        }
        client.store_auth_if_needed(&registry, &auth).await;
        (client, registry)
    }

    /// Whether `registry` serves anonymous requests without an auth challenge (asked once).
    async fn is_open(&self, client: &Client, reference: &Reference, registry: &str) -> bool {
        if let Some(open) = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
        {
            return *open;
        }
        // `auth` answers None exactly when `GET /v2/` carries no WWW-Authenticate challenge.
        match client
            .auth(
                reference,
                &RegistryAuth::Anonymous,
                oci_client::RegistryOperation::Pull,
            )
            .await
        {
            Ok(token) => {
                let open = token.is_none();
                self.open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(registry.to_string(), open);
                open
            }
            // Unreachable now: ask again next time.
            Err(_) => false,
        }
    }

    /// Fetches a manifest by tag or digest. When the reference has a digest, the bytes must
    /// hash to it.
    pub async fn manifest(&self, reference: &Reference) -> Result<Manifest, RegistryError> {
        let (client, registry) = self.prepare(reference).await;
        let (bytes, _) = client
            .pull_manifest_raw(reference, &self.auth(&registry), &MANIFEST_TYPES)
            .await
            .map_err(|e| classify(&registry, &format!("manifest {reference}"), e))?;
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(RegistryError::Invalid {
                registry,
                message: format!("manifest {reference} is larger than {MAX_METADATA_BYTES} bytes"),
            });
        }
        let digest = sha256_digest(&bytes);
        if let Some(expected) = reference.digest()
            && expected != digest
        {
            return Err(RegistryError::Invalid {
                registry,
                message: format!("manifest {reference} has digest {digest}"),
            });
        }
        let json = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Invalid {
            registry: registry.clone(),
            message: format!("manifest {reference}: {e}"),
        })?;
        Ok(Manifest {
            bytes: bytes.to_vec(),
            digest,
            json,
        })
    }

    /// Like [`Registries::manifest`], with `None` when the manifest does not exist.
    pub async fn manifest_if_exists(
        &self,
        reference: &Reference,
    ) -> Result<Option<Manifest>, RegistryError> {
        match self.manifest(reference).await {
            Ok(m) => Ok(Some(m)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Fetches a blob of at most `max_bytes` from the reference's repository and checks its
    /// digest.
    pub async fn blob(
        &self,
        reference: &Reference,
        digest: &str,
        max_bytes: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let (client, registry) = self.prepare(reference).await;
        let descriptor = oci_client::manifest::OciDescriptor {
            digest: digest.to_string(),
            ..Default::default()
        };
        let mut stream = client
            .pull_blob_stream(reference, &descriptor)
            .await
            .map_err(|e| classify(&registry, &format!("blob {digest}"), e))?;
        let mut bytes = Vec::new();
        use futures_util::StreamExt as _;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Unavailable {
                registry: registry.clone(),
                message: format!("reading blob {digest}: {e}"),
            })?;
            if bytes.len() + chunk.len() > max_bytes {
                return Err(RegistryError::Invalid {
                    registry,
                    message: format!("blob {digest} is larger than {max_bytes} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if sha256_digest(&bytes) != digest {
            return Err(RegistryError::Invalid {
                registry,
                message: format!("blob {digest} does not match its digest"),
            });
        }
        Ok(bytes)
    }

    /// The referrers of `subject` (a reference by digest) of `artifact_type`: the referrers
    /// API, or the `sha256-<hex>` tag index on registries without it.
    pub async fn referrers(
        &self,
        subject: &Reference,
        artifact_type: &str,
    ) -> Result<OciImageIndex, RegistryError> {
        let (client, registry) = self.prepare(subject).await;
        client
            .pull_referrers(subject, Some(artifact_type))
            .await
            .map_err(|e| classify(&registry, &format!("referrers of {subject}"), e))
    }

    /// Uploads a blob (idempotent: an existing blob is not sent again).
    pub async fn push_blob(
        &self,
        reference: &Reference,
        bytes: &[u8],
    ) -> Result<String, RegistryError> {
        let (client, registry) = self.prepare_push(reference).await;
        let digest = sha256_digest(bytes);
        let exists = client
            .blob_exists(reference, &digest)
            .await
            .map_err(|e| classify(&registry, &format!("blob {digest}"), e))?;
        if !exists {
            client
                .push_blob(reference, bytes.to_vec(), &digest)
                .await
                .map_err(|e| classify(&registry, &format!("blob {digest}"), e))?;
        }
        Ok(digest)
    }

    /// Uploads a manifest to `repository` under `tag`, or by its own digest without one;
    /// returns its digest and size.
    pub async fn push_manifest(
        &self,
        repository: &Reference,
        tag: Option<&str>,
        manifest: &serde_json::Value,
    ) -> Result<(String, usize), RegistryError> {
        let registry = repository.resolve_registry().to_string();
        let bytes = serde_json::to_vec(manifest).map_err(|e| RegistryError::Invalid {
            registry: registry.clone(),
            message: e.to_string(),
        })?;
        let digest = sha256_digest(&bytes);
        let size = bytes.len();
        let reference = match tag {
            Some(tag) => crate::signing::at_tag(repository, tag),
            None => crate::signing::at_digest(repository, &digest),
        };
        let (client, _) = self.prepare_push(&reference).await;
        let media_type = manifest["mediaType"]
            .as_str()
            .unwrap_or("application/vnd.oci.image.manifest.v1+json");
        let content_type =
            http::HeaderValue::from_str(media_type).map_err(|e| RegistryError::Invalid {
                registry: registry.clone(),
                message: e.to_string(),
            })?;
        client
            .push_manifest_raw(&reference, bytes, content_type)
            .await
            .map_err(|e| classify(&registry, &format!("manifest {reference}"), e))?;
        Ok((digest, size))
    }

    async fn prepare_push(&self, reference: &Reference) -> (&Client, String) {
        let registry = reference.resolve_registry().to_string();
        let client = self.client(&registry);
        let auth = self.auth(&registry);
        // Pushing needs a token with push scope; `auth` asks for it (a no-op for anonymous
        // registries without token auth).
        let _ = client
            .auth(reference, &auth, oci_client::RegistryOperation::Push)
            .await;
        (client, registry)
    }
}

/// Turns a client error into one that says whether the registry answered.
fn classify(registry: &str, what: &str, error: OciDistributionError) -> RegistryError {
    let not_found = || RegistryError::NotFound {
        registry: registry.to_string(),
        what: what.to_string(),
    };
    match &error {
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::ServerError { code: 404, .. } => not_found(),
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) =>
        {
            not_found()
        }
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
            RegistryError::Unavailable {
                registry: registry.to_string(),
                message: format!("{what}: {}", error_chain(&error)),
            }
        }
        OciDistributionError::ServerError { code, .. } if *code >= 500 => {
            RegistryError::Unavailable {
                registry: registry.to_string(),
                message: format!("{what}: {error}"),
            }
        }
        _ => RegistryError::Invalid {
            registry: registry.to_string(),
            message: format!("{what}: {error}"),
        },
    }
}

/// The error and its sources on one line (reqwest hides "connection refused" in a source).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// `https://index.docker.io/v1/` and `docker.io` → `index.docker.io`; other hosts as they are,
/// without scheme or path.
pub fn normalize_host(host: &str) -> String {
    let host = host
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
        other => other.to_string(),
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Basic credentials per registry host from a Docker `config.json` (`auths.*.auth` is
/// base64 `user:password`; `username`/`password` are accepted too).
pub fn parse_docker_config(text: &str) -> Result<HashMap<String, RegistryAuth>, String> {
    let config: DockerConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut auths = HashMap::new();
    for (host, entry) in config.auths {
        let (user, password) = match (entry.auth, entry.username, entry.password) {
            (Some(encoded), _, _) => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .map_err(|e| format!("auths.{host}.auth: {e}"))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| format!("auths.{host}.auth: not UTF-8"))?;
                let (user, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| format!("auths.{host}.auth: expected user:password"))?;
                (user.to_string(), password.to_string())
            }
            (None, Some(user), Some(password)) => (user, password),
            _ => continue,
        };
        auths.insert(normalize_host(&host), RegistryAuth::Basic(user, password));
    }
    Ok(auths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths_are_read() {
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        let text = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "127.0.0.1:5000": {{"username": "u", "password": "p"}},
                "ghcr.io": {{}}}}}}"#
        );
        let auths = parse_docker_config(&text).unwrap_or_default();
        assert!(matches!(
            auths.get("index.docker.io"),
            Some(RegistryAuth::Basic(u, p)) if u == "robot" && p == "s3cret"
        ));
        assert!(matches!(
            auths.get("127.0.0.1:5000"),
            Some(RegistryAuth::Basic(u, p)) if u == "u" && p == "p"
        ));
        assert!(!auths.contains_key("ghcr.io"));
        assert!(parse_docker_config(r#"{"auths": {"x": {"auth": "bm9jb2xvbg=="}}}"#).is_err());
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
