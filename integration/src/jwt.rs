//! Envoy with Envoy's native `jwt_authn` and meshgate's `jwt-auth` side by side, configured from
//! one `JwtAuthentication` JSON — for differential tests and benchmarks.

use serde_json::{Value, json};

use crate::{Echo, Envoy, EnvoyBuilder, envoy::template_file};

/// Query marker added to remote JWKS URIs of the native filter, so a JWKS server can tell its
/// fetches from the Wasm filter's ([`crate::JwksServer::requests_matching`]).
pub const NATIVE_MARKER: &str = "by=native";

/// An Envoy builder whose `native` and `wasm` listeners both authenticate with `config`, in front
/// of `upstream`; `jwks_port` is where the `jwks` cluster points (any port if unused).
pub fn side_by_side(config: &Value, upstream: &Echo, jwks_port: u16) -> EnvoyBuilder {
    let mut native = config.clone();
    if let Some(providers) = native["providers"].as_object_mut() {
        for provider in providers.values_mut() {
            if let Some(uri) = provider["remote_jwks"]["http_uri"]["uri"].as_str() {
                let marked = format!("{uri}?{NATIVE_MARKER}");
                provider["remote_jwks"]["http_uri"]["uri"] = Value::String(marked);
            }
        }
    }
    native["@type"] =
        json!("type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication");
    Envoy::builder(template_file("integration/templates/jwt.yaml"))
        // JSON is YAML: both configs are inserted as JSON text.
        .var("native_config", native.to_string())
        .var("wasm_config", Value::String(config.to_string()).to_string())
        .var("upstream_port", upstream.port())
        .var("jwks_port", jwks_port)
}
