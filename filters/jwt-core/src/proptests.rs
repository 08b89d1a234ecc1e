//! Property tests of every parser that reads what a client or a remote endpoint sends: the JWT
//! compact form and its JOSE header, JWKS documents, query strings and header values (token
//! extraction). Each runs 10,000 cases and asserts no panic and output bounded by the input.

use base64::Engine as _;
use proptest::prelude::*;

use crate::extract::{self, Location};
use crate::jwks::KeySet;
use crate::token::{B64URL, Jwt};

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(10_000)
}

/// JSON-ish text: arbitrary characters weighted towards the ones JSON and JWTs are made of.
fn jsonish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::sample::select(vec![
                "{", "}", "[", "]", ":", ",", "\"", "\"alg\"", "\"RS256\"", "\"none\"", "\"kid\"",
                "\"exp\"", "\"aud\"", "\"keys\"", "\"kty\"", "\"RSA\"", "\"EC\"", "\"oct\"",
                "\"k\"", "\"n\"", "\"e\"", "\"x\"", "\"y\"", "\"crv\"", "\"P-256\"", "\"use\"",
                "\"enc\"", "1", "-1", "1e400", "null", "true", "\"AQAB\"", "\"c2VjcmV0\"",
            ])
            .prop_map(str::to_string),
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..48,
    )
    .prop_map(|parts| parts.concat())
}

/// Header values and paths: printable ASCII with the separators extraction cares about.
fn header_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(vec![
                "Bearer ", "bearer ", "Token ", "a.b.c", "eyJ", ".", ",", " ", "=", "&", "?",
                "%", "%2E", "%5F", "%zz", "+", ";", "\"", "access_token", "jwt", "session",
            ])
            .prop_map(str::to_string),
            1 => "[ -~]{0,4}",
            1 => any::<char>().prop_map(|c| c.to_string()),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

fn locations() -> Vec<Location> {
    let mut l = Location::defaults();
    l.extend([
        Location::Header {
            name: "x-jwt".into(),
            prefix: "Token ".into(),
        },
        Location::Header {
            name: "x-raw".into(),
            prefix: String::new(),
        },
        Location::Param("jwt".into()),
        Location::Cookie("session".into()),
    ]);
    l
}

proptest! {
    #![proptest_config(cases())]

    /// Arbitrary text as a compact JWT.
    #[test]
    fn jwt_compact_form(token in "[A-Za-z0-9_.=+/ -]{0,200}") {
        if let Ok(jwt) = Jwt::parse(&token) {
            prop_assert_eq!(jwt.raw(), token.as_str());
            prop_assert!(jwt.signing_input().len() < token.len());
        }
    }

    /// Arbitrary JOSE headers and payloads, base64url-encoded into a token.
    #[test]
    fn jose_header_and_payload(header in jsonish(), payload in jsonish(), sig in "[A-Za-z0-9_-]{0,8}") {
        let token = format!("{}.{}.{sig}", B64URL.encode(&header), B64URL.encode(&payload));
        if let Ok(jwt) = Jwt::parse(&token) {
            // Whatever parsed carries no key of its own and only strings as audiences.
            for k in ["jwk", "jku", "x5u", "x5c", "crit"] {
                prop_assert!(!jwt.header.contains_key(k));
            }
            prop_assert!(jwt.header.len() <= header.len());
        }
    }

    /// Arbitrary JWKS documents: parsed or refused, never a panic; no more keys than entries.
    #[test]
    fn jwks_documents(body in jsonish()) {
        let document = format!("{{\"keys\":[{body}]}}");
        let parsed = [
            KeySet::parse(&document),
            KeySet::parse_local(&document),
            KeySet::parse(&body),
        ];
        for set in parsed.into_iter().flatten() {
            prop_assert!(set.keys().len() + set.skipped().len() <= document.len());
        }
    }

    /// Arbitrary header values, paths and cookies: every token found is a piece of the input.
    #[test]
    fn extraction(auth in header_text(), auth2 in header_text(), path in header_text(),
                  custom in header_text(), cookie in header_text()) {
        let headers = vec![
            (":path".to_string(), format!("/{path}")),
            ("authorization".to_string(), auth.clone()),
            ("authorization".to_string(), auth2.clone()),
            ("x-jwt".to_string(), custom.clone()),
            ("x-raw".to_string(), custom.clone()),
            ("cookie".to_string(), cookie.clone()),
        ];
        let input_len: usize = headers.iter().map(|(_, v)| v.len()).sum::<usize>() + 1;
        let found = extract::extract(&locations(), &headers);
        prop_assert!(found.len() <= locations().len());
        for f in &found {
            // Percent-decoding and joining never grow a token beyond its source.
            prop_assert!(f.token.len() <= input_len * 3, "{:?}", f);
        }
        let stripped = extract::remove_query_param(&format!("/{path}"), "access_token");
        prop_assert!(stripped.len() <= path.len() + 1);
        prop_assert!(extract::query_param(&stripped, "access_token").is_none());
    }

    /// Percent-decoding: never longer than the input, and decoding plain text changes nothing.
    #[test]
    fn percent_decoding(text in header_text()) {
        let decoded = extract::percent_decode(&text);
        // Invalid UTF-8 becomes U+FFFD (3 bytes) per byte at most.
        prop_assert!(decoded.len() <= text.len() * 3);
        if !text.contains('%') {
            prop_assert_eq!(decoded, text);
        }
    }
}
