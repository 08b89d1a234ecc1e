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
            let patches = object
                .pointer("/spec/configPatches")
                .and_then(Json::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
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
            let wasms = object
                .pointer("/spec/wasm")
                .and_then(Json::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
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
                        found.push(from_url(url, &format!("{at}/image/url"), sha256, true)?);
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

/// A declared `sha256`: 64 hex digits, any case, optionally `sha256:`-prefixed.
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
    let hex = text.strip_prefix("sha256:").unwrap_or(text);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FindError(format!(
            "sha256 {} is not 64 hex digits",
            crate::review::decode::clip(text)
        )));
    }
    Ok(Some(hex.to_ascii_lowercase()))
}

/// Envoy's config takes both proto field spellings; an object may use either.
fn field<'a>(object: &'a Json, snake: &str, camel: &str) -> Option<(&'a Json, String)> {
    object
        .get(snake)
        .map(|v| (v, snake.to_string()))
        .or_else(|| object.get(camel).map(|v| (v, camel.to_string())))
}

/// Every `vm_config` (or `vmConfig`) under an EnvoyFilter patch value, wherever it sits: an
/// HTTP or network Wasm filter, a TypedStruct wrapping one, a listener's filter chains, an
/// access logger. A walk rather than a list of known paths, so no nesting hides a module.
fn vm_configs(value: &Json, at: &str, found: &mut Vec<ModuleRef>) -> Result<(), FindError> {
    match value {
        Json::Object(object) => {
            for (key, child) in object {
                let here = format!("{at}/{}", pointer_escape(key));
                if matches!(key.as_str(), "vm_config" | "vmConfig") {
                    if let Some(module) = vm_config(child, &here)? {
                        found.push(module);
                    }
                } else {
                    vm_configs(child, &here, found)?;
                }
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
fn vm_config(config: &Json, at: &str) -> Result<Option<ModuleRef>, FindError> {
    let runtime = field(config, "runtime", "runtime")
        .and_then(|(v, _)| v.as_str())
        .unwrap_or("");
    let Some((code, code_key)) = field(config, "code", "code") else {
        return Err(FindError(format!("{at}: vm_config without code")));
    };
    let at = format!("{at}/{code_key}");
    if let Some((remote, remote_key)) = field(code, "remote", "remote") {
        let at = format!("{at}/{remote_key}");
        let (uri_holder, holder_key) = field(remote, "http_uri", "httpUri")
            .ok_or_else(|| FindError(format!("{at}: remote code without http_uri")))?;
        let uri = uri_holder
            .get("uri")
            .and_then(Json::as_str)
            .ok_or_else(|| FindError(format!("{at}/{holder_key}: no uri")))?;
        let sha256 = declared_sha256(remote.get("sha256"))?;
        let path = format!("{at}/{holder_key}/uri");
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return Err(FindError(format!(
                "{path}: remote code must be an http(s) URL, not {}",
                crate::review::decode::clip(uri)
            )));
        }
        return Ok(Some(ModuleRef {
            key: uri.to_string(),
            source: Source::Http(uri.to_string()),
            path,
            sha256,
        }));
    }
    let Some((local, local_key)) = field(code, "local", "local") else {
        return Err(FindError(format!("{at}: neither remote nor local code")));
    };
    let at = format!("{at}/{local_key}");
    if runtime.ends_with(".null") {
        // NullVM: the "code" names a plugin compiled into Envoy; nothing is downloaded.
        let name = field(local, "inline_string", "inlineString")
            .and_then(|(v, _)| v.as_str())
            .unwrap_or("");
        return Ok(Some(ModuleRef {
            key: format!("builtin:{name}"),
            source: Source::Builtin(name.to_string()),
            path: at,
            sha256: None,
        }));
    }
    if let Some((file, key)) = field(local, "filename", "filename") {
        let file = file.as_str().unwrap_or("");
        return Ok(Some(ModuleRef {
            key: format!("file:{file}"),
            source: Source::File(file.to_string()),
            path: format!("{at}/{key}"),
            sha256: None,
        }));
    }
    let bytes = if let Some((b64, key)) = field(local, "inline_bytes", "inlineBytes") {
        let text = b64.as_str().unwrap_or("");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| FindError(format!("{at}/{key}: not base64: {e}")))?;
        (bytes, key)
    } else if let Some((text, key)) = field(local, "inline_string", "inlineString") {
        (text.as_str().unwrap_or("").as_bytes().to_vec(), key)
    } else {
        return Err(FindError(format!("{at}: local code without a source")));
    };
    let (bytes, key) = bytes;
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    Ok(Some(ModuleRef {
        key: format!("inline:{digest}"),
        source: Source::Inline(bytes),
        path: format!("{at}/{key}"),
        sha256: None,
    }))
}

/// RFC 6901: `~` → `~0`, `/` → `~1`.
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests;
