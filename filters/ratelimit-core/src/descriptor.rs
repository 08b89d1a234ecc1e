//! Descriptors: which requests a limit applies to, and the key of their bucket.

use serde_json::Value;

use crate::ConfigError;
use crate::bucket::Bucket;
use crate::config::{self, Entry};

/// What a descriptor may ask of the request. The host answers lazily, so a limit that needs only
/// one header costs one lookup.
pub trait Request {
    /// A request header (lowercase name; pseudo headers such as `:path` included).
    fn header(&self, name: &str) -> Option<String>;
    /// The connection's peer address, `ip:port` or `[ip6]:port`.
    fn source_address(&self) -> Option<String>;
    /// The JSON payload meshgate's jwt-auth published under `name` (`payload_in_metadata`).
    fn jwt_payload(&self, name: &str) -> Option<String>;
}

#[derive(Debug, Clone)]
enum Part {
    Header {
        name: String,
        key: String,
        fixed: Option<String>,
    },
    RemoteAddress {
        key: String,
    },
    Method {
        equals: Option<String>,
        key: String,
    },
    Path {
        prefix: Option<String>,
        exact: Option<String>,
    },
    Claim {
        path: Vec<String>,
        payload: Option<String>,
        header: Option<String>,
        key: String,
    },
    Generic {
        key: String,
        value: String,
    },
}

/// A compiled descriptor.
#[derive(Debug, Clone)]
pub struct Descriptor {
    /// Its name.
    pub name: String,
    /// The bucket each key gets.
    pub bucket: Bucket,
    /// Count, never reject.
    pub shadow: bool,
    parts: Vec<Part>,
}

impl Descriptor {
    /// Compiles `descriptors[index]`.
    pub fn compile(raw: &config::Descriptor, index: usize) -> Result<Descriptor, ConfigError> {
        let field = format!("descriptors[{index}]");
        let (name, parts) = compile_parts(&raw.name, &raw.entries, &field)?;
        Ok(Descriptor {
            name,
            bucket: Bucket::compile(&raw.token_bucket, &format!("{field}.token_bucket"))?,
            shadow: raw.shadow,
            parts,
        })
    }

    /// The bucket key for this request, or `None` when the descriptor does not apply.
    pub fn key(&self, request: &dyn Request, trusted_hops: u32) -> Option<String> {
        let mut key = self.name.clone();
        for (name, value) in self.entries(request, trusted_hops)? {
            key.push('|');
            push_escaped(&mut key, &name);
            key.push('=');
            push_escaped(&mut key, &value);
        }
        Some(key)
    }

    /// The `(key, value)` entries of this descriptor for the request (conditions contribute
    /// none), or `None` when it does not apply.
    pub fn entries(
        &self,
        request: &dyn Request,
        trusted_hops: u32,
    ) -> Option<Vec<(String, String)>> {
        resolve(&self.parts, request, trusted_hops)
    }
}

/// A descriptor sent to a rate limit service.
#[derive(Debug, Clone)]
pub struct GlobalDescriptor {
    /// Its name.
    pub name: String,
    parts: Vec<Part>,
}

impl GlobalDescriptor {
    /// Compiles `global.descriptors[index]`.
    pub fn compile(
        raw: &config::GlobalDescriptor,
        index: usize,
    ) -> Result<GlobalDescriptor, ConfigError> {
        let field = format!("global.descriptors[{index}]");
        let (name, parts) = compile_parts(&raw.name, &raw.entries, &field)?;
        if !parts.iter().any(|p| !matches!(p, Part::Path { .. })) {
            return Err(ConfigError::invalid(
                format!("{field}.entries"),
                "needs an entry that yields a value (the rate limit service refuses empty descriptors)",
            ));
        }
        Ok(GlobalDescriptor { name, parts })
    }

    /// The descriptor entries for the request, or `None` when it does not apply.
    pub fn entries(
        &self,
        request: &dyn Request,
        trusted_hops: u32,
    ) -> Option<Vec<(String, String)>> {
        resolve(&self.parts, request, trusted_hops)
    }
}

fn compile_parts(
    name: &str,
    entries: &[Entry],
    field: &str,
) -> Result<(String, Vec<Part>), ConfigError> {
    if name.is_empty() || name.contains(['"', '\\', '|']) {
        return Err(ConfigError::invalid(
            format!("{field}.name"),
            "must be non-empty, without quotes, backslashes or '|'",
        ));
    }
    if entries.is_empty() {
        return Err(ConfigError::invalid(
            format!("{field}.entries"),
            "needs at least one entry",
        ));
    }
    let parts = entries
        .iter()
        .enumerate()
        .map(|(i, e)| compile_entry(e, &format!("{field}.entries[{i}]")))
        .collect::<Result<_, _>>()?;
    Ok((name.to_string(), parts))
}

fn resolve(
    parts: &[Part],
    request: &dyn Request,
    trusted_hops: u32,
) -> Option<Vec<(String, String)>> {
    let mut entries = Vec::with_capacity(parts.len());
    for part in parts {
        let (name, value) = match part {
            Part::Header { name, key, fixed } => {
                let value = request.header(name)?;
                (key, fixed.clone().unwrap_or(value))
            }
            Part::RemoteAddress { key } => (key, client_address(request, trusted_hops)?),
            Part::Method { equals, key } => {
                let method = request.header(":method")?;
                match equals {
                    Some(want) if !want.eq_ignore_ascii_case(&method) => return None,
                    _ => (key, method),
                }
            }
            Part::Path { prefix, exact } => {
                let full = request.header(":path")?;
                let path = full.split(['?', '#']).next().unwrap_or("");
                let ok = prefix.as_ref().is_none_or(|p| path.starts_with(p.as_str()))
                    && exact.as_ref().is_none_or(|e| path == e);
                if !ok {
                    return None;
                }
                continue;
            }
            Part::Claim {
                path,
                payload,
                header,
                key,
            } => {
                let value = match (payload, header) {
                    (Some(name), _) => {
                        let json: Value = serde_json::from_str(&request.jwt_payload(name)?).ok()?;
                        meshgate_filter_common::claims::text_at(&json, path)?
                    }
                    (None, Some(header)) => request.header(header)?,
                    (None, None) => return None,
                };
                (key, value)
            }
            Part::Generic { key, value } => (key, value.clone()),
        };
        entries.push((name.clone(), value));
    }
    Some(entries)
}

/// Keeps `|`, `=` and `%` in values from making two different keys look alike.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '|' => out.push_str("%7C"),
            '=' => out.push_str("%3D"),
            '%' => out.push_str("%25"),
            c => out.push(c),
        }
    }
}

fn compile_entry(entry: &Entry, field: &str) -> Result<Part, ConfigError> {
    let need = |value: &str, name: &str| {
        if value.is_empty() {
            Err(ConfigError::invalid(
                format!("{field}.{name}"),
                "must not be empty",
            ))
        } else {
            Ok(())
        }
    };
    Ok(match entry {
        Entry::RequestHeader {
            header_name,
            descriptor_key,
            descriptor_value,
        } => {
            need(header_name, "request_header.header_name")?;
            need(descriptor_key, "request_header.descriptor_key")?;
            Part::Header {
                name: header_name.to_ascii_lowercase(),
                key: descriptor_key.clone(),
                fixed: descriptor_value.clone(),
            }
        }
        Entry::RemoteAddress { descriptor_key } => Part::RemoteAddress {
            key: descriptor_key
                .clone()
                .unwrap_or_else(|| "remote_address".into()),
        },
        Entry::Method {
            equals,
            descriptor_key,
        } => Part::Method {
            equals: equals.clone(),
            key: descriptor_key.clone().unwrap_or_else(|| "method".into()),
        },
        Entry::Path { prefix, exact } => {
            if prefix.is_none() && exact.is_none() {
                return Err(ConfigError::invalid(
                    format!("{field}.path"),
                    "needs prefix or exact",
                ));
            }
            Part::Path {
                prefix: prefix.clone(),
                exact: exact.clone(),
            }
        }
        Entry::JwtClaim {
            claim,
            payload,
            header_name,
            descriptor_key,
        } => {
            need(claim, "jwt_claim.claim")?;
            if payload.is_some() == header_name.is_some() {
                return Err(ConfigError::invalid(
                    format!("{field}.jwt_claim"),
                    "needs exactly one of payload (jwt-auth payload_in_metadata) or header_name",
                ));
            }
            Part::Claim {
                path: claim.split('.').map(str::to_string).collect(),
                payload: payload.clone(),
                header: header_name.as_ref().map(|h| h.to_ascii_lowercase()),
                key: descriptor_key.clone().unwrap_or_else(|| claim.clone()),
            }
        }
        Entry::GenericKey {
            descriptor_key,
            descriptor_value,
        } => Part::Generic {
            key: descriptor_key
                .clone()
                .unwrap_or_else(|| "generic_key".into()),
            value: descriptor_value.clone(),
        },
    })
}

/// The client address: with `trusted_hops` > 0, the `x-forwarded-for` entry that many from the
/// right (the address the outermost trusted proxy saw); otherwise, or when the header is too
/// short, the connection's peer.
pub fn client_address(request: &dyn Request, trusted_hops: u32) -> Option<String> {
    if trusted_hops > 0
        && let Some(xff) = request.header("x-forwarded-for")
    {
        let hops: Vec<&str> = xff
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let n = trusted_hops as usize;
        if hops.len() >= n {
            return Some(hops[hops.len() - n].to_string());
        }
    }
    let source = request.source_address()?;
    Some(strip_port(&source).to_string())
}

fn strip_port(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip,
        _ => address,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    pub(crate) struct FakeRequest {
        pub headers: HashMap<String, String>,
        pub source: Option<String>,
        pub payloads: HashMap<String, String>,
    }

    impl Request for FakeRequest {
        fn header(&self, name: &str) -> Option<String> {
            self.headers.get(name).cloned()
        }
        fn source_address(&self) -> Option<String> {
            self.source.clone()
        }
        fn jwt_payload(&self, name: &str) -> Option<String> {
            self.payloads.get(name).cloned()
        }
    }

    fn descriptor(entries: &str) -> Descriptor {
        let raw: config::Descriptor = serde_json::from_str(&format!(
            r#"{{"name":"d","entries":{entries},"token_bucket":{{"max_tokens":1,"fill_interval":"1s"}}}}"#
        ))
        .unwrap();
        Descriptor::compile(&raw, 0).unwrap()
    }

    fn request(headers: &[(&str, &str)]) -> FakeRequest {
        FakeRequest {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            source: Some("10.0.0.9:5555".into()),
            payloads: [(
                "main".to_string(),
                r#"{"sub":"alice","org":{"id":7},"groups":["a","b"]}"#.to_string(),
            )]
            .into(),
        }
    }

    #[test]
    fn keys_from_attributes() {
        let r = request(&[
            (":method", "POST"),
            (":path", "/api/v1?x=1"),
            ("x-user", "bob|x"),
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2, 3.3.3.3"),
        ]);
        let key = |entries: &str, hops| descriptor(entries).key(&r, hops);
        assert_eq!(
            key(
                r#"[{"request_header":{"header_name":"X-User","descriptor_key":"u"}}]"#,
                0
            )
            .unwrap(),
            "d|u=bob%7Cx"
        );
        assert_eq!(
            key(
                r#"[{"request_header":{"header_name":"x-missing","descriptor_key":"u"}}]"#,
                0
            ),
            None
        );
        assert_eq!(
            key(r#"[{"remote_address":{}}]"#, 0).unwrap(),
            "d|remote_address=10.0.0.9"
        );
        assert_eq!(
            key(r#"[{"remote_address":{}}]"#, 2).unwrap(),
            "d|remote_address=2.2.2.2"
        );
        assert_eq!(
            key(r#"[{"remote_address":{}}]"#, 5).unwrap(),
            "d|remote_address=10.0.0.9"
        );
        assert_eq!(
            key(
                r#"[{"method":{"equals":"post"}},{"path":{"prefix":"/api"}}]"#,
                0
            )
            .unwrap(),
            "d|method=POST"
        );
        assert_eq!(key(r#"[{"method":{"equals":"GET"}}]"#, 0), None);
        assert_eq!(key(r#"[{"path":{"exact":"/api/v1"}}]"#, 0).unwrap(), "d");
        assert_eq!(key(r#"[{"path":{"prefix":"/admin"}}]"#, 0), None);
        assert_eq!(
            key(r#"[{"jwt_claim":{"claim":"org.id","payload":"main"}}]"#, 0).unwrap(),
            "d|org.id=7"
        );
        assert_eq!(
            key(
                r#"[{"jwt_claim":{"claim":"groups","payload":"main","descriptor_key":"g"}}]"#,
                0
            )
            .unwrap(),
            "d|g=a,b"
        );
        assert_eq!(
            key(r#"[{"jwt_claim":{"claim":"sub","payload":"other"}}]"#, 0),
            None
        );
        assert_eq!(
            key(r#"[{"generic_key":{"descriptor_value":"all"}}]"#, 0).unwrap(),
            "d|generic_key=all"
        );
    }

    #[test]
    fn ipv6_sources() {
        assert_eq!(strip_port("[::1]:8080"), "::1");
        assert_eq!(strip_port("10.1.2.3:80"), "10.1.2.3");
        assert_eq!(strip_port("::1"), "::1");
    }

    #[test]
    fn refuses_bad_descriptors() {
        let bad = [
            r#"{"name":"","entries":[{"remote_address":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}"#,
            r#"{"name":"d","entries":[],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}"#,
            r#"{"name":"d","entries":[{"path":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}"#,
            r#"{"name":"d","entries":[{"jwt_claim":{"claim":"sub"}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}"#,
        ];
        for json in bad {
            let raw: config::Descriptor = serde_json::from_str(json).unwrap();
            assert!(
                Descriptor::compile(&raw, 3)
                    .unwrap_err()
                    .to_string()
                    .contains("descriptors[3]"),
                "{json}"
            );
        }
        assert!(serde_json::from_str::<config::Descriptor>(r#"{"name":"d","entries":[{"cookie":{}}],"token_bucket":{"max_tokens":1,"fill_interval":"1s"}}"#).is_err());
    }
}
