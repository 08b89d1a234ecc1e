//! Descriptors: which requests a limit applies to, and the key of their bucket.
//!
//! Every value taken from the request is untrusted: it is cut to `max_value_bytes`, client
//! addresses are parsed and normalised (one spelling per address, IPv6 grouped by prefix), and
//! an attribute the host fails to read makes the request [`Unreadable`] — refused, not let
//! through unlimited.

use core::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde_json::Value;

use crate::ConfigError;
use crate::bucket::Bucket;
use crate::config::{self, Entry};

/// The host failed to read a request attribute (as opposed to the attribute being absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the host could not read a request attribute")]
pub struct Unreadable;

/// What a descriptor may ask of the request. The host answers lazily, so a limit that needs only
/// one header costs one lookup. `Ok(None)` is an absent attribute; `Err` a failed read.
pub trait Request {
    /// A request header (lowercase name; pseudo headers such as `:path` included).
    fn header(&self, name: &str) -> Result<Option<String>, Unreadable>;
    /// The connection's peer address, `ip:port` or `[ip6]:port`.
    fn source_address(&self) -> Result<Option<String>, Unreadable>;
    /// The JSON payload meshgate's jwt-auth published under `name` (`payload_in_metadata`).
    fn jwt_payload(&self, name: &str) -> Result<Option<String>, Unreadable>;
    /// The claim at `path` of the payload published under `payload`, as descriptor text
    /// ([`meshgate_filter_common::claims::text_at`]); `Ok(None)` when the payload or the claim
    /// is absent. jwt-auth publishes the verified payload, so anything but JSON there is a
    /// broken host ([`Unreadable`]), not an absent claim. A host may override this to reuse the
    /// parse of a payload it has seen before.
    fn jwt_claim(&self, payload: &str, path: &[String]) -> Result<Option<String>, Unreadable> {
        let Some(text) = self.jwt_payload(payload)? else {
            return Ok(None);
        };
        let json: Value = serde_json::from_str(&text).map_err(|_| Unreadable)?;
        Ok(meshgate_filter_common::claims::text_at(&json, path))
    }
}

/// The last JWT payload a worker parsed, by its published text: a client's repeated token
/// publishes the same payload on every request, which is then parsed once. One entry, as big
/// as the payload jwt-auth published (bounded by its token size limit).
#[derive(Debug, Default)]
pub struct PayloadMemo {
    last: std::cell::RefCell<Option<(String, Value)>>,
}

impl PayloadMemo {
    /// The claim at `path` of the published payload `text`, as [`Request::jwt_claim`] reads it;
    /// parsed only when `text` differs from the last payload seen.
    pub fn claim(&self, text: String, path: &[String]) -> Result<Option<String>, Unreadable> {
        let mut last = self.last.borrow_mut();
        let json = match &*last {
            Some((seen, json)) if *seen == text => json,
            _ => {
                // A payload that does not parse is not kept: the last good one stays.
                let json: Value = serde_json::from_str(&text).map_err(|_| Unreadable)?;
                &last.insert((text, json)).1
            }
        };
        Ok(meshgate_filter_common::claims::text_at(json, path))
    }
}

/// A descriptor's `(key, value)` entries for one request.
pub type Entries = Vec<(String, String)>;

/// Values longer than this many bytes are cut when `max_value_bytes` is not set.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 256;
/// IPv6 prefix length clients are grouped by when `ipv6_prefix_len` is not set.
pub const DEFAULT_IPV6_PREFIX_LEN: u8 = 64;

/// How request values become descriptor values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// `x-forwarded-for` hops added by trusted proxies (0: the connection's peer).
    pub trusted_hops: u32,
    /// Values are cut to this many bytes (at a character boundary).
    pub max_value_bytes: usize,
    /// IPv6 client addresses are grouped by this prefix length.
    pub ipv6_prefix_len: u8,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trusted_hops: 0,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            ipv6_prefix_len: DEFAULT_IPV6_PREFIX_LEN,
        }
    }
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
    /// Fingerprint of its name and entries (what its keys mean), stored with its buckets: a
    /// bucket of a descriptor defined otherwise is nobody's. The bucket's parameters are left
    /// out, so a new capacity or rate keeps the counts.
    pub fingerprint: u64,
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
        // The compiled entries' Debug form: the same in every worker of a build.
        let fingerprint = crate::table::fingerprint(&format!("{name}\n{parts:?}"));
        Ok(Descriptor {
            name,
            fingerprint,
            bucket: Bucket::compile(&raw.token_bucket, &format!("{field}.token_bucket"))?,
            shadow: raw.shadow,
            parts,
        })
    }

    /// The bucket key for this request, or `None` when the descriptor does not apply.
    pub fn key(
        &self,
        request: &dyn Request,
        options: &Options,
    ) -> Result<Option<String>, Unreadable> {
        let Some(entries) = self.entries(request, options)? else {
            return Ok(None);
        };
        let mut key = self.name.clone();
        for (name, value) in entries {
            key.push('|');
            push_escaped(&mut key, &name);
            key.push('=');
            push_escaped(&mut key, &value);
        }
        Ok(Some(key))
    }

    /// The `(key, value)` entries of this descriptor for the request (conditions contribute
    /// none), or `None` when it does not apply.
    pub fn entries(
        &self,
        request: &dyn Request,
        options: &Options,
    ) -> Result<Option<Vec<(String, String)>>, Unreadable> {
        resolve(&self.parts, request, options)
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
        options: &Options,
    ) -> Result<Option<Vec<(String, String)>>, Unreadable> {
        resolve(&self.parts, request, options)
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
    options: &Options,
) -> Result<Option<Vec<(String, String)>>, Unreadable> {
    let mut entries = Vec::with_capacity(parts.len());
    // `?` on the host's answer passes a failed read up; `absent!` ends with "does not apply".
    macro_rules! absent {
        ($value:expr) => {
            match $value {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    for part in parts {
        let (name, value) = match part {
            Part::Header { name, key, fixed } => {
                let value = absent!(request.header(name)?);
                match fixed {
                    Some(fixed) => (key, fixed.clone()),
                    None => (key, cut(value, options.max_value_bytes)),
                }
            }
            Part::RemoteAddress { key } => {
                let address = absent!(client_address(request, options)?);
                (key, cut(address, options.max_value_bytes))
            }
            Part::Method { equals, key } => {
                let method = absent!(request.header(":method")?);
                match equals {
                    Some(want) if !want.eq_ignore_ascii_case(&method) => return Ok(None),
                    _ => (key, cut(method, options.max_value_bytes)),
                }
            }
            Part::Path { prefix, exact } => {
                let full = absent!(request.header(":path")?);
                let path = full.split(['?', '#']).next().unwrap_or("");
                let ok = prefix.as_ref().is_none_or(|p| path.starts_with(p.as_str()))
                    && exact.as_ref().is_none_or(|e| path == e);
                if !ok {
                    return Ok(None);
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
                    (Some(name), _) => absent!(request.jwt_claim(name, path)?),
                    (None, Some(header)) => absent!(request.header(header)?),
                    (None, None) => return Ok(None),
                };
                (key, cut(value, options.max_value_bytes))
            }
            Part::Generic { key, value } => (key, value.clone()),
        };
        entries.push((name.clone(), value));
    }
    Ok(Some(entries))
}

/// `value` cut to at most `max` bytes, at a character boundary: an over-long value still
/// counts (values that share their first `max` bytes share a bucket), and costs no more than
/// a short one.
fn cut(mut value: String, max: usize) -> String {
    if value.len() > max {
        let mut end = max;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
    }
    value
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
/// short, the connection's peer. Normalised: one spelling per address, IPv4-mapped IPv6 as
/// IPv4, IPv6 grouped by `ipv6_prefix_len` (`2001:db8:1:2::/64`); an entry that is not an
/// address is kept as it is (cut like any value).
pub fn client_address(
    request: &dyn Request,
    options: &Options,
) -> Result<Option<String>, Unreadable> {
    if options.trusted_hops > 0
        && let Some(xff) = request.header("x-forwarded-for")?
    {
        let n = options.trusted_hops as usize;
        // From the right, without collecting: the header may hold any number of entries.
        let hop = xff
            .rsplit(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .nth(n - 1);
        if let Some(hop) = hop {
            return Ok(Some(normalise(hop, options.ipv6_prefix_len)));
        }
    }
    let Some(source) = request.source_address()? else {
        return Ok(None);
    };
    Ok(Some(normalise(&source, options.ipv6_prefix_len)))
}

/// An address (with or without a port) in its one canonical spelling, grouped by prefix.
fn normalise(text: &str, ipv6_prefix_len: u8) -> String {
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()));
    match ip {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None if ipv6_prefix_len >= 128 => v6.to_string(),
            None => {
                let keep = u32::from(ipv6_prefix_len);
                let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
                format!(
                    "{}/{ipv6_prefix_len}",
                    Ipv6Addr::from(u128::from(v6) & mask)
                )
            }
        },
        None => text.to_string(),
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
        fn header(&self, name: &str) -> Result<Option<String>, Unreadable> {
            Ok(self.headers.get(name).cloned())
        }
        fn source_address(&self) -> Result<Option<String>, Unreadable> {
            Ok(self.source.clone())
        }
        fn jwt_payload(&self, name: &str) -> Result<Option<String>, Unreadable> {
            Ok(self.payloads.get(name).cloned())
        }
    }

    #[test]
    fn payload_memo_reparses_only_what_changed() {
        let memo = PayloadMemo::default();
        let sub = ["sub".to_string()];
        let claim = |text: &str| memo.claim(text.to_string(), &sub);
        assert_eq!(claim(r#"{"sub":"alice"}"#), Ok(Some("alice".into())));
        assert_eq!(claim(r#"{"sub":"alice"}"#), Ok(Some("alice".into())));
        // Another token's payload is never answered from the last one.
        assert_eq!(claim(r#"{"sub":"bob"}"#), Ok(Some("bob".into())));
        assert_eq!(claim(r#"{"sub":"bob","x":1}"#), Ok(Some("bob".into())));
        assert_eq!(claim(r#"{"other":1}"#), Ok(None));
        // Not JSON: unreadable, and the memo keeps the last good payload.
        assert_eq!(claim("not json"), Err(Unreadable));
        assert_eq!(claim(r#"{"other":1}"#), Ok(None));
        assert_eq!(claim(r#"{"sub":"carol"}"#), Ok(Some("carol".into())));
    }

    fn hops(trusted_hops: u32) -> Options {
        Options {
            trusted_hops,
            ..Options::default()
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
        let key = |entries: &str, n| descriptor(entries).key(&r, &hops(n)).unwrap();
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
    fn addresses_are_normalised_and_ipv6_grouped_by_prefix() {
        assert_eq!(normalise("[::1]:8080", 128), "::1");
        assert_eq!(normalise("10.1.2.3:80", 64), "10.1.2.3");
        assert_eq!(normalise("[::ffff:10.1.2.3]:80", 64), "10.1.2.3");
        // One client's /64 is one key, however it spells or varies the rest.
        for a in [
            "2001:db8:1:2::1",
            "[2001:0db8:0001:0002:ffff::9]:443",
            "2001:DB8:1:2:a:b:c:d",
        ] {
            assert_eq!(normalise(a, 64), "2001:db8:1:2::/64", "{a}");
        }
        assert_eq!(normalise("2001:db8:1:3::1", 64), "2001:db8:1:3::/64");
        assert_eq!(normalise("2001:db8:1:2::1", 48), "2001:db8:1::/48");
        assert_eq!(normalise("2001:db8::1", 0), "::/0");
        assert_eq!(normalise("not an address", 64), "not an address");
    }

    #[test]
    fn long_values_are_cut_and_failed_reads_are_errors() {
        let d = descriptor(r#"[{"request_header":{"header_name":"x-user","descriptor_key":"u"}}]"#);
        let long = format!("{}é{}", "a".repeat(255), "b".repeat(50_000));
        let r = request(&[("x-user", long.as_str())]);
        let key = d.key(&r, &Options::default()).unwrap().unwrap();
        assert_eq!(
            key,
            format!("d|u={}", "a".repeat(255)),
            "cut at a character boundary"
        );
        let other = request(&[("x-user", &format!("{}é{}", "a".repeat(255), "c".repeat(9)))]);
        assert_eq!(d.key(&other, &Options::default()).unwrap(), Some(key));

        struct Broken;
        impl Request for Broken {
            fn header(&self, _: &str) -> Result<Option<String>, Unreadable> {
                Err(Unreadable)
            }
            fn source_address(&self) -> Result<Option<String>, Unreadable> {
                Err(Unreadable)
            }
            fn jwt_payload(&self, _: &str) -> Result<Option<String>, Unreadable> {
                Err(Unreadable)
            }
        }
        for entries in [
            r#"[{"request_header":{"header_name":"x-user","descriptor_key":"u"}}]"#,
            r#"[{"remote_address":{}}]"#,
            r#"[{"path":{"prefix":"/"}}]"#,
            r#"[{"jwt_claim":{"claim":"sub","payload":"main"}}]"#,
        ] {
            assert_eq!(
                descriptor(entries).key(&Broken, &hops(1)),
                Err(Unreadable),
                "{entries}"
            );
        }
        let mut garbled = request(&[]);
        garbled.payloads.insert("main".into(), "{not json".into());
        let claim = descriptor(r#"[{"jwt_claim":{"claim":"sub","payload":"main"}}]"#);
        assert_eq!(claim.key(&garbled, &Options::default()), Err(Unreadable));
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

    /// Untrusted text: arbitrary Unicode, address-like pieces, separators the key escapes.
    fn hostile_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            any::<String>(),
            "[0-9a-fA-F:.%\\[\\], |=]{0,80}",
            (any::<String>(), 0usize..3000).prop_map(|(s, n)| s.repeat(n / s.len().max(1))),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// Whatever the client sends in headers, addresses, paths and (published) claims:
        /// no panic, and a key of bounded length.
        #[test]
        fn keys_from_hostile_requests_are_bounded(
            user in hostile_text(),
            xff in hostile_text(),
            source in hostile_text(),
            path in hostile_text(),
            claim in hostile_text(),
            payload in proptest::option::of(hostile_text()),
            hops_n in 0u32..4,
            max in 1usize..300,
            prefix in 0u8..=128,
        ) {
            let mut r = request(&[
                ("x-user", user.as_str()),
                ("x-forwarded-for", xff.as_str()),
                (":path", path.as_str()),
                (":method", claim.as_str()),
                ("x-sub", claim.as_str()),
            ]);
            r.source = Some(source);
            if let Some(p) = payload {
                r.payloads.insert("main".into(), p);
            }
            r.payloads.insert("json".into(), serde_json::json!({"sub": claim}).to_string());
            let options = Options { trusted_hops: hops_n, max_value_bytes: max, ipv6_prefix_len: prefix };
            let d = descriptor(r#"[{"request_header":{"header_name":"x-user","descriptor_key":"u"}},
                                   {"remote_address":{}}, {"method":{}}, {"path":{"prefix":"/"}},
                                   {"jwt_claim":{"claim":"sub","header_name":"x-sub"}},
                                   {"jwt_claim":{"claim":"sub","payload":"json","descriptor_key":"s"}}]"#);
            if let Ok(Some(key)) = d.key(&r, &options) {
                // Five values of at most `max` bytes, each escaped to at most 3 times its size.
                proptest::prop_assert!(key.len() <= 64 + 5 * 3 * max, "{} bytes", key.len());
            }
            let claim_only = descriptor(r#"[{"jwt_claim":{"claim":"a.b","payload":"main"}}]"#);
            if let Ok(Some(key)) = claim_only.key(&r, &options) {
                proptest::prop_assert!(key.len() <= 16 + 3 * max);
            }
            if let Ok(Some(address)) = client_address(&r, &options) {
                proptest::prop_assert!(address.len() <= xff.len().max(r.source.as_deref().map_or(0, str::len)).max(49));
            }
        }
    }
}
