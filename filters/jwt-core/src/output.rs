//! What a verified token changes in the request: forwarded payload, claim headers, token removal,
//! and the payload published for later filters.

use base64::Engine as _;
use serde_json::Value;

use crate::extract::{Found, Location};
use crate::provider::Provider;
use crate::token::Jwt;

/// Changes to apply to the request before it continues, in this order: remove headers, replace
/// `:path`, add headers, publish.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mutations {
    /// Headers to remove (lowercase): every provider's output headers (`forward_payload_header`,
    /// `claim_to_headers`) on every request, so a client can never pass a forged one off as
    /// verified, and the headers verified tokens came in (unless the provider forwards them).
    pub remove_headers: Vec<String>,
    /// Headers to add after the removals, one value per verified token, in the order Envoy adds
    /// them (a name repeats when several tokens verified).
    pub set_headers: Vec<(String, String)>,
    /// Query parameters verified tokens came in (unless forwarded); see [`Mutations::path`].
    pub remove_params: Vec<String>,
    /// The new `:path` when token parameters are removed from it.
    pub path: Option<String>,
    /// `(name, JSON)` documents for later filters: the payload under `payload_in_metadata`, the
    /// header under `header_in_metadata`.
    pub publish: Vec<(String, String)>,
}

impl Mutations {
    /// Adds another set of mutations.
    pub fn extend(&mut self, other: Mutations) {
        self.remove_headers.extend(other.remove_headers);
        self.set_headers.extend(other.set_headers);
        self.remove_params.extend(other.remove_params);
        self.publish.extend(other.publish);
    }

    /// Completes the changes for a request that is let through: `output_headers` are removed
    /// first, and `:path` is computed from `path` without the token parameters.
    pub fn finish(mut self, output_headers: &[String], path: Option<&str>) -> Mutations {
        let mut remove: Vec<String> = output_headers.to_vec();
        for name in self.remove_headers.drain(..) {
            if !remove.contains(&name) {
                remove.push(name);
            }
        }
        self.remove_headers = remove;
        if let Some(original) = path
            && !self.remove_params.is_empty()
        {
            let new = self
                .remove_params
                .iter()
                .fold(original.to_string(), |p, name| {
                    crate::extract::remove_query_param(&p, name)
                });
            if new != original {
                self.path = Some(new);
            }
        }
        self
    }
}

/// The mutations a good token of `provider` asks for.
pub fn for_verified(provider: &Provider, jwt: &Jwt, found: &Found) -> Mutations {
    let mut m = Mutations::default();
    if !provider.forward {
        match &found.location {
            Location::Header { name, .. } => m.remove_headers.push(name.clone()),
            Location::Param(name) => m.remove_params.push(name.clone()),
            // Envoy leaves cookies in place too (a cookie header holds other cookies).
            Location::Cookie(_) => {}
        }
    }
    if let Some(header) = &provider.forward_payload_header {
        let mut payload = jwt.payload_b64().to_string();
        if provider.pad_forward_payload_header {
            // Re-encode rather than append: the payload may have arrived padded already.
            if let Ok(bytes) = crate::token::B64URL.decode(&payload) {
                payload = base64::engine::general_purpose::URL_SAFE.encode(bytes);
            }
        }
        m.set_headers.push((header.clone(), payload));
    }
    for (header, path) in &provider.claim_to_headers {
        // A claim that is absent (or empty, as Envoy skips it) leaves the header absent: every
        // output header was removed before any is added.
        if let Some(value) = claim_value(&jwt.claims, path).filter(|v| !v.is_empty()) {
            m.set_headers.push((header.clone(), value));
        }
    }
    if let Some(name) = &provider.payload_in_metadata {
        m.publish
            .push((name.clone(), Value::Object(jwt.claims.clone()).to_string()));
    }
    if let Some(name) = &provider.header_in_metadata {
        m.publish
            .push((name.clone(), Value::Object(jwt.header.clone()).to_string()));
    }
    m
}

/// A claim as header text (see [`meshgate_filter_common::claims::text_at`]; arrays joined with
/// commas go beyond Envoy, which skips them).
pub fn claim_value(claims: &serde_json::Map<String, Value>, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    meshgate_filter_common::claims::text_at(claims.get(first)?, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_paths_start_in_the_claims_object() {
        let claims: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"org":{"teams":["a","b"]},"sub":"u"}"#).unwrap();
        let path = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            claim_value(&claims, &path("org.teams")).as_deref(),
            Some("a,b")
        );
        assert_eq!(claim_value(&claims, &path("sub")).as_deref(), Some("u"));
        assert_eq!(claim_value(&claims, &[]), None);
    }
}
