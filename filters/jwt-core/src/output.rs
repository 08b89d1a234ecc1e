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
            .push((name.clone(), jwt.claims_json().to_string()));
    }
    if let Some(name) = &provider.header_in_metadata {
        m.publish
            .push((name.clone(), Value::Object(jwt.header.clone()).to_string()));
    }
    m
}

/// A claim as header text, as Envoy 1.40's `addJWTClaimToHeader` writes it: strings as they
/// are, booleans as `true`/`false`, numbers by `convertClaimDoubleToString`, arrays and objects
/// as standard base64 of their JSON in protobuf's form (`["a","b"]` is `WyJhIiwiYiJd`); `null`
/// and empty text give no header. Nested claims are named with dots.
pub fn claim_value(claims: &serde_json::Map<String, Value>, path: &[String]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let mut value = claims.get(first)?;
    for key in rest {
        value = value.as_object()?.get(key)?;
    }
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => n.as_f64().map(claim_number),
        Value::Array(_) | Value::Object(_) => {
            let mut json = String::new();
            protobuf_json(value, &mut json);
            Some(base64::engine::general_purpose::STANDARD.encode(json))
        }
        Value::Null => None,
    }
    .filter(|s| !s.is_empty())
}

/// Envoy's `convertClaimDoubleToString`: a whole number in `[0, 2^64)` as an integer, anything
/// else as C's `%f` (`1.5` is `1.500000`, `-3` is `-3.000000`).
fn claim_number(v: f64) -> String {
    if (0.0..crate::token::U64_LIMIT).contains(&v) && v.fract() == 0.0 {
        format!("{}", v as u64)
    } else {
        format!("{v:.6}")
    }
}

/// JSON as protobuf's `MessageToJsonString` prints a `Struct`/`ListValue`: compact, numbers as
/// doubles in `SimpleDtoa` form, `<`, `>`, U+2028 and U+2029 escaped. (Object members come in
/// the token's order; Envoy's come in hash order, which no one can rely on.)
fn protobuf_json(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&simple_dtoa(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => protobuf_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                protobuf_json(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (i, (key, item)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                protobuf_string(key, out);
                out.push(':');
                protobuf_json(item, out);
            }
            out.push('}');
        }
    }
}

fn protobuf_string(s: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || matches!(c, '<' | '>' | '\u{2028}' | '\u{2029}') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// protobuf's `SimpleDtoa`: `%.15g`, or `%.17g` when that does not read back as the same double.
fn simple_dtoa(v: f64) -> String {
    let short = format_g(v, 15);
    if short.parse::<f64>().ok() == Some(v) {
        short
    } else {
        format_g(v, 17)
    }
}

/// C's `%.{precision}g`.
fn format_g(v: f64, precision: usize) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.to_string();
    }
    if !v.is_finite() {
        return v.to_string();
    }
    let scientific = format!("{:.*e}", precision - 1, v);
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let trim = |s: &str| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exponent < -4 || exponent >= precision as i32 {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(mantissa), exponent.unsigned_abs())
    } else {
        let decimals = usize::try_from(precision as i32 - 1 - exponent).unwrap_or(0);
        trim(&format!("{v:.decimals$}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_paths_start_in_the_claims_object() {
        let claims: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"org":{"teams":["a","b"]},"sub":"u"}"#).unwrap();
        let path = |p: &str| p.split('.').map(String::from).collect::<Vec<_>>();
        // Arrays and objects as Envoy 1.40 sends them: base64 of protobuf's JSON.
        assert_eq!(
            claim_value(&claims, &path("org.teams")).as_deref(),
            Some("WyJhIiwiYiJd")
        );
        assert_eq!(claim_value(&claims, &path("sub")).as_deref(), Some("u"));
        assert_eq!(claim_value(&claims, &[]), None);
    }

    #[test]
    fn claims_are_written_as_envoy_1_40_writes_them() {
        // Each expected text was read off Envoy 1.40's native jwt_authn.
        let claims: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"num":42,"f":1.5,"neg":-3,"big":1e20,"b":true,"nul":null,"ea":[],
                "mixed":["x",1,true,null,{"k":"v"}],
                "odd":["<>&'=/\\\"\t\u0001\u2028\u00e9 ",2.5,1e20,-0.0,3,1e-7,12345678901234567890]}"#,
        )
        .unwrap();
        let get = |name: &str| claim_value(&claims, &[name.to_string()]);
        assert_eq!(get("num").as_deref(), Some("42"));
        assert_eq!(get("f").as_deref(), Some("1.500000"));
        assert_eq!(get("neg").as_deref(), Some("-3.000000"));
        assert_eq!(get("big").as_deref(), Some("100000000000000000000.000000"));
        assert_eq!(get("b").as_deref(), Some("true"));
        assert_eq!(get("nul"), None);
        assert_eq!(get("ea").as_deref(), Some("W10="));
        assert_eq!(
            get("mixed").as_deref(),
            Some("WyJ4IiwxLHRydWUsbnVsbCx7ImsiOiJ2In1d")
        );
        let odd = base64::engine::general_purpose::STANDARD
            .decode(get("odd").unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(odd).unwrap(),
            r#"["\u003c\u003e&'=/\\\"\t\u0001\u2028\u00e9 ",2.5,1e+20,-0,3,1e-07,1.2345678901234567e+19]"#
                .replace("\\u00e9", "\u{e9}")
        );
    }
}
