//! Route matching: which rule (and so which requirement) applies to a request.

use regex::Regex;

use crate::config::{HeaderMatcher, RegexMatcher, RouteMatch, StringMatcher};
use crate::{ConfigError, Headers, header};

/// A compiled `type.matcher.v3.StringMatcher`.
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Equal.
    Exact(String, bool),
    /// Starts with.
    Prefix(String, bool),
    /// Ends with.
    Suffix(String, bool),
    /// Contains.
    Contains(String, bool),
    /// Whole-string regex.
    Regex(Regex),
}

impl StringMatch {
    /// Compiles a matcher; `field` names it in errors.
    pub fn compile(raw: &StringMatcher, field: &str) -> Result<Self, ConfigError> {
        let ic = raw.ignore_case;
        let lower = |s: &String| {
            if ic {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        let mut set = Vec::new();
        if let Some(v) = &raw.exact {
            set.push(StringMatch::Exact(lower(v), ic));
        }
        if let Some(v) = &raw.prefix {
            set.push(StringMatch::Prefix(lower(v), ic));
        }
        if let Some(v) = &raw.suffix {
            set.push(StringMatch::Suffix(lower(v), ic));
        }
        if let Some(v) = &raw.contains {
            set.push(StringMatch::Contains(lower(v), ic));
        }
        if let Some(r) = &raw.safe_regex {
            set.push(StringMatch::Regex(compile_regex(
                r,
                &format!("{field}.safe_regex"),
            )?));
        }
        match set.len() {
            1 => Ok(set.remove(0)),
            0 => Err(ConfigError::invalid(
                field,
                "needs one of exact, prefix, suffix, contains, safe_regex",
            )),
            _ => Err(ConfigError::invalid(
                field,
                "sets more than one of exact, prefix, suffix, contains, safe_regex",
            )),
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let fold = |ic: bool| {
            if ic {
                std::borrow::Cow::Owned(value.to_ascii_lowercase())
            } else {
                std::borrow::Cow::Borrowed(value)
            }
        };
        match self {
            StringMatch::Exact(s, ic) => fold(*ic) == s.as_str(),
            StringMatch::Prefix(s, ic) => fold(*ic).starts_with(s.as_str()),
            StringMatch::Suffix(s, ic) => fold(*ic).ends_with(s.as_str()),
            StringMatch::Contains(s, ic) => fold(*ic).contains(s.as_str()),
            StringMatch::Regex(r) => r.is_match(value),
        }
    }
}

/// Compiles an RE2 regex for whole-string matching, as Envoy's `safe_regex` does, with RE2's
/// ASCII Perl classes ([`crate::re2`]).
pub fn compile_regex(raw: &RegexMatcher, field: &str) -> Result<Regex, ConfigError> {
    crate::re2::whole(&raw.regex)
        .map_err(|e| ConfigError::invalid(field, format!("bad regex {:?}: {e}", raw.regex)))
}

#[derive(Debug, Clone)]
enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    SeparatedPrefix(String),
}

#[derive(Debug, Clone)]
struct HeaderMatch {
    name: String,
    value: Option<StringMatch>,
    present: Option<bool>,
    invert: bool,
    missing_as_empty: bool,
}

/// A compiled `RouteMatch`.
#[derive(Debug, Clone)]
pub struct RouteMatcher {
    path: PathMatch,
    case_sensitive: bool,
    headers: Vec<HeaderMatch>,
}

impl RouteMatcher {
    /// Compiles a route match; `field` is its path in the config (e.g. `rules[0].match`).
    pub fn compile(raw: &RouteMatch, field: &str) -> Result<Self, ConfigError> {
        for (name, set) in [
            ("query_parameters", raw.query_parameters.is_some()),
            ("grpc", raw.grpc.is_some()),
            ("runtime_fraction", raw.runtime_fraction.is_some()),
            ("connect_matcher", raw.connect_matcher.is_some()),
            ("path_match_policy", raw.path_match_policy.is_some()),
        ] {
            if set {
                return Err(ConfigError::unsupported(
                    format!("{field}.{name}"),
                    "not supported by the jwt-auth Wasm filter",
                ));
            }
        }
        let case_sensitive = raw.case_sensitive.unwrap_or(true);
        let fold = |s: &String| {
            if case_sensitive {
                s.clone()
            } else {
                s.to_ascii_lowercase()
            }
        };
        let mut paths = Vec::new();
        if let Some(p) = &raw.prefix {
            paths.push(PathMatch::Prefix(fold(p)));
        }
        if let Some(p) = &raw.path {
            paths.push(PathMatch::Exact(fold(p)));
        }
        if let Some(r) = &raw.safe_regex {
            paths.push(PathMatch::Regex(compile_regex(
                r,
                &format!("{field}.safe_regex"),
            )?));
        }
        if let Some(p) = &raw.path_separated_prefix {
            paths.push(PathMatch::SeparatedPrefix(fold(p)));
        }
        if paths.len() != 1 {
            return Err(ConfigError::invalid(
                field,
                "needs exactly one of prefix, path, safe_regex, path_separated_prefix",
            ));
        }
        let headers = raw
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| compile_header(h, &format!("{field}.headers[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(RouteMatcher {
            path: paths.remove(0),
            case_sensitive,
            headers,
        })
    }

    /// Whether the request matches.
    pub fn matches(&self, headers: &Headers) -> bool {
        let full = header(headers, ":path").unwrap_or("");
        let without_query = full.split(['?', '#']).next().unwrap_or("");
        let folded = |s| fold_case(s, self.case_sensitive);
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => folded(full).starts_with(p.as_str()),
            PathMatch::Exact(p) => folded(without_query) == p.as_str(),
            PathMatch::Regex(r) => r.is_match(without_query),
            PathMatch::SeparatedPrefix(p) => {
                let path = folded(without_query);
                path.strip_prefix(p.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        };
        path_ok && self.headers.iter().all(|h| h.matches(headers))
    }
}

fn fold_case(s: &str, case_sensitive: bool) -> std::borrow::Cow<'_, str> {
    if case_sensitive {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.to_ascii_lowercase())
    }
}

fn compile_header(raw: &HeaderMatcher, field: &str) -> Result<HeaderMatch, ConfigError> {
    if raw.range_match.is_some() {
        return Err(ConfigError::unsupported(
            format!("{field}.range_match"),
            "not supported by the jwt-auth Wasm filter",
        ));
    }
    let mut values = Vec::new();
    if let Some(v) = &raw.exact_match {
        // Envoy's legacy `exact_match: ""` matches any value (`string_match.exact` does not).
        values.push(if v.is_empty() {
            StringMatch::Prefix(String::new(), false)
        } else {
            StringMatch::Exact(v.clone(), false)
        });
    }
    if let Some(v) = &raw.prefix_match {
        values.push(StringMatch::Prefix(v.clone(), false));
    }
    if let Some(v) = &raw.suffix_match {
        values.push(StringMatch::Suffix(v.clone(), false));
    }
    if let Some(v) = &raw.contains_match {
        values.push(StringMatch::Contains(v.clone(), false));
    }
    if let Some(r) = &raw.safe_regex_match {
        values.push(StringMatch::Regex(compile_regex(
            r,
            &format!("{field}.safe_regex_match"),
        )?));
    }
    if let Some(m) = &raw.string_match {
        values.push(StringMatch::compile(m, &format!("{field}.string_match"))?);
    }
    if values.len() + usize::from(raw.present_match.is_some()) > 1 {
        return Err(ConfigError::invalid(field, "sets more than one match kind"));
    }
    Ok(HeaderMatch {
        name: raw.name.to_ascii_lowercase(),
        value: values.pop(),
        present: raw.present_match,
        invert: raw.invert_match,
        missing_as_empty: raw.treat_missing_header_as_empty,
    })
}

impl HeaderMatch {
    /// As Envoy 1.40's `HeaderUtility`: each value of a repeated header is tried on its own (no
    /// comma split, no join) and any match counts; a missing header matches no value matcher,
    /// inverted or not, unless `treat_missing_header_as_empty`.
    fn matches(&self, headers: &Headers) -> bool {
        let mut values: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(&self.name))
            .map(|(_, v)| v.as_str())
            .collect();
        if values.is_empty() && self.missing_as_empty {
            values.push("");
        }
        let result = match (&self.value, self.present) {
            (_, Some(want_present)) => values.is_empty() != want_present,
            (Some(_), None) if values.is_empty() => return false,
            (Some(m), None) => values.iter().any(|v| m.matches(v)),
            // No value matcher: presence.
            (None, None) => !values.is_empty(),
        };
        result != self.invert
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut h = vec![(":path".to_string(), path.to_string())];
        h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        h
    }

    fn matcher(json: &str) -> RouteMatcher {
        RouteMatcher::compile(&serde_json::from_str(json).unwrap(), "m").unwrap()
    }

    #[test]
    fn path_kinds() {
        assert!(matcher(r#"{"prefix":"/api"}"#).matches(&req("/api/x?q=1", &[])));
        assert!(!matcher(r#"{"prefix":"/api"}"#).matches(&req("/health", &[])));
        assert!(matcher(r#"{"path":"/health"}"#).matches(&req("/health?x", &[])));
        assert!(!matcher(r#"{"path":"/health"}"#).matches(&req("/health/x", &[])));
        assert!(matcher(r#"{"safe_regex":{"regex":"/v[0-9]+/.*"}}"#).matches(&req("/v2/a", &[])));
        assert!(!matcher(r#"{"safeRegex":{"regex":"/v[0-9]+"}}"#).matches(&req("/v2/a", &[])));
        assert!(matcher(r#"{"path_separated_prefix":"/a"}"#).matches(&req("/a/b", &[])));
        assert!(!matcher(r#"{"path_separated_prefix":"/a"}"#).matches(&req("/ab", &[])));
        assert!(matcher(r#"{"prefix":"/API","case_sensitive":false}"#).matches(&req("/api", &[])));
    }

    #[test]
    fn header_kinds() {
        let m = matcher(r#"{"prefix":"/","headers":[{"name":":method","exact_match":"POST"}]}"#);
        assert!(m.matches(&req("/", &[(":method", "POST")])));
        assert!(!m.matches(&req("/", &[(":method", "GET")])));
        let present = matcher(r#"{"prefix":"/","headers":[{"name":"x-a","present_match":true}]}"#);
        assert!(present.matches(&req("/", &[("x-a", "")])));
        assert!(!present.matches(&req("/", &[])));
        let inverted = matcher(
            r#"{"prefix":"/","headers":[{"name":"x-a","string_match":{"prefix":"ab","ignore_case":true},"invert_match":true}]}"#,
        );
        assert!(!inverted.matches(&req("/", &[("x-a", "ABc")])));
        assert!(inverted.matches(&req("/", &[("x-a", "zz")])));
    }

    #[test]
    fn repeated_and_missing_headers_match_as_envoy_1_40() {
        // Probed in Envoy 1.40: any value of a repeated header may match, values are not split
        // on commas, and a missing header matches no value matcher even when inverted.
        let h = |json: &str| matcher(&format!(r#"{{"prefix":"/","headers":[{json}]}}"#));
        let exact = h(r#"{"name":"x-admin","string_match":{"exact":"true"}}"#);
        assert!(exact.matches(&req("/", &[("x-admin", "false"), ("x-admin", "true")])));
        assert!(exact.matches(&req("/", &[("x-admin", "true"), ("x-admin", "false")])));
        assert!(!exact.matches(&req("/", &[("x-admin", "false,true")])));
        let prefix = h(r#"{"name":"x-h","prefix_match":"ad"}"#);
        assert!(prefix.matches(&req("/", &[("x-h", "zz"), ("X-H", "admin")])));
        let regex = h(r#"{"name":"x-h","safe_regex_match":{"regex":"zz,ad.*"}}"#);
        assert!(!regex.matches(&req("/", &[("x-h", "zz"), ("x-h", "admin")])));
        let inverted = h(r#"{"name":"x-h","prefix_match":"ad","invert_match":true}"#);
        assert!(!inverted.matches(&req("/", &[])));
        assert!(!inverted.matches(&req("/", &[("x-h", "zz"), ("x-h", "admin")])));
        assert!(!inverted.matches(&req("/", &[("x-h", "admin"), ("x-h", "zz")])));
        assert!(inverted.matches(&req("/", &[("x-h", "zz")])));
        let legacy_empty = h(r#"{"name":"x-h","exact_match":""}"#);
        assert!(legacy_empty.matches(&req("/", &[("x-h", "admin")])));
        assert!(!legacy_empty.matches(&req("/", &[])));
        let strict_empty = h(r#"{"name":"x-h","string_match":{"exact":""}}"#);
        assert!(!strict_empty.matches(&req("/", &[("x-h", "admin")])));
        let inverted_missing_empty = h(
            r#"{"name":"x-h","string_match":{"exact":"x"},"invert_match":true,"treat_missing_header_as_empty":true}"#,
        );
        assert!(inverted_missing_empty.matches(&req("/", &[])));
        let absent = h(r#"{"name":"x-h","present_match":false,"invert_match":true}"#);
        assert!(absent.matches(&req("/", &[("x-h", "a"), ("x-h", "b")])));
        assert!(!absent.matches(&req("/", &[])));
    }

    #[test]
    fn refuses_ambiguous_or_unsupported_matches() {
        let bad = [
            r#"{"prefix":"/","path":"/x"}"#,
            r#"{}"#,
            r#"{"prefix":"/","query_parameters":[]}"#,
            r#"{"safe_regex":{"regex":"("}}"#,
        ];
        for json in bad {
            let raw: RouteMatch = serde_json::from_str(json).unwrap();
            assert!(RouteMatcher::compile(&raw, "m").is_err(), "{json}");
        }
    }
}
