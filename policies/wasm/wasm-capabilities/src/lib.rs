//! Network and filesystem capabilities of Wasm code, by namespace: the imports of pods' Wasm
//! images and of the modules WasmPlugin, EnvoyFilter and EnvoyExtensionPolicy objects load.
//! The same rule, with the same messages, as the Rego starter `policies/rego/wasm-capabilities`
//! (whose header lists exactly which imports count); both run against its case file.
//!
//! Settings: `network` and `filesystem`, the namespaces whose code may import each (`"*"` for
//! all; none by default), and `missingCapabilities` (`deny`, the default, `warn` or `allow`)
//! for code whose capabilities the webhook did not read. Unlike the Rego starter, which denies
//! for any unknown `missingCapabilities`, an unknown value is refused at load.

use meshgate_policy::{Capabilities, ImageCode, Policy, Request, Verdict, containers, reject};
use serde::Deserialize;

/// The policy.
pub struct WasmCapabilities;

/// What to do with code whose capabilities are unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    /// Deny the request (fail closed).
    #[default]
    Deny,
    /// Admit it with a warning.
    Warn,
    /// Admit it.
    Allow,
}

/// The policy's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// Namespaces whose Wasm may import network capabilities.
    #[serde(default)]
    pub network: Vec<String>,
    /// Namespaces whose Wasm may import filesystem capabilities.
    #[serde(default)]
    pub filesystem: Vec<String>,
    /// Code whose capabilities the webhook did not read.
    #[serde(default)]
    pub missing_capabilities: Missing,
}

/// Component interfaces whose import sends network requests (WASI 0.2's outgoing handler,
/// WASI 0.3's handler and client).
const NETWORK_INTERFACES: &[&str] = &[
    "wasi:http/outgoing-handler",
    "wasi:http/handler",
    "wasi:http/client",
];

/// Interface or import-name prefixes of network capabilities: WASI sockets, preview-1 and
/// WasmEdge `sock_*` calls, WasmEdge's HTTPS request module.
const NETWORK_PREFIXES: &[&str] = &[
    "wasi:sockets/",
    "wasi_snapshot_preview1/sock_",
    "wasi_unstable/sock_",
    "wasmedge_httpsreq/",
];

/// proxy-wasm calls out through the proxy's clusters.
const NETWORK_CALLS: &[&str] = &[
    "env/proxy_http_call",
    "env/proxy_grpc_call",
    "env/proxy_grpc_stream",
];

/// Prefixes of filesystem capabilities: WASI filesystem interfaces, preview-1 calls that take
/// a path.
const FILESYSTEM_PREFIXES: &[&str] = &[
    "wasi:filesystem/",
    "wasi_snapshot_preview1/path_",
    "wasi_unstable/path_",
];

/// Preview-1 calls that find or list the preopened directories.
const FILESYSTEM_CALLS: &[&str] = &[
    "wasi_snapshot_preview1/fd_prestat_get",
    "wasi_snapshot_preview1/fd_prestat_dir_name",
    "wasi_snapshot_preview1/fd_readdir",
    "wasi_unstable/fd_prestat_get",
    "wasi_unstable/fd_prestat_dir_name",
    "wasi_unstable/fd_readdir",
];

/// A component import's interface, compared in lower case: `wasi:sockets/tcp@0.2.0` →
/// `wasi:sockets/tcp`.
fn interface(name: &str) -> String {
    name.split('@').next().unwrap_or_default().to_lowercase()
}

/// Whether importing `name` gives network access.
pub fn is_network(name: &str) -> bool {
    let interface = interface(name);
    NETWORK_INTERFACES.contains(&interface.as_str())
        || NETWORK_CALLS.contains(&name)
        || NETWORK_PREFIXES.iter().any(|p| interface.starts_with(p))
}

/// Whether importing `name` gives filesystem access.
pub fn is_filesystem(name: &str) -> bool {
    let interface = interface(name);
    FILESYSTEM_CALLS.contains(&name) || FILESYSTEM_PREFIXES.iter().any(|p| interface.starts_with(p))
}

/// One piece of code judged: how messages name it and what the webhook read of it.
struct Code {
    what: String,
    capabilities: Option<Capabilities>,
}

/// Every piece of code of the request: the pod's images (skipping those an UPDATE kept) and
/// the extension modules, with a WasmPlugin's `spec.url` as unknown code when it has no facts.
fn code(request: &Request) -> Result<Vec<Code>, String> {
    let mut out = Vec::new();
    if request.kind() == "Pod" {
        let pod = request.pod()?;
        for c in containers(&pod) {
            match request.image_code(c.image())? {
                ImageCode::Unchanged => {}
                ImageCode::Read(capabilities) => out.push(Code {
                    what: c.describe(),
                    capabilities: Some(capabilities),
                }),
                ImageCode::Unknown => out.push(Code {
                    what: c.describe(),
                    capabilities: None,
                }),
            }
        }
    }
    for (key, module) in request.extension_modules()? {
        let what = match &module.path {
            Some(path) => format!("module {key} (at {path})"),
            None => format!("module {key}"),
        };
        out.push(Code {
            what,
            capabilities: module.capabilities,
        });
    }
    if request.kind() == "WasmPlugin"
        && let Some(url) = request.object()["spec"]["url"].as_str()
        && !request.modules.contains_key(url)
    {
        out.push(Code {
            what: format!("module {url} (at /spec/url)"),
            capabilities: None,
        });
    }
    Ok(out)
}

/// `namespaces` allows `namespace` by name or with `"*"`.
fn may(namespaces: &[String], namespace: &str) -> bool {
    namespaces.iter().any(|n| n == namespace || n == "*")
}

fn violation(
    what: &str,
    kind: &str,
    names: &[&str],
    namespace: &str,
    allowed: &[String],
) -> String {
    let allowed = if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed.join(", ")
    };
    format!(
        "{what} imports {kind} capabilities ({}), which namespace {namespace} may not use (allowed: {allowed})",
        names.join(", ")
    )
}

impl Policy for WasmCapabilities {
    type Settings = Settings;

    fn validate(request: &Request, settings: &Settings) -> Verdict {
        let code = match code(request) {
            Ok(code) => code,
            Err(e) => return reject(e),
        };
        let namespace = request.namespace.as_str();
        let mut violations = Vec::new();
        let mut unknown = Vec::new();
        for c in &code {
            let Some(capabilities) = &c.capabilities else {
                unknown.push(format!(
                    "{}: capabilities unknown (the webhook did not read its Wasm: imageVerification.artifactCheck: parse for images)",
                    c.what
                ));
                continue;
            };
            for (kind, allowed, test) in [
                ("network", &settings.network, is_network as fn(&str) -> bool),
                ("filesystem", &settings.filesystem, is_filesystem),
            ] {
                let mut names: Vec<&str> = capabilities
                    .imports
                    .iter()
                    .map(String::as_str)
                    .filter(|n| test(n))
                    .collect();
                names.sort_unstable();
                if !names.is_empty() && !may(allowed, namespace) {
                    violations.push(violation(&c.what, kind, &names, namespace, allowed));
                }
            }
        }
        match settings.missing_capabilities {
            Missing::Deny => violations.extend(unknown.iter().cloned()),
            Missing::Warn | Missing::Allow => {}
        }
        violations.sort();
        violations.dedup();
        let mut verdict = Verdict::from_violations(violations);
        if settings.missing_capabilities == Missing::Warn {
            for message in unknown {
                verdict = verdict.with_warning(message);
            }
        }
        verdict
    }
}

meshgate_policy::export_policy!(WasmCapabilities);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn judge(request: serde_json::Value, settings: serde_json::Value) -> Verdict {
        let request: Request = serde_json::from_value(request).unwrap();
        let settings: Settings = serde_json::from_value(settings).unwrap();
        WasmCapabilities::validate(&request, &settings)
    }

    fn pod(namespace: &str, images: serde_json::Value) -> serde_json::Value {
        json!({
            "namespace": namespace,
            "object": {"kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/acme/app:1"}]}},
            "images": images
        })
    }

    fn component(imports: &[&str]) -> serde_json::Value {
        json!({"capabilities": {"kind": "component", "imports": imports, "exports": []}})
    }

    #[test]
    fn imports_are_classified() {
        for name in [
            "wasi:sockets/tcp@0.2.0",
            "WASI:Sockets/udp@0.2.0",
            "wasi:http/outgoing-handler@0.2.0",
            "wasi:http/handler@0.3.0",
            "wasi_snapshot_preview1/sock_open",
            "wasi_unstable/sock_recv",
            "wasmedge_httpsreq/send_data",
            "env/proxy_http_call",
        ] {
            assert!(is_network(name), "{name}");
            assert!(!is_filesystem(name), "{name}");
        }
        for name in [
            "wasi:filesystem/types@0.2.0",
            "wasi_snapshot_preview1/path_open",
            "wasi_snapshot_preview1/fd_prestat_get",
            "wasi_unstable/fd_readdir",
        ] {
            assert!(is_filesystem(name), "{name}");
            assert!(!is_network(name), "{name}");
        }
        for name in [
            "wasi_snapshot_preview1/fd_write",
            "wasi:http/incoming-handler@0.2.0",
            "wasi:http/types@0.2.0",
            "env/proxy_log",
            "acme/sock_open",
            "env/path_open",
        ] {
            assert!(!is_network(name) && !is_filesystem(name), "{name}");
        }
    }

    #[test]
    fn namespaces_decide() {
        let images = json!({"ghcr.io/acme/app:1": component(&["wasi:sockets/tcp@0.2.0"])});
        let v = judge(pod("apps", images.clone()), json!({"network": ["edge"]}));
        assert_eq!(
            v.message.as_deref(),
            Some(
                "container \"app\" (image ghcr.io/acme/app:1) imports network capabilities (wasi:sockets/tcp@0.2.0), which namespace apps may not use (allowed: edge)"
            )
        );
        assert!(judge(pod("edge", images.clone()), json!({"network": ["edge"]})).allowed);
        assert!(judge(pod("apps", images), json!({"network": ["*"]})).allowed);
    }

    #[test]
    fn unknown_capabilities_follow_the_setting() {
        let images = json!({"ghcr.io/acme/app:1": {"digest": "sha256:00"}});
        let denied = judge(pod("apps", images.clone()), json!({}));
        assert!(!denied.allowed);
        assert!(denied.message.unwrap().contains("capabilities unknown"));
        let warned = judge(
            pod("apps", images.clone()),
            json!({"missingCapabilities": "warn"}),
        );
        assert!(warned.allowed);
        assert_eq!(warned.warnings.len(), 1);
        let allowed = judge(pod("apps", images), json!({"missingCapabilities": "allow"}));
        assert!(allowed.allowed && allowed.warnings.is_empty());
        let kept =
            json!({"ghcr.io/acme/app:1": {"image": "ghcr.io/acme/app:1", "unchanged": true}});
        assert!(judge(pod("apps", kept), json!({})).allowed);
        assert!(
            serde_json::from_value::<Settings>(json!({"missingCapabilities": "maybe"})).is_err()
        );
    }

    #[test]
    fn a_wasmplugin_without_facts_is_unknown() {
        let plugin = json!({"namespace": "edge", "object": {"kind": "WasmPlugin",
            "metadata": {"name": "hook"}, "spec": {"url": "oci://ghcr.io/acme/hook:1"}}});
        let v = judge(plugin, json!({"network": ["*"], "filesystem": ["*"]}));
        assert_eq!(
            v.message.as_deref(),
            Some(
                "module oci://ghcr.io/acme/hook:1 (at /spec/url): capabilities unknown (the webhook did not read its Wasm: imageVerification.artifactCheck: parse for images)"
            )
        );
    }
}
