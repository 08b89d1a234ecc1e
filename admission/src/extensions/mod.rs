//! The mesh's own Wasm: Istio `WasmPlugin`s and `EnvoyFilter`s and Envoy Gateway
//! `EnvoyExtensionPolicy`s name modules that every proxy they reach downloads and runs, with
//! the power to read and change every request. Before such an object is admitted, each module
//! it names is found ([`find_modules`]) and checked ([`ModuleChecker`]): an `oci://` module
//! against the image trust rules and pinned to the digest verified, an `http(s)://` module
//! fetched from an allowed host and held to its `sha256`, and every module read to be a
//! proxy-wasm module Envoy can link ([`proxy_wasm`]). Policies then see the object with the
//! facts of its modules (`input.modules`).

mod check;
mod fetch;
pub mod proxy_wasm;

pub use check::{ModuleChecker, ModuleChecks};

use base64::Engine as _;
use serde_json::Value as Json;

/// Most modules one object may name; more are refused, so one review's work stays bounded.
pub const MAX_MODULES: usize = 16;

/// The kinds whose modules are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionKind {
    /// `extensions.istio.io` WasmPlugin.
    WasmPlugin,
    /// `networking.istio.io` EnvoyFilter.
    EnvoyFilter,
    /// `gateway.envoyproxy.io` EnvoyExtensionPolicy.
    EnvoyExtensionPolicy,
}

impl ExtensionKind {
    /// The kind a request's `kind` (group and kind) names, if it carries Wasm modules.
    pub fn of(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            ("extensions.istio.io", "WasmPlugin") => Some(Self::WasmPlugin),
            ("networking.istio.io", "EnvoyFilter") => Some(Self::EnvoyFilter),
            ("gateway.envoyproxy.io", "EnvoyExtensionPolicy") => Some(Self::EnvoyExtensionPolicy),
            _ => None,
        }
    }
}

/// Where a module comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An OCI artifact; the reference without `oci://`.
    Oci(String),
    /// Fetched over HTTP(S) by the proxy; the URL.
    Http(String),
    /// A file on the proxy's filesystem (`file://` URL, EnvoyFilter `local.filename`).
    File(String),
    /// Inline in the object (EnvoyFilter `local.inline_bytes` / `inline_string`).
    Inline(Vec<u8>),
    /// Envoy's NullVM: code compiled into the proxy, named by `inline_string`.
    Builtin(String),
    /// A source the webhook cannot check (Envoy Gateway `ConfigMap` code); the reason.
    Unverifiable(String),
}

impl Source {
    /// `oci`, `http`, `https`, `file`, `inline`, `builtin`, `unverifiable`.
    pub fn label(&self) -> &'static str {
        match self {
            Source::Oci(_) => "oci",
            Source::Http(url) if url.starts_with("https://") => "https",
            Source::Http(_) => "http",
            Source::File(_) => "file",
            Source::Inline(_) => "inline",
            Source::Builtin(_) => "builtin",
            Source::Unverifiable(_) => "unverifiable",
        }
    }
}

/// One module an object names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleRef {
    /// How facts and messages name it: the URL as written, `file:<path>`,
    /// `inline:<sha256 hex>` or `builtin:<name>`.
    pub key: String,
    /// Where it comes from.
    pub source: Source,
    /// JSON pointer of the field that names it, in the object (`/spec/url`).
    pub path: String,
    /// The `sha256` the object declares, lowercase hex without `sha256:`.
    pub sha256: Option<String>,
}

/// Why an object's modules cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FindError(pub String);

/// The modules an object of `kind` names, in the order they appear.
pub fn find_modules(kind: ExtensionKind, object: &Json) -> Result<Vec<ModuleRef>, FindError> {
    let mut found = Vec::new();
    match kind {
        ExtensionKind::WasmPlugin => {
            let url = object
                .pointer("/spec/url")
                .and_then(Json::as_str)
                .ok_or_else(|| FindError("spec.url is missing".into()))?;
            let sha256 = declared_sha256(object.pointer("/spec/sha256"))?;
            found.push(from_url(url, "/spec/url", sha256, true)?);
        }
        ExtensionKind::EnvoyFilter => {
            let patches = array_at(object, "/spec/configPatches")?;
            for (i, patch) in patches.iter().enumerate() {
                if let Some(value) = patch.pointer("/patch/value") {
                    vm_configs(
                        value,
                        &format!("/spec/configPatches/{i}/patch/value"),
                        &mut found,
                    )?;
                }
            }
        }
        ExtensionKind::EnvoyExtensionPolicy => {
            let wasms = array_at(object, "/spec/wasm")?;
            for (i, wasm) in wasms.iter().enumerate() {
                let at = format!("/spec/wasm/{i}/code");
                let code = wasm.get("code").unwrap_or(&Json::Null);
                let kind = code.get("type").and_then(Json::as_str).unwrap_or("");
                match kind {
                    "HTTP" => {
                        let url = code
                            .pointer("/http/url")
                            .and_then(Json::as_str)
                            .ok_or_else(|| FindError(format!("{at}/http/url is missing")))?;
                        let sha256 = declared_sha256(code.pointer("/http/sha256"))?;
                        found.push(from_url(url, &format!("{at}/http/url"), sha256, false)?);
                    }
                    "Image" => {
                        let url = code
                            .pointer("/image/url")
                            .and_then(Json::as_str)
                            .ok_or_else(|| FindError(format!("{at}/image/url is missing")))?;
                        let sha256 = declared_sha256(code.pointer("/image/sha256"))?;
                        let module = from_url(url, &format!("{at}/image/url"), sha256, true)?;
                        if !matches!(module.source, Source::Oci(_)) {
                            // Envoy Gateway reads an Image url as an OCI reference, whatever
                            // its scheme.
                            return Err(FindError(format!(
                                "{at}/image/url: an Image code source must be an OCI reference"
                            )));
                        }
                        found.push(module);
                    }
                    other => found.push(ModuleRef {
                        key: format!("{}:{at}", other.to_ascii_lowercase()),
                        source: Source::Unverifiable(format!(
                            "code type {} cannot be verified by the webhook",
                            crate::review::decode::clip(other)
                        )),
                        path: format!("{at}/type"),
                        sha256: None,
                    }),
                }
            }
        }
    }
    if found.len() > MAX_MODULES {
        return Err(FindError(format!(
            "names {} Wasm modules, more than {MAX_MODULES}",
            found.len()
        )));
    }
    Ok(found)
}

/// A URL as Istio and Envoy Gateway read it: `oci://`, `http(s)://`, `file://`, or (where
/// `bare_is_oci`) an image reference without a scheme.
fn from_url(
    url: &str,
    path: &str,
    sha256: Option<String>,
    bare_is_oci: bool,
) -> Result<ModuleRef, FindError> {
    let source = if let Some(reference) = url.strip_prefix("oci://") {
        Source::Oci(reference.to_string())
    } else if url.starts_with("http://") || url.starts_with("https://") {
        Source::Http(url.to_string())
    } else if let Some(file) = url.strip_prefix("file://") {
        Source::File(file.to_string())
    } else if bare_is_oci && !url.contains("://") {
        Source::Oci(url.to_string())
    } else {
        return Err(FindError(format!(
            "{path}: unsupported module URL {}",
            crate::review::decode::clip(url)
        )));
    };
    let key = match &source {
        Source::File(file) => format!("file:{file}"),
        _ => url.to_string(),
    };
    Ok(ModuleRef {
        key,
        source,
        path: path.to_string(),
        sha256,
    })
}

/// A declared `sha256`: 64 lowercase hex digits, as Istio and Envoy compare it (another
/// spelling would pass here and fail in the proxy).
fn declared_sha256(value: Option<&Json>) -> Result<Option<String>, FindError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let text = value
        .as_str()
        .ok_or_else(|| FindError("sha256 must be a string".into()))?;
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() != 64 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(FindError(format!(
            "sha256 {} is not 64 lowercase hex digits (the proxy compares it as written)",
            crate::review::decode::clip(text)
        )));
    }
    Ok(Some(text.to_string()))
}

/// The array at `pointer`, empty when absent; another type is refused (the API server's schema
/// would too, but the webhook does not rely on it).
fn array_at<'a>(object: &'a Json, pointer: &str) -> Result<&'a [Json], FindError> {
    match object.pointer(pointer) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(_) => Err(FindError(format!("{pointer} must be a list"))),
    }
}

/// The field spelled `snake` or `camel` (Envoy's config takes both proto spellings), with the
/// key found; `None` when absent or null (the decoder treats null as unset). Both spellings
/// present is refused, null included: Istio's decoder takes the camelCase one, so a reader
/// preferring the other would check code the proxy never runs.
fn field<'a>(
    object: &'a Json,
    snake: &'static str,
    camel: &'static str,
    at: &str,
) -> Result<Option<(&'a Json, &'static str)>, FindError> {
    let (a, b) = (object.get(snake), object.get(camel));
    if snake != camel && a.is_some() && b.is_some() {
        return Err(FindError(format!(
            "{at}: both {snake} and {camel} are set; the proxy would read only one of them"
        )));
    }
    Ok(a.map(|v| (v, snake))
        .or_else(|| b.map(|v| (v, camel)))
        .filter(|(v, _)| !v.is_null()))
}

/// Of a oneof's members (each in both spellings), the one set. More than one key present,
/// null included, is refused: the decoder keeps one by rules a reader need not share.
fn one_of<'a>(
    object: &'a Json,
    members: &[(&'static str, &'static str)],
    at: &str,
) -> Result<Option<(&'a Json, &'static str)>, FindError> {
    let mut present = Vec::new();
    for (snake, camel) in members {
        // Both spellings of one member are refused by `field`, with their names.
        field(object, snake, camel, at)?;
        if let Some(key) = [*snake, *camel]
            .into_iter()
            .find(|k| object.get(*k).is_some())
        {
            present.push(key);
        }
    }
    if present.len() > 1 {
        return Err(FindError(format!(
            "{at}: more than one code source is set ({}); the proxy would load only one of them",
            present.join(", ")
        )));
    }
    for (snake, camel) in members {
        if let Some(found) = field(object, snake, camel, at)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// Keys a `config_source` may hold when it is Istio's own ADS (every other source — a REST or
/// gRPC server, a file on the proxy — would deliver code the webhook never sees).
const ADS_SOURCE_KEYS: [&str; 7] = [
    "ads",
    "resource_api_version",
    "resourceApiVersion",
    "initial_fetch_timeout",
    "initialFetchTimeout",
    "authorities",
    "@type",
];

/// Every `vm_config` (or `vmConfig`) under an EnvoyFilter patch value, wherever it sits: an
/// HTTP or network Wasm filter, a TypedStruct wrapping one, a listener's filter chains, an
/// access logger. A walk rather than a list of known paths, so no nesting hides a module. An
/// extension config discovered from anywhere but ADS (`config_discovery`) is refused: Envoy
/// would fetch its code, Wasm included, from a server the webhook never asks.
fn vm_configs(value: &Json, at: &str, found: &mut Vec<ModuleRef>) -> Result<(), FindError> {
    match value {
        Json::Object(object) => {
            if let Some((config, key)) = field(value, "vm_config", "vmConfig", at)? {
                let here = format!("{at}/{key}");
                found.push(vm_config(config, &here)?);
            }
            if let Some((discovery, key)) = field(value, "config_discovery", "configDiscovery", at)?
            {
                let here = format!("{at}/{key}");
                let source = field(discovery, "config_source", "configSource", &here)?
                    .map(|(source, _)| source);
                let from_ads = source.and_then(Json::as_object).is_some_and(|s| {
                    s.contains_key("ads") && s.keys().all(|k| ADS_SOURCE_KEYS.contains(&k.as_str()))
                });
                if !from_ads {
                    return Err(FindError(format!(
                        "{here}: an extension config discovered from a source other than ADS: \
                         the proxy would fetch code the webhook never sees"
                    )));
                }
            }
            for (key, child) in object {
                if matches!(key.as_str(), "vm_config" | "vmConfig") {
                    continue;
                }
                vm_configs(child, &format!("{at}/{}", pointer_escape(key)), found)?;
                if found.len() > MAX_MODULES {
                    return Ok(());
                }
            }
            Ok(())
        }
        Json::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                vm_configs(child, &format!("{at}/{i}"), found)?;
                if found.len() > MAX_MODULES {
                    return Ok(());
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The module one `vm_config` names.
fn vm_config(config: &Json, at: &str) -> Result<ModuleRef, FindError> {
    let runtime = field(config, "runtime", "runtime", at)?
        .and_then(|(v, _)| v.as_str())
        .unwrap_or("");
    let Some((code, code_key)) = field(config, "code", "code", at)? else {
        return Err(FindError(format!("{at}: vm_config without code")));
    };
    let at = format!("{at}/{code_key}");
    let Some((source, source_key)) =
        one_of(code, &[("remote", "remote"), ("local", "local")], &at)?
    else {
        return Err(FindError(format!("{at}: neither remote nor local code")));
    };
    let at = format!("{at}/{source_key}");
    if source_key == "remote" {
        let Some((uri_holder, holder_key)) = field(source, "http_uri", "httpUri", &at)? else {
            return Err(FindError(format!("{at}: remote code without http_uri")));
        };
        let uri = uri_holder
            .get("uri")
            .and_then(Json::as_str)
            .ok_or_else(|| FindError(format!("{at}/{holder_key}: no uri")))?;
        let sha256 = declared_sha256(source.get("sha256"))?;
        let path = format!("{at}/{holder_key}/uri");
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(FindError(format!(
                "{path}: remote code must be an http(s) URL, not {}",
                crate::review::decode::clip(uri)
            )));
        }
        return Ok(ModuleRef {
            key: uri.to_string(),
            source: Source::Http(uri.to_string()),
            path,
            sha256,
        });
    }
    let members = [
        ("filename", "filename"),
        ("inline_bytes", "inlineBytes"),
        ("inline_string", "inlineString"),
        ("environment_variable", "environmentVariable"),
    ];
    let Some((value, key)) = one_of(source, &members, &at)? else {
        return Err(FindError(format!("{at}: local code without a source")));
    };
    let path = format!("{at}/{key}");
    let text = value
        .as_str()
        .ok_or_else(|| FindError(format!("{path}: must be a string")))?;
    if runtime.ends_with(".null") {
        // NullVM: the "code" names a plugin compiled into Envoy; nothing is downloaded.
        if key != "inline_string" && key != "inlineString" {
            return Err(FindError(format!(
                "{path}: a NullVM plugin is named by inline_string only"
            )));
        }
        return Ok(ModuleRef {
            key: format!("builtin:{text}"),
            source: Source::Builtin(text.to_string()),
            path,
            sha256: None,
        });
    }
    let bytes = match key {
        "filename" => {
            return Ok(ModuleRef {
                key: format!("file:{text}"),
                source: Source::File(text.to_string()),
                path,
                sha256: None,
            });
        }
        "inline_bytes" | "inlineBytes" => base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| FindError(format!("{path}: not base64: {e}")))?,
        "inline_string" | "inlineString" => text.as_bytes().to_vec(),
        _ => {
            return Err(FindError(format!(
                "{path}: code from an environment variable cannot be verified"
            )));
        }
    };
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    Ok(ModuleRef {
        key: format!("inline:{digest}"),
        source: Source::Inline(bytes),
        path,
        sha256: None,
    })
}

/// RFC 6901: `~` → `~0`, `/` → `~1`.
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests;
