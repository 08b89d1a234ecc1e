//! OCI registries, read as a hostile party might serve them:
//! - every body is streamed under a cap (manifests, indexes, signatures, blobs) and reading
//!   stops at the cap;
//! - HTTPS, except registries listed as `insecure` (loopback ones included);
//! - credentials go only to the registry they are configured for (and to the token service
//!   that registry names, over HTTPS), never across a redirect;
//! - redirects stay on the registry's host, except blob downloads to hosts listed for that
//!   registry (storage services);
//! - errors carry a status code and a fixed phrase, never a response body;
//! - every manifest and blob is checked against its digest.
//!
//! Reads use reqwest directly (oci-client reads whole bodies and follows redirects anywhere);
//! uploads (`meshgate push`/`sign`) go through oci-client, which authenticates only requests
//! to the registry itself, over a reqwest client that drops credentials on a cross-host
//! redirect.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciImageIndex;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::{ACCEPT, AUTHORIZATION, LOCATION, WWW_AUTHENTICATE};
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use crate::config::RegistryAccess;
use crate::oci::{at_digest, at_tag, is_sha256_digest, is_tag, normalize_host, sha256_digest};

/// Manifest media types this client asks for.
pub const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Largest manifest, index or metadata blob (image config) read into memory.
pub const MAX_METADATA_BYTES: usize = 4 * 1024 * 1024;

/// Largest signature object (simple-signing payload, sigstore bundle) read into memory: real
/// ones are a few kilobytes.
pub const MAX_SIGNATURE_BYTES: usize = 256 * 1024;

/// Signatures read per layout and digest; more are ignored (and said so), which bounds the
/// work and memory a registry can ask for.
pub const MAX_SIGNATURES: usize = 32;

/// Largest token service answer read.
const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// Redirects followed by one request.
const MAX_REDIRECTS: usize = 5;

/// Longest registry-supplied string (a digest, a media type) repeated in a message.
const MAX_SHOWN: usize = 100;

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
    /// The credentials or registry configuration is unusable.
    #[error("registry credentials: {0}")]
    Credentials(String),
}

impl RegistryError {
    /// Whether the error means "could not ask" rather than "asked and got an answer".
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}

fn invalid(registry: &str, message: String) -> RegistryError {
    RegistryError::Invalid {
        registry: registry.to_string(),
        message,
    }
}

/// A manifest as served: its bytes, their digest, and its media type.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The raw JSON.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
    /// Parsed JSON (an object).
    pub json: serde_json::Value,
}

impl Manifest {
    /// Checks served manifest bytes: at most [`MAX_METADATA_BYTES`], hashing to `expected`
    /// when given, a JSON object. The error is a fixed phrase (no bytes of the input).
    pub fn parse(bytes: Vec<u8>, expected: Option<&str>) -> Result<Self, String> {
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(format!("is larger than {MAX_METADATA_BYTES} bytes"));
        }
        let digest = sha256_digest(&bytes);
        if let Some(expected) = expected
            && expected != digest
        {
            return Err(format!("has digest {digest}"));
        }
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(json_error)?;
        if !json.is_object() {
            return Err("is not a JSON object".into());
        }
        Ok(Self {
            bytes,
            digest,
            json,
        })
    }

    /// `mediaType` of the manifest (from its body).
    pub fn media_type(&self) -> &str {
        self.json["mediaType"].as_str().unwrap_or("")
    }

    /// Whether this is an image index / manifest list.
    pub fn is_index(&self) -> bool {
        self.json.get("manifests").is_some()
    }
}

/// Parses an image index (a referrers answer or the referrers tag schema's index); the error
/// is a fixed phrase.
pub fn parse_index(bytes: &[u8]) -> Result<OciImageIndex, String> {
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(format!("is larger than {MAX_METADATA_BYTES} bytes"));
    }
    serde_json::from_slice(bytes).map_err(json_error)
}

/// What a JSON parse error says, without the input's text (serde quotes offending strings).
pub fn json_error(error: serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "not of the expected shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    format!("{kind} (line {} column {})", error.line(), error.column())
}

/// A registry-supplied string fit for a message: at most [`MAX_SHOWN`] characters, control
/// characters replaced.
pub fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_SHOWN)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(MAX_SHOWN).is_some() {
        out.push('…');
    }
    out
}

/// Per-registry settings.
#[derive(Debug, Clone, Default)]
struct Host {
    /// Basic credentials for this registry only.
    credentials: Option<(String, String)>,
    /// Plain HTTP.
    insecure: bool,
    /// Where blob downloads may be redirected (`host[:port]` globs).
    blob_redirects: Vec<glob::Pattern>,
    /// Token services on other hosts this registry may name (`host[:port]` globs).
    token_realms: Vec<glob::Pattern>,
}

/// An `Authorization` value for a (registry, repository), valid until an instant.
type Tokens = HashMap<(String, String), (String, Instant)>;

/// Registry access shared by the webhook and the CLI.
pub struct Registries {
    /// Reads: no automatic redirects (they are followed by hand, by the rules above).
    http: reqwest::Client,
    /// Upload clients by registry (each speaks one protocol and keeps its tokens).
    push: Mutex<HashMap<String, Client>>,
    timeout: Duration,
    hosts: HashMap<String, Host>,
    /// Entries whose `host` is a glob (`127.0.0.1:*`), in order: protocol and redirects only.
    patterns: Vec<(glob::Pattern, Host)>,
    /// Settings for every registry (the CLI's blob redirects).
    other: Host,
    tokens: Mutex<Tokens>,
}

/// Whether a configured host is a glob rather than one host (`[` is left to IPv6 literals).
fn is_pattern(host: &str) -> bool {
    host.contains(['*', '?'])
}

impl Registries {
    /// Access per the webhook's configuration: `access` entries win over `docker_config` (a
    /// Docker `config.json`, as mounted from an imagePullSecret). `timeout` bounds connecting
    /// and each read. Blob redirects leave a registry's host only to its
    /// `blobRedirectHosts`.
    pub fn new(
        access: &[RegistryAccess],
        docker_config: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, RegistryError> {
        let mut hosts: HashMap<String, Host> = HashMap::new();
        if let Some(path) = docker_config {
            let text = std::fs::read_to_string(path)
                .map_err(|e| RegistryError::Credentials(format!("{}: {e}", path.display())))?;
            let auths = parse_docker_config(&text)
                .map_err(|e| RegistryError::Credentials(format!("{}: {e}", path.display())))?;
            for (host, auth) in auths {
                if let RegistryAuth::Basic(user, password) = auth {
                    hosts.entry(host).or_default().credentials = Some((user, password));
                }
            }
        }
        let mut patterns = Vec::new();
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
            let mut pattern = Host::default();
            let host = if is_pattern(&entry.host) {
                &mut pattern
            } else {
                hosts.entry(normalize_host(&entry.host)).or_default()
            };
            match (&entry.username, password) {
                // Credentials belong to one host, never to a family of them.
                (Some(_), Some(_)) if is_pattern(&entry.host) => {
                    return Err(RegistryError::Credentials(format!(
                        "{}: credentials need an exact host, not a glob",
                        entry.host
                    )));
                }
                (Some(user), Some(password)) => {
                    host.credentials = Some((user.clone(), password));
                }
                (None, None) => {}
                _ => {
                    return Err(RegistryError::Credentials(format!(
                        "{}: username and password go together",
                        entry.host
                    )));
                }
            }
            host.insecure |= entry.insecure;
            for text in &entry.blob_redirect_hosts {
                host.blob_redirects
                    .push(glob::Pattern::new(text).map_err(|e| {
                        RegistryError::Credentials(format!(
                            "{}: blobRedirectHosts {text}: {e}",
                            entry.host
                        ))
                    })?);
            }
            for text in &entry.token_realm_hosts {
                host.token_realms
                    .push(glob::Pattern::new(text).map_err(|e| {
                        RegistryError::Credentials(format!(
                            "{}: tokenRealmHosts {text}: {e}",
                            entry.host
                        ))
                    })?);
            }
            if is_pattern(&entry.host) {
                let glob = glob::Pattern::new(&entry.host)
                    .map_err(|e| RegistryError::Credentials(format!("host {}: {e}", entry.host)))?;
                patterns.push((glob, pattern));
            }
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("meshgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Credentials(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            push: Mutex::new(HashMap::new()),
            timeout,
            hosts,
            patterns,
            other: Host::default(),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The CLI's access: credentials from `MESHGATE_REGISTRY_USERNAME`/`_PASSWORD` for the
    /// one registry `MESHGATE_REGISTRY_HOST` names (required with them), plain HTTP only to
    /// `insecure` hosts. Blob downloads may follow a redirect to any HTTPS host (without
    /// credentials), as registries send them to storage services; the CLI is not a server
    /// that others can point at internal addresses.
    pub fn from_env(insecure: &[String], timeout: Duration) -> Result<Self, RegistryError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (user, password, host) = (
            var("MESHGATE_REGISTRY_USERNAME"),
            var("MESHGATE_REGISTRY_PASSWORD"),
            var("MESHGATE_REGISTRY_HOST"),
        );
        let mut access: Vec<RegistryAccess> = insecure
            .iter()
            .map(|host| RegistryAccess {
                host: host.clone(),
                username: None,
                password: None,
                password_file: None,
                insecure: true,
                blob_redirect_hosts: Vec::new(),
                token_realm_hosts: Vec::new(),
            })
            .collect();
        match (user, password, host) {
            (None, None, _) => {}
            (Some(_), Some(_), Some(host)) if is_pattern(&host) => {
                return Err(RegistryError::Credentials(format!(
                    "MESHGATE_REGISTRY_HOST {host}: one registry host, not a glob"
                )));
            }
            (Some(user), Some(password), Some(host)) => access.push(RegistryAccess {
                host,
                username: Some(user),
                password: Some(password),
                password_file: None,
                insecure: false,
                blob_redirect_hosts: Vec::new(),
                token_realm_hosts: Vec::new(),
            }),
            (Some(_), Some(_), None) => {
                return Err(RegistryError::Credentials(
                    "MESHGATE_REGISTRY_USERNAME/_PASSWORD need MESHGATE_REGISTRY_HOST, the \
                     registry they are for (they are sent to no other)"
                        .into(),
                ));
            }
            _ => {
                return Err(RegistryError::Credentials(
                    "MESHGATE_REGISTRY_USERNAME and MESHGATE_REGISTRY_PASSWORD go together".into(),
                ));
            }
        }
        let mut registries = Self::new(&access, None, timeout)?;
        let any = glob::Pattern::new("*")
            .map_err(|e| RegistryError::Credentials(format!("redirect pattern: {e}")))?;
        // Token services too may be on any host, as Docker clients allow.
        registries.other.token_realms = vec![any.clone()];
        registries.other.blob_redirects = vec![any];
        Ok(registries)
    }

    /// Every entry that applies to `registry`: its own, and the globs matching it.
    fn entries<'a>(&'a self, registry: &'a str) -> impl Iterator<Item = &'a Host> + 'a {
        let globs = self
            .patterns
            .iter()
            .filter(move |(glob, _)| glob.matches(registry))
            .map(|(_, host)| host);
        self.hosts.get(registry).into_iter().chain(globs)
    }

    /// Whether plain HTTP is used for `registry`: only when an entry lists it as insecure.
    pub fn plain_http(&self, registry: &str) -> bool {
        self.entries(registry).any(|h| h.insecure)
    }

    /// Basic credentials for `registry`: only those configured for that exact host.
    fn credentials(&self, registry: &str) -> Option<&(String, String)> {
        self.hosts.get(registry)?.credentials.as_ref()
    }

    /// The credentials used for `registry` (anonymous unless configured for that host).
    pub fn auth(&self, registry: &str) -> RegistryAuth {
        match self.credentials(registry) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// The upload client for `registry` (HTTPS unless it is listed as insecure), for
    /// [`crate::artifact::push`]. Clones share their token cache.
    pub fn push_client(&self, registry: &str) -> Client {
        let mut clients = self.push.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(registry.to_string())
            .or_insert_with(|| {
                Client::new(ClientConfig {
                    protocol: if self.plain_http(registry) {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    connect_timeout: Some(self.timeout),
                    read_timeout: Some(self.timeout),
                    ..Default::default()
                })
            })
            .clone()
    }

    /// GETs `/v2/<repository>/<path>` of the reference's registry and reads at most `max`
    /// bytes of the answer, authenticating when challenged.
    #[allow(clippy::too_many_arguments)]
    async fn get(
        &self,
        reference: &Reference,
        path: &str,
        query: &[(&str, &str)],
        accept: &str,
        what: &str,
        blob: bool,
        max: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        let registry = reference.resolve_registry().to_string();
        let repository = reference.repository().to_string();
        let scheme = if self.plain_http(&registry) {
            "http"
        } else {
            "https"
        };
        let mut url = Url::parse(&format!("{scheme}://{registry}/v2/{repository}/{path}"))
            .map_err(|_| invalid(&registry, format!("{what}: not a valid URL")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let key = (registry.clone(), repository.clone());
        let mut authorization = self.cached_token(&key);
        let mut challenged = false;
        loop {
            let response = self
                .send(
                    &url,
                    &registry,
                    accept,
                    authorization.as_deref(),
                    blob,
                    what,
                )
                .await?;
            let status = response.status();
            if status.is_success() {
                return read_capped(response, max)
                    .await
                    .map_err(|e| e.into_error(&registry, what, max));
            }
            if status == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let (value, valid_for) = self
                    .authorize(&registry, &repository, challenge.as_deref(), what)
                    .await?;
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key.clone(), (value.clone(), Instant::now() + valid_for));
                authorization = Some(value);
                continue;
            }
            return Err(status_error(&registry, what, status));
        }
    }

    fn cached_token(&self, key: &(String, String)) -> Option<String> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        match tokens.get(key) {
            Some((value, until)) if *until > Instant::now() => Some(value.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    /// Sends a GET, following redirects by hand: on the registry's own origin with the
    /// credentials; elsewhere only for blobs, to the registry's listed hosts, without them.
    async fn send(
        &self,
        start: &Url,
        registry: &str,
        accept: &str,
        authorization: Option<&str>,
        blob: bool,
        what: &str,
    ) -> Result<reqwest::Response, RegistryError> {
        let mut url = start.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = self.http.get(url.clone()).header(ACCEPT, accept);
            if let Some(value) = authorization
                && same_origin(&url, start)
            {
                request = request.header(AUTHORIZATION, value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| transport_error(registry, what, e))?;
            let status = response.status();
            if !status.is_redirection() {
                return Ok(response);
            }
            let next = response
                .headers()
                .get(LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| {
                    invalid(
                        registry,
                        format!(
                            "{what}: redirect without a usable location (HTTP {})",
                            status.as_u16()
                        ),
                    )
                })?;
            let allowed =
                same_origin(&next, start) || (blob && self.redirect_allowed(registry, &next));
            if !allowed {
                return Err(invalid(
                    registry,
                    format!(
                        "{what}: redirect to another host refused (HTTP {})",
                        status.as_u16()
                    ),
                ));
            }
            url = next;
        }
        Err(invalid(registry, format!("{what}: too many redirects")))
    }

    /// Whether a blob download may be redirected to `url`: a listed host, over HTTPS (plain
    /// HTTP only to a host listed as insecure).
    fn redirect_allowed(&self, registry: &str, url: &Url) -> bool {
        let target = host_port(url);
        let scheme_ok = match url.scheme() {
            "https" => true,
            "http" => self.plain_http(&target),
            _ => false,
        };
        scheme_ok
            && self
                .entries(registry)
                .chain(std::iter::once(&self.other))
                .any(|h| h.blob_redirects.iter().any(|p| p.matches(&target)))
    }

    /// Whether `registry`'s challenge may send the webhook to a token service on
    /// `realm_host`: its own host, a host its entries list in `tokenRealmHosts`, and Docker
    /// Hub's `auth.docker.io` for Docker Hub.
    fn token_realm_allowed(&self, registry: &str, realm_host: &str) -> bool {
        realm_host.eq_ignore_ascii_case(registry)
            || (registry == "index.docker.io" && realm_host == "auth.docker.io")
            || self
                .entries(registry)
                .chain(std::iter::once(&self.other))
                .any(|h| h.token_realms.iter().any(|p| p.matches(realm_host)))
    }

    /// Answers an auth challenge: basic credentials for `Basic`, a pull token from the token
    /// service for `Bearer`. Returns the `Authorization` value and how long to reuse it.
    async fn authorize(
        &self,
        registry: &str,
        repository: &str,
        challenge: Option<&str>,
        what: &str,
    ) -> Result<(String, Duration), RegistryError> {
        let denied = || {
            invalid(
                registry,
                format!("{what}: authentication required (HTTP 401)"),
            )
        };
        let (scheme, params) = challenge.map(parse_challenge).ok_or_else(denied)?;
        if scheme.eq_ignore_ascii_case("basic") {
            let (user, password) = self.credentials(registry).ok_or_else(denied)?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            return Ok((format!("Basic {encoded}"), Duration::from_secs(3600)));
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(denied());
        }
        let realm = params
            .get("realm")
            .and_then(|r| Url::parse(r).ok())
            .ok_or_else(|| invalid(registry, format!("{what}: unusable token service URL")))?;
        // Credentials travel to the token service only over TLS, or in plain text to a host
        // the configuration lists as insecure.
        let realm_ok = match realm.scheme() {
            "https" => true,
            "http" => self.plain_http(&host_port(&realm)),
            _ => false,
        };
        if !realm_ok {
            return Err(invalid(
                registry,
                format!("{what}: token service is not HTTPS"),
            ));
        }
        // The registry picks the URL, path and query included: on another host it would make
        // the webhook a GET proxy into the network. Only its own host and the hosts listed
        // for it are asked.
        if !self.token_realm_allowed(registry, &host_port(&realm)) {
            return Err(invalid(
                registry,
                format!("{what}: token service on another host refused (not in tokenRealmHosts)"),
            ));
        }
        let mut url = realm;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = params.get("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &format!("repository:{repository}:pull"));
        }
        let mut request = self.http.get(url);
        if let Some((user, password)) = self.credentials(registry) {
            request = request.basic_auth(user, Some(password));
        }
        let token_what = format!("{what}: token");
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(registry, &token_what, e))?;
        if !response.status().is_success() {
            return Err(status_error(registry, &token_what, response.status()));
        }
        let body = read_capped(response, MAX_TOKEN_BYTES)
            .await
            .map_err(|e| e.into_error(registry, &token_what, MAX_TOKEN_BYTES))?;
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
            invalid(
                registry,
                format!("{token_what} answer is {}", json_error(e)),
            )
        })?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| invalid(registry, format!("{token_what} answer has no usable token")))?;
        // Reused a little less long than it lives.
        let lifetime = answer.expires_in.unwrap_or(60).clamp(10, 3600);
        Ok((
            format!("Bearer {token}"),
            Duration::from_secs(lifetime.saturating_sub(5)),
        ))
    }

    /// Fetches a manifest by tag or digest. When the reference has a digest, the bytes must
    /// hash to it.
    pub async fn manifest(&self, reference: &Reference) -> Result<Manifest, RegistryError> {
        let registry = reference.resolve_registry().to_string();
        let what = format!("manifest {}", shown(&reference.whole()));
        let target = match (reference.digest(), reference.tag()) {
            (Some(digest), _) if is_sha256_digest(digest) => digest.to_string(),
            (Some(_), _) => return Err(invalid(&registry, format!("{what}: not a sha256 digest"))),
            (None, Some(tag)) if is_tag(tag) => tag.to_string(),
            (None, Some(_)) => return Err(invalid(&registry, format!("{what}: invalid tag"))),
            (None, None) => "latest".to_string(),
        };
        let bytes = self
            .get(
                reference,
                &format!("manifests/{target}"),
                &[],
                &MANIFEST_TYPES.join(", "),
                &what,
                false,
                MAX_METADATA_BYTES,
            )
            .await?;
        Manifest::parse(bytes, reference.digest())
            .map_err(|reason| invalid(&registry, format!("{what} {reason}")))
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
        let registry = reference.resolve_registry().to_string();
        let what = format!("blob {}", shown(digest));
        if !is_sha256_digest(digest) {
            return Err(invalid(&registry, format!("{what}: not a sha256 digest")));
        }
        let bytes = self
            .get(
                reference,
                &format!("blobs/{digest}"),
                &[],
                "*/*",
                &what,
                true,
                max_bytes,
            )
            .await?;
        if sha256_digest(&bytes) != digest {
            return Err(invalid(
                &registry,
                format!("{what} does not match its digest"),
            ));
        }
        Ok(bytes)
    }

    /// The referrers of `subject` (a reference by digest) of `artifact_type`: the referrers
    /// API, or the `sha256-<hex>` tag index on registries without it (a 404 from the API).
    pub async fn referrers(
        &self,
        subject: &Reference,
        artifact_type: &str,
    ) -> Result<OciImageIndex, RegistryError> {
        let registry = subject.resolve_registry().to_string();
        let what = format!("referrers of {}", shown(&subject.whole()));
        let Some(digest) = subject.digest().filter(|d| is_sha256_digest(d)) else {
            return Err(invalid(&registry, format!("{what}: not a sha256 digest")));
        };
        let answer = self
            .get(
                subject,
                &format!("referrers/{digest}"),
                &[("artifactType", artifact_type)],
                "application/vnd.oci.image.index.v1+json",
                &what,
                false,
                MAX_METADATA_BYTES,
            )
            .await;
        let mut index = match answer {
            Ok(bytes) => parse_index(&bytes)
                .map_err(|reason| invalid(&registry, format!("{what}: index {reason}")))?,
            Err(RegistryError::NotFound { .. }) => {
                let tag = Reference::with_tag(
                    subject.registry().to_string(),
                    subject.repository().to_string(),
                    digest.replace(':', "-"),
                );
                match self.manifest_if_exists(&tag).await? {
                    // Not an index: no referrers (the spec's advice for a broken tag).
                    Some(manifest) => {
                        parse_index(&manifest.bytes).unwrap_or_else(|_| empty_index())
                    }
                    None => empty_index(),
                }
            }
            Err(e) => return Err(e),
        };
        index
            .manifests
            .retain(|m| m.artifact_type.as_deref() == Some(artifact_type));
        Ok(index)
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
            Some(tag) => at_tag(repository, tag),
            None => at_digest(repository, &digest),
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

    async fn prepare_push(&self, reference: &Reference) -> (Client, String) {
        let registry = reference.resolve_registry().to_string();
        let client = self.push_client(&registry);
        let auth = self.auth(&registry);
        client.store_auth_if_needed(&registry, &auth).await;
        // Pushing needs a token with push scope; `auth` asks for it (a no-op for anonymous
        // registries without token auth).
        let _ = client
            .auth(reference, &auth, oci_client::RegistryOperation::Push)
            .await;
        (client, registry)
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

fn empty_index() -> OciImageIndex {
    OciImageIndex {
        schema_version: 2,
        media_type: Some("application/vnd.oci.image.index.v1+json".into()),
        manifests: Vec::new(),
        artifact_type: None,
        annotations: None,
    }
}

/// `host[:port]` of a URL, as registries are named in references.
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `Bearer realm="…",service="…"` → (`Bearer`, {realm, service}). Lenient: unknown or
/// malformed parameters are skipped.
pub fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let header = header.trim();
    let (scheme, mut rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        let Some((name, after)) = rest.split_once('=') else {
            break;
        };
        let name = name.trim().to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(name, value.trim().to_string());
        rest = next;
    }
    (scheme.to_string(), params)
}

/// Why reading a body failed.
enum ReadError {
    TooLarge,
    Transport(reqwest::Error),
}

impl ReadError {
    fn into_error(self, registry: &str, what: &str, max: usize) -> RegistryError {
        match self {
            ReadError::TooLarge => invalid(registry, format!("{what} is larger than {max} bytes")),
            ReadError::Transport(e) => RegistryError::Unavailable {
                registry: registry.to_string(),
                message: format!("reading {what}: {}", error_chain(&e.without_url())),
            },
        }
    }
}

/// Reads a body, stopping as soon as it would pass `max` bytes (a declared length over it
/// stops before reading).
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, ReadError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(ReadError::TooLarge);
    }
    // Sized once from the declared length (bounded above): growing by doubling would briefly
    // hold one and a half times the blob.
    let declared = response.content_length().unwrap_or(0) as usize;
    let mut bytes = Vec::with_capacity(declared.min(max));
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if bytes.len() + chunk.len() > max {
            return Err(ReadError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// An HTTP status as an error: the code and a fixed phrase, never the body.
fn status_error(registry: &str, what: &str, status: StatusCode) -> RegistryError {
    let code = status.as_u16();
    match code {
        404 => RegistryError::NotFound {
            registry: registry.to_string(),
            what: what.to_string(),
        },
        401 | 403 => invalid(registry, format!("{what}: access denied (HTTP {code})")),
        429 | 500..=599 => RegistryError::Unavailable {
            registry: registry.to_string(),
            message: format!("{what}: HTTP {code}"),
        },
        _ => invalid(registry, format!("{what}: unexpected HTTP {code}")),
    }
}

fn transport_error(registry: &str, what: &str, error: reqwest::Error) -> RegistryError {
    RegistryError::Unavailable {
        registry: registry.to_string(),
        message: format!("{what}: {}", error_chain(&error.without_url())),
    }
}

/// Turns an upload error into one that says whether the registry answered, in fixed
/// phrases (oci-client's messages carry response bodies).
pub fn upload_error(registry: &str, what: &str, error: OciDistributionError) -> RegistryError {
    classify(registry, what, error)
}

fn classify(registry: &str, what: &str, error: OciDistributionError) -> RegistryError {
    let not_found = || RegistryError::NotFound {
        registry: registry.to_string(),
        what: what.to_string(),
    };
    let phrase = match &error {
        OciDistributionError::ImageManifestNotFoundError(_) => return not_found(),
        OciDistributionError::ServerError { code: 404, .. } => return not_found(),
        OciDistributionError::RegistryError { envelope, .. } => {
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                return not_found();
            }
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| match &e.code {
                    OciErrorCode::Other(_) => "OTHER".to_string(),
                    code => format!("{code:?}").to_uppercase(),
                })
                .collect();
            format!("registry error {}", codes.join(", "))
        }
        OciDistributionError::RequestError(_) | OciDistributionError::IoError(_) => {
            return RegistryError::Unavailable {
                registry: registry.to_string(),
                message: format!("{what}: {}", error_chain(&error)),
            };
        }
        OciDistributionError::ServerError { code, .. } if *code >= 500 || *code == 429 => {
            return RegistryError::Unavailable {
                registry: registry.to_string(),
                message: format!("{what}: HTTP {code}"),
            };
        }
        OciDistributionError::ServerError { code, .. } => format!("HTTP {code}"),
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => "authentication failed".into(),
        OciDistributionError::DigestError(_) => "digest mismatch".into(),
        _ => "the registry refused the request".into(),
    };
    invalid(registry, format!("{what}: {phrase}"))
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
mod proptests;

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
    fn challenges_are_parsed() {
        let (scheme, params) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull");
        let (scheme, params) = parse_challenge("Basic realm=registry");
        assert_eq!(scheme, "Basic");
        assert_eq!(params["realm"], "registry");
        let (scheme, params) = parse_challenge("Bearer realm=\"unterminated");
        assert_eq!(scheme, "Bearer");
        assert_eq!(params["realm"], "unterminated");
    }

    #[test]
    fn glob_hosts_carry_protocol_but_not_credentials() {
        let entry = |host: &str, user: Option<&str>, insecure: bool| RegistryAccess {
            host: host.into(),
            username: user.map(str::to_string),
            password: user.map(|_| "secret".to_string()),
            password_file: None,
            insecure,
            blob_redirect_hosts: Vec::new(),
            token_realm_hosts: Vec::new(),
        };
        let timeout = Duration::from_secs(1);
        let registries = Registries::new(
            &[
                entry("127.0.0.1:*", None, true),
                entry("registry.example:5000", Some("robot"), false),
                entry("127.0.0.1:6000", Some("local"), false),
            ],
            None,
            timeout,
        )
        .unwrap();
        assert!(registries.plain_http("127.0.0.1:5000"));
        assert!(
            !registries.plain_http("localhost:5000"),
            "loopback is not special"
        );
        assert!(!registries.plain_http("registry.example:5000"));
        assert!(
            matches!(registries.auth("registry.example:5000"), RegistryAuth::Basic(u, _) if u == "robot")
        );
        assert!(matches!(
            registries.auth("registry.example"),
            RegistryAuth::Anonymous
        ));
        assert!(matches!(
            registries.auth("127.0.0.1:5000"),
            RegistryAuth::Anonymous
        ));
        // An exact entry and a glob both apply: credentials from the one, protocol from both.
        assert!(registries.plain_http("127.0.0.1:6000"));
        assert!(
            matches!(registries.auth("127.0.0.1:6000"), RegistryAuth::Basic(u, _) if u == "local")
        );
        assert!(
            Registries::new(&[entry("*.example", Some("robot"), false)], None, timeout).is_err()
        );
    }

    #[test]
    fn registry_strings_in_messages_are_bounded() {
        assert_eq!(shown("sha256:ab"), "sha256:ab");
        let long = shown(&"x".repeat(10_000));
        assert!(long.chars().count() <= MAX_SHOWN + 1, "{long}");
        assert_eq!(shown("a\nb"), "a?b");
        // serde would quote the offending string; the phrase does not.
        let err = Manifest::parse(br#"{"a": "SECRET" "#.to_vec(), None).unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
        let err = parse_index(br#"{"manifests": "SECRET-VALUE"}"#).unwrap_err();
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            sha256_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
