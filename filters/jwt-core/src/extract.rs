//! Finding tokens in a request: headers (with a value prefix), query parameters, cookies — the
//! way Envoy's `jwt_authn` finds them (`extractor.cc`), so both filters see the same tokens.
//!
//! - A header's values are joined with `,` (Envoy reads a repeated header as one value). Without a
//!   prefix the whole value is the token. With one, the prefix is looked for anywhere in the value,
//!   case-sensitively; the token starts at the first base64url character or `.` after it and runs
//!   to the end of the value (a value with nothing usable after the prefix is taken whole). The
//!   token is not cut short: `Bearer <jwt>, junk` is the token `<jwt>, junk`, which then fails to
//!   parse, as in Envoy.
//! - Query parameters are split on `&` and the first `=`; names and values are percent-decoded
//!   (`+` stays `+`); the first occurrence of a name counts. A name without `=` has the empty value.
//! - Cookies: `name=value` pairs split on `;`, one pair of surrounding double quotes dropped.
//!
//! Tokens come out in Envoy's order: header locations sorted by name and prefix, then parameters
//! by name, then cookies by name. Envoy verifies them from last to first.

use crate::{Headers, header};

/// Where a provider looks for tokens.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Location {
    /// A header, with the text that precedes the token (e.g. `Bearer `).
    Header {
        /// Lowercase header name.
        name: String,
        /// Text before the token, matched case-sensitively anywhere in the value; may be empty.
        prefix: String,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

impl Location {
    /// Envoy's default when a provider names no location: `Authorization: Bearer <token>` and the
    /// `access_token` query parameter.
    pub fn defaults() -> Vec<Location> {
        vec![
            Location::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            },
            Location::Param("access_token".into()),
        ]
    }

    /// Envoy's key for ordering locations: header name followed by prefix, parameter name,
    /// cookie name — each kind in its own group, header locations first. As a kind and two
    /// pieces of text read one after the other, so comparing keys allocates nothing.
    fn order_key(&self) -> (u8, &str, &str) {
        match self {
            Location::Header { name, prefix } => (0, name, prefix),
            Location::Param(name) => (1, name, ""),
            Location::Cookie(name) => (2, name, ""),
        }
    }

    /// Compares two locations by [`Location::order_key`], the text of a key being its two
    /// pieces joined.
    fn order(&self, other: &Location) -> std::cmp::Ordering {
        let (a, b) = (self.order_key(), other.order_key());
        fn text<'a>(k: (u8, &'a str, &'a str)) -> impl Iterator<Item = &'a u8> {
            k.1.as_bytes().iter().chain(k.2.as_bytes())
        }
        a.0.cmp(&b.0).then_with(|| text(a).cmp(text(b)))
    }
}

/// A token found in a request, with where it was found (to remove it when not forwarded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The token text.
    pub token: String,
    /// Where it was.
    pub location: Location,
}

/// Characters a token may start with after a header prefix: base64url and `.` (RFC 4648 § 5).
fn is_token_start(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// The token in `value` after a prefix that ends at byte `after`, as Envoy's `extractJWT`.
fn after_prefix(value: &str, after: usize) -> &str {
    match value
        .get(after..)
        .and_then(|rest| rest.find(is_token_start))
    {
        Some(start) => &value[after + start..],
        None => value,
    }
}

/// The token in a header location, if the header is present (and holds the prefix).
fn from_header(headers: &Headers, name: &str, prefix: &str) -> Option<String> {
    let mut values = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str());
    let first = values.next()?;
    // One value (the usual case) is used as it is; several are joined with `,`.
    let joined: std::borrow::Cow<str> = match values.next() {
        None => first.into(),
        Some(second) => {
            let mut all = vec![first, second];
            all.extend(values);
            all.join(",").into()
        }
    };
    if prefix.is_empty() {
        return Some(joined.into_owned());
    }
    let pos = joined.find(prefix)?;
    Some(after_prefix(&joined, pos + prefix.len()).to_string())
}

/// Percent-decodes as Envoy's `PercentEncoding::decode`: `%XY` with two hex digits becomes the
/// byte, anything else (a lone `%`, `+`) stays as it is. Bytes that are not UTF-8 are replaced,
/// which only makes a token that could never verify fail differently.
pub fn percent_decode(encoded: &str) -> String {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            // Both digits are below 16, so this fits a byte.
            out.push(((h << 4) | l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The query string of a `:path` (everything after the first `?`), if any.
fn query_of(path: &str) -> Option<&str> {
    path.split_once('?').map(|(_, q)| q)
}

/// `(decoded name, raw segment)` for each `&`-separated segment of a query string, as Envoy's
/// `parseParameters` splits it (an empty segment is a parameter with an empty name).
fn segments(query: &str) -> impl Iterator<Item = (String, &str)> {
    // Envoy's loop stops at the end, so a trailing `&` adds no empty parameter.
    let trimmed = query.strip_suffix('&').unwrap_or(query);
    let parts: Box<dyn Iterator<Item = &str>> = if query.is_empty() {
        Box::new(std::iter::empty())
    } else {
        Box::new(trimmed.split('&'))
    };
    parts.map(|segment| {
        let name = segment.split_once('=').map_or(segment, |(n, _)| n);
        (percent_decode(name), segment)
    })
}

/// The decoded value of the first query parameter called `name` in `path`.
pub fn query_param(path: &str, name: &str) -> Option<String> {
    let query = query_of(path)?;
    // Only a segment that names the parameter, encoded or not, can be it: skip decoding the rest.
    if !query.contains(name) && !query.contains('%') {
        return None;
    }
    segments(query)
        .find(|(n, _)| n == name)
        .map(|(_, segment)| {
            segment
                .split_once('=')
                .map_or(String::new(), |(_, v)| percent_decode(v))
        })
}

/// `path` without any query parameter whose decoded name is `name`; the other parameters are kept
/// as sent, in their order (Envoy rebuilds them decoded and sorted, which can corrupt values with
/// encoded separators; keeping them verbatim cannot).
pub fn remove_query_param(path: &str, name: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_string();
    };
    let kept: Vec<&str> = segments(query)
        .filter(|(n, _)| n != name)
        .map(|(_, segment)| segment)
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The value of cookie `name`, as Envoy's `parseCookies` reads the `cookie` headers.
fn from_cookie(headers: &Headers, name: &str) -> Option<String> {
    // `parseCookies` emplaces pairs in header order, so the first `name=` pair wins.
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';').filter(|s| !s.is_empty()))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            if key.trim_start_matches(' ') != name {
                return None;
            }
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some(value.to_string())
        })
}

/// The given locations in Envoy's order, each once.
pub fn envoy_order(locations: &[Location]) -> Vec<Location> {
    let mut sorted = locations.to_vec();
    sorted.sort_by(Location::order);
    sorted.dedup_by(|a, b| a.order(b).is_eq());
    sorted
}

/// Whether `locations` are in Envoy's order already, each once (as a provider's are: they are
/// ordered when it is compiled), so a request need not sort them again.
fn in_envoy_order(locations: &[Location]) -> bool {
    locations.windows(2).all(|w| w[0].order(&w[1]).is_lt())
}

/// All tokens in the request at the given locations, in Envoy's order (see the module docs). The
/// same token at two locations is found twice, as in Envoy.
pub fn extract(locations: &[Location], headers: &Headers) -> Vec<Found> {
    let path = header(headers, ":path");
    let ordered: std::borrow::Cow<[Location]> = if in_envoy_order(locations) {
        locations.into()
    } else {
        envoy_order(locations).into()
    };
    ordered
        .iter()
        .filter_map(|location| {
            let token = match &location {
                Location::Header { name, prefix } => from_header(headers, name, prefix),
                Location::Param(param) => path.and_then(|p| query_param(p, param)),
                Location::Cookie(cookie) => from_cookie(headers, cookie),
            }?;
            Some(Found {
                token,
                location: location.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn tokens(locations: &[Location], pairs: &[(&str, &str)]) -> Vec<String> {
        extract(locations, &headers(pairs))
            .into_iter()
            .map(|f| f.token)
            .collect()
    }

    fn prefixed(name: &str, prefix: &str) -> Location {
        Location::Header {
            name: name.into(),
            prefix: prefix.into(),
        }
    }

    #[test]
    fn default_locations() {
        let d = Location::defaults();
        assert_eq!(tokens(&d, &[("authorization", "Bearer a.b.c")]), ["a.b.c"]);
        assert_eq!(
            tokens(&d, &[(":path", "/p?x=1&access_token=q.r.s")]),
            ["q.r.s"]
        );
        assert!(tokens(&d, &[("authorization", "Basic dXNlcg==")]).is_empty());
        assert!(tokens(&d, &[(":path", "/p?token=a.b.c")]).is_empty());
        // The same token in two places is found twice (Envoy verifies both).
        assert_eq!(
            tokens(
                &d,
                &[
                    ("authorization", "Bearer a.b.c"),
                    (":path", "/?access_token=a.b.c")
                ]
            ),
            ["a.b.c", "a.b.c"]
        );
    }

    #[test]
    fn header_prefix_is_case_sensitive_and_found_anywhere() {
        let d = Location::defaults();
        // Envoy 1.40 does not find `bearer ` or `BEARER ` for the prefix `Bearer `.
        assert!(tokens(&d, &[("authorization", "bearer a.b.c")]).is_empty());
        assert!(tokens(&d, &[("authorization", "BEARER a.b.c")]).is_empty());
        assert_eq!(
            tokens(&d, &[("authorization", "Basic abc, Bearer a.b.c")]),
            ["a.b.c"]
        );
        // Non-token characters after the prefix are skipped; the token runs to the end.
        assert_eq!(
            tokens(&d, &[("authorization", "Bearer   a.b.c")]),
            ["a.b.c"]
        );
        assert_eq!(
            tokens(&d, &[("authorization", "Bearer a.b.c, x")]),
            ["a.b.c, x"]
        );
        // Nothing usable after the prefix: the whole value, which then fails to parse.
        assert_eq!(
            tokens(&d, &[("authorization", "Bearer ,,,")]),
            ["Bearer ,,,"]
        );
        // The prefix matched by Envoy's extractor tests: anywhere, then the first token char.
        let p = [prefixed("prefix-header", "CCCDDD")];
        assert_eq!(
            tokens(
                &p,
                &[("prefix-header", "preamble CCCDDD=jwt_token,extra=more")]
            ),
            ["jwt_token,extra=more"]
        );
        let two = [prefixed("h", "AAA"), prefixed("h", "AAABBB")];
        assert_eq!(tokens(&two, &[("h", "AAABBBjwt")]), ["BBBjwt", "jwt"]);
    }

    #[test]
    fn repeated_headers_are_joined() {
        let d = Location::defaults();
        assert_eq!(
            tokens(
                &d,
                &[
                    ("authorization", "Bearer a.b.c"),
                    ("authorization", "Bearer d.e.f")
                ]
            ),
            ["a.b.c,Bearer d.e.f"]
        );
        assert_eq!(
            tokens(
                &d,
                &[
                    ("authorization", "Basic abc"),
                    ("authorization", "Bearer d.e.f")
                ]
            ),
            ["d.e.f"]
        );
        let plain = [prefixed("x-jwt", "")];
        assert_eq!(tokens(&plain, &[("x-jwt", "a"), ("x-jwt", "b")]), ["a,b"]);
    }

    #[test]
    fn query_parameters_are_decoded_and_first_wins() {
        let d = Location::defaults();
        assert_eq!(
            tokens(&d, &[(":path", "/?access_token=a%2Eb.c")]),
            ["a.b.c"]
        );
        assert_eq!(
            tokens(&d, &[(":path", "/?access%5Ftoken=a.b.c")]),
            ["a.b.c"]
        );
        assert_eq!(
            tokens(&d, &[(":path", "/?access_token=a.b.c+")]),
            ["a.b.c+"]
        );
        assert_eq!(
            tokens(&d, &[(":path", "/?access_token=1&access_token=2")]),
            ["1"]
        );
        // A name without a value is an empty token (which fails as malformed, not as missing).
        assert_eq!(tokens(&d, &[(":path", "/?access_token")]), [""]);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41%62"), "Ab");
    }

    #[test]
    fn removes_only_the_token_parameter() {
        assert_eq!(
            remove_query_param("/a?access_token=t", "access_token"),
            "/a"
        );
        assert_eq!(
            remove_query_param(
                "/a?z=1&access%5Ftoken=t&access_token=u&b=%20",
                "access_token"
            ),
            "/a?z=1&b=%20"
        );
        assert_eq!(remove_query_param("/a", "access_token"), "/a");
    }

    #[test]
    fn custom_locations_in_envoy_order() {
        let header = prefixed("x-jwt", "");
        assert_eq!(tokens(&[header], &[("x-jwt", "a.b.c")]), ["a.b.c"]);
        let cookie = Location::Cookie("session".into());
        assert_eq!(
            tokens(
                std::slice::from_ref(&cookie),
                &[("cookie", "a=1; session=x.y.z; b=2")]
            ),
            ["x.y.z"]
        );
        assert_eq!(
            tokens(&[cookie], &[("cookie", "session=\"x.y.z\"")]),
            ["x.y.z"]
        );
        // Envoy's `parseCookies` keeps the first pair of a name: first header, first pair.
        let cookie = Location::Cookie("session".into());
        assert_eq!(
            tokens(
                std::slice::from_ref(&cookie),
                &[
                    ("cookie", "session=forged.x.y"),
                    ("cookie", "session=good.x.y")
                ]
            ),
            ["forged.x.y"]
        );
        assert_eq!(
            tokens(
                &[cookie],
                &[("cookie", "session=first.x.y; session=second.x.y")]
            ),
            ["first.x.y"]
        );
        let prefixed_loc = prefixed("x-auth", "Token ");
        assert!(tokens(&[prefixed_loc], &[("x-auth", "Bearer a.b.c")]).is_empty());
        // Envoy's order: headers by name+prefix, then params, then cookies.
        let all = [
            Location::Param("token_param".into()),
            Location::Param("access_token".into()),
            prefixed("token-header", ""),
            prefixed("authorization", "Bearer "),
            prefixed("prefix-header", "AAA"),
        ];
        assert_eq!(
            tokens(
                &all,
                &[
                    (":path", "/path?token_param=token3&access_token=token4"),
                    ("token-header", "token2"),
                    ("authorization", "Bearer token1"),
                    ("prefix-header", "AAAtoken5"),
                ]
            ),
            ["token1", "token5", "token2", "token4", "token3"]
        );
    }

    /// The key Envoy sorts by, as text: what [`Location::order`] must agree with.
    fn text_key(l: &Location) -> (u8, String) {
        match l {
            Location::Header { name, prefix } => (0, format!("{name}{prefix}")),
            Location::Param(name) => (1, name.clone()),
            Location::Cookie(name) => (2, name.clone()),
        }
    }

    #[test]
    fn order_without_allocation_agrees_with_the_text_key() {
        let names = [
            "",
            "a",
            "ab",
            "abc",
            "b",
            "x-token",
            "x-token2",
            "Authorization",
        ];
        let mut all = Vec::new();
        for n in names {
            for p in names {
                all.push(prefixed(n, p));
            }
            all.push(Location::Param(n.into()));
            all.push(Location::Cookie(n.into()));
        }
        for a in &all {
            for b in &all {
                assert_eq!(a.order(b), text_key(a).cmp(&text_key(b)), "{a:?} {b:?}");
            }
        }
        // "a" + "bc" and "ab" + "c" are one key for Envoy: the first given is kept.
        let ordered = envoy_order(&[prefixed("ab", "c"), prefixed("a", "bc")]);
        assert_eq!(ordered, [prefixed("ab", "c")]);
        assert!(in_envoy_order(&envoy_order(&all)));
        assert!(!in_envoy_order(&[prefixed("b", ""), prefixed("a", "")]));
        assert!(!in_envoy_order(&[prefixed("a", ""), prefixed("a", "")]));
    }

    #[test]
    fn unordered_locations_are_still_read_in_envoys_order() {
        // A provider's locations are ordered when it is compiled; anything else is sorted here.
        let locations = [
            prefixed("x-b", ""),
            Location::Param("t".into()),
            prefixed("x-a", ""),
        ];
        let found = tokens(
            &locations,
            &[("x-a", "1"), ("x-b", "2"), (":path", "/?t=3")],
        );
        assert_eq!(found, ["1", "2", "3"]);
    }

    #[test]
    fn query_shortcut_still_finds_encoded_names() {
        assert_eq!(query_param("/p?a=1", "b"), None);
        assert_eq!(query_param("/p?%62=2", "b").as_deref(), Some("2"));
        assert_eq!(query_param("/p?xb=1&b=3", "b").as_deref(), Some("3"));
        assert_eq!(query_param("/p?b", "b").as_deref(), Some(""));
    }
}
