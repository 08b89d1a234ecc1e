//! Finding tokens in a request: headers (with a value prefix), query parameters, cookies.

use crate::{Headers, header};

/// Where a provider looks for tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A header, with the text that precedes the token (e.g. `Bearer `).
    Header {
        /// Lowercase header name.
        name: String,
        /// Prefix before the token, matched case-insensitively; may be empty.
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
}

/// A token found in a request, with where it was found (to remove it when not forwarded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The token text.
    pub token: String,
    /// Where it was.
    pub location: Location,
}

/// Characters a compact JWS consists of; the token ends at the first other character, so
/// `Bearer <jwt>, other` yields just the JWT (as Envoy does).
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=' | '+' | '/')
}

fn take_token(value: &str) -> Option<String> {
    let end = value
        .find(|c: char| !is_token_char(c))
        .unwrap_or(value.len());
    (end > 0).then(|| value[..end].to_string())
}

/// All tokens in the request at the given locations, each distinct token once.
pub fn extract(locations: &[Location], headers: &Headers) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let mut push = |token: Option<String>, location: &Location| {
        if let Some(token) = token
            && !found.iter().any(|f| f.token == token)
        {
            found.push(Found {
                token,
                location: location.clone(),
            });
        }
    };
    for location in locations {
        match location {
            Location::Header { name, prefix } => {
                for (_, value) in headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)) {
                    let value = value.trim_start();
                    let rest = if prefix.is_empty() {
                        Some(value)
                    } else {
                        value
                            .get(..prefix.len())
                            .filter(|head| head.eq_ignore_ascii_case(prefix))
                            .map(|_| &value[prefix.len()..])
                    };
                    push(rest.and_then(|r| take_token(r.trim_start())), location);
                }
            }
            Location::Param(param) => {
                let path = header(headers, ":path").unwrap_or("");
                let query = path.split_once('?').map_or("", |(_, q)| q);
                let query = query.split('#').next().unwrap_or("");
                for pair in query.split('&') {
                    if let Some((key, value)) = pair.split_once('=')
                        && key == param
                    {
                        push(take_token(value), location);
                    }
                }
            }
            Location::Cookie(cookie) => {
                for (_, value) in headers.iter().filter(|(n, _)| n == "cookie") {
                    for pair in value.split(';') {
                        if let Some((key, value)) = pair.trim().split_once('=')
                            && key == cookie
                        {
                            push(take_token(value.trim_matches('"')), location);
                        }
                    }
                }
            }
        }
    }
    found
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

    #[test]
    fn default_locations() {
        let d = Location::defaults();
        assert_eq!(tokens(&d, &[("authorization", "Bearer a.b.c")]), ["a.b.c"]);
        assert_eq!(
            tokens(&d, &[("authorization", "bearer a.b.c, x")]),
            ["a.b.c"]
        );
        assert_eq!(
            tokens(&d, &[(":path", "/p?x=1&access_token=q.r.s")]),
            ["q.r.s"]
        );
        assert!(tokens(&d, &[("authorization", "Basic dXNlcg==")]).is_empty());
        assert!(tokens(&d, &[(":path", "/p?token=a.b.c")]).is_empty());
        // The same token in two places is verified once.
        assert_eq!(
            tokens(
                &d,
                &[
                    ("authorization", "Bearer a.b.c"),
                    (":path", "/?access_token=a.b.c")
                ]
            ),
            ["a.b.c"]
        );
    }

    #[test]
    fn custom_locations() {
        let header = Location::Header {
            name: "x-jwt".into(),
            prefix: String::new(),
        };
        assert_eq!(tokens(&[header], &[("x-jwt", "a.b.c")]), ["a.b.c"]);
        let cookie = Location::Cookie("session".into());
        assert_eq!(
            tokens(&[cookie], &[("cookie", "a=1; session=x.y.z; b=2")]),
            ["x.y.z"]
        );
        let prefixed = Location::Header {
            name: "x-auth".into(),
            prefix: "Token ".into(),
        };
        assert!(tokens(&[prefixed], &[("x-auth", "Bearer a.b.c")]).is_empty());
    }
}
