//! What a verified token changes in the request: forwarded payload, claim headers, token removal,
//! and the payload published for later filters.

use base64::Engine as _;
use serde_json::Value;

use crate::extract::{Found, Location};
use crate::provider::Provider;
use crate::token::Jwt;

/// Changes to apply to the request before it continues.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mutations {
    /// Headers to remove (lowercase).
    pub remove_headers: Vec<String>,
    /// Headers to set, replacing any value the client sent (a client must not be able to forge a
    /// payload or claim header alongside the real one).
    pub set_headers: Vec<(String, String)>,
    /// `(name, JSON)` documents for later filters: the payload under `payload_in_metadata`, the
    /// header under `header_in_metadata`.
    pub publish: Vec<(String, String)>,
}

impl Mutations {
    /// Adds another set of mutations.
    pub fn extend(&mut self, other: Mutations) {
        self.remove_headers.extend(other.remove_headers);
        self.set_headers.extend(other.set_headers);
        self.publish.extend(other.publish);
    }
}

/// The mutations a good token of `provider` asks for.
pub fn for_verified(provider: &Provider, jwt: &Jwt, found: &Found) -> Mutations {
    let mut m = Mutations::default();
    if !provider.forward
        && let Location::Header { name, .. } = &found.location
    {
        m.remove_headers.push(name.clone());
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
        if let Some(value) = claim_value(&jwt.claims, path) {
            m.set_headers.push((header.clone(), value));
        } else {
            // Not in the token: make sure a client-sent value does not pass for it.
            m.remove_headers.push(header.clone());
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
