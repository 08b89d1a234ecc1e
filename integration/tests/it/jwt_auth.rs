//! meshgate's jwt-auth filter in real Envoy: a differential test against Envoy's own `jwt_authn`
//! from the same config, then what only this filter does (forwarding, remote JWKS behaviour,
//! stricter header checks, config errors).

// Test helpers fail the test by panicking, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Header};
use meshgate_integration::jwt::{NATIVE_MARKER, side_by_side};
use meshgate_integration::{Echo, JwksServer, http_client};
use meshgate_jwt::mint::{self, SigningKey, now};
use serde_json::{Value, json};

const ISSUER: &str = "https://issuer.test";
/// A second issuer: two providers with one issuer make `allow_missing` ambiguous (Envoy then
/// picks either, by hash order).
const CUSTOM_ISSUER: &str = "https://custom.test";

struct Keys {
    all: Vec<SigningKey>,
    other: SigningKey,
    outsider: SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = SigningKey::rsa("rs256", Algorithm::RS256);
        let all = vec![
            rsa.with_alg("rs384", Algorithm::RS384),
            rsa.with_alg("rs512", Algorithm::RS512),
            rsa.with_alg("ps256", Algorithm::PS256),
            rsa.with_alg("ps384", Algorithm::PS384),
            rsa.with_alg("ps512", Algorithm::PS512),
            rsa,
            SigningKey::es256("es256"),
            SigningKey::es384("es384"),
            SigningKey::ed25519("eddsa"),
            SigningKey::hmac(
                "hs256",
                Algorithm::HS256,
                b"0123456789abcdef0123456789abcdef",
            ),
            SigningKey::hmac("hs384", Algorithm::HS384, &[7u8; 48]),
            SigningKey::hmac("hs512", Algorithm::HS512, &[9u8; 64]),
        ];
        Keys {
            all,
            other: SigningKey::es256("other"),
            outsider: SigningKey::es256("es256"),
        }
    })
}

fn key(kid: &str) -> &'static SigningKey {
    keys().all.iter().find(|k| k.kid == kid).expect("known kid")
}

fn config() -> Value {
    let k = keys();
    let main_jwks = mint::jwks(&k.all.iter().collect::<Vec<_>>());
    json!({
        "providers": {
            "main": {
                "issuer": ISSUER,
                "audiences": ["api"],
                "local_jwks": {"inline_string": main_jwks},
                "forward_payload_header": "x-jwt-payload",
                "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"},
                                     {"header_name": "x-groups", "claim_name": "groups"},
                                     {"header_name": "x-score", "claim_name": "score"}],
                "payload_in_metadata": "main"
            },
            "other": {
                "issuer": "https://other.test",
                "from_headers": [{"name": "x-other-token"}],
                "local_jwks": {"inline_string": mint::jwks(&[&k.other])}
            },
            "custom": {
                "issuer": CUSTOM_ISSUER,
                "from_headers": [{"name": "x-jwt", "value_prefix": "Token "}],
                "from_params": ["jwt"],
                "from_cookies": ["session"],
                "local_jwks": {"inline_string": odd_but_valid_jwks(key("es256"))}
            }
        },
        "rules": [
            {"match": {"prefix": "/public"}},
            {"match": {"prefix": "/any"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "main"}, {"provider_name": "other"}]}}},
            {"match": {"prefix": "/all-lenient"}, "requires": {"requires_all": {"requirements": [
                {"provider_name": "main"}, {"allow_missing_or_failed": {}}]}}},
            {"match": {"prefix": "/all"}, "requires": {"requires_all": {"requirements": [
                {"provider_name": "main"}, {"provider_name": "other"}]}}},
            {"match": {"prefix": "/optional"}, "requires": {"allow_missing": {}}},
            {"match": {"prefix": "/lenient"}, "requires": {"allow_missing_or_failed": {}}},
            {"match": {"prefix": "/web"}, "requires": {"provider_and_audiences": {
                "provider_name": "main", "audiences": ["web"]}}},
            {"match": {"prefix": "/custom"}, "requires": {"provider_name": "custom"}},
            {"match": {"path": "/regex-bypass"}},
            {"match": {"safe_regex": {"regex": "/v[0-9]+/.*"}, "headers": [{"name": ":method", "exact_match": "POST"}]},
             "requires": {"provider_name": "other"}},
            {"match": {"prefix": "/hdr", "headers": [{"name": "x-admin", "string_match": {"exact": "true"}}]},
             "requires": {"provider_name": "main"}},
            {"match": {"prefix": "/hdr", "headers": [{"name": "x-role", "prefix_match": "gu", "invert_match": true}]},
             "requires": {"provider_name": "main"}},
            {"match": {"prefix": "/hdr", "headers": [{"name": "x-tier", "safe_regex_match": {"regex": "gold|x,gold"}}]},
             "requires": {"provider_name": "main"}},
            {"match": {"prefix": "/hdr", "headers": [{"name": "x-level", "safe_regex_match": {"regex": "\\d+"}}]},
             "requires": {"provider_name": "main"}},
            {"match": {"prefix": "/hdr"}},
            {"match": {"prefix": "/"}, "requires": {"provider_name": "main"}}
        ]
    })
}

/// A JWKS Envoy loads although not every entry is usable: the key's `x`/`y` with `=` padding, an
/// `oct` key with a numeric `kid`, a string entry and an RSA key without `e` (the last three
/// are skipped by both filters).
fn odd_but_valid_jwks(key: &SigningKey) -> String {
    let mut padded = key.jwk().clone();
    for member in ["x", "y"] {
        padded[member] = json!(format!("{}=", padded[member].as_str().unwrap()));
    }
    json!({"keys": [
        "junk",
        {"kty": "oct", "kid": 7, "k": "AAAA"},
        {"kty": "RSA", "n": "AQAB"},
        padded
    ]})
    .to_string()
}

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": ["api", "web"], "sub": "alice", "exp": now() + 600, "iat": now()})
}

fn with(patch: Value) -> Value {
    let mut c = claims();
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// A request: method, path, headers, and the status both filters must give.
struct Case {
    name: String,
    method: &'static str,
    path: String,
    headers: Vec<(String, String)>,
    expect: u16,
}

/// Headers a client sends to pass for a verified identity: `main`'s `claim_to_headers` and
/// `forward_payload_header`. Every case carries them; neither filter may let them through.
const FORGED: [(&str, &str); 2] = [
    ("x-sub", "admin"),
    ("x-jwt-payload", "eyJzdWIiOiJhZG1pbiJ9"),
];

fn case(name: &str, path: &str, headers: &[(&str, String)], expect: u16) -> Case {
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    all.extend(FORGED.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Case {
        name: name.into(),
        method: "GET",
        path: path.into(),
        headers: all,
        expect,
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn battery() -> Vec<Case> {
    let good = key("rs256").sign(&claims());
    let mut cases = Vec::new();
    for k in &keys().all {
        cases.push(case(
            &format!("valid {:?}", k.alg),
            "/api",
            &[("authorization", bearer(&k.sign(&claims())))],
            200,
        ));
    }
    let mut tampered = good.clone();
    let len = tampered.len();
    tampered.replace_range(len - 8.., "AAAAAAAA");
    let mut swapped_payload = good.split('.').map(str::to_string).collect::<Vec<_>>();
    swapped_payload[1] = key("rs256")
        .sign(&with(json!({"sub": "mallory"})))
        .split('.')
        .nth(1)
        .unwrap()
        .to_string();
    // Key confusion: HS256 with the RSA public modulus as the shared secret, naming the RSA kid.
    let confusion = {
        let secret = key("rs256").jwk()["n"]
            .as_str()
            .unwrap()
            .as_bytes()
            .to_vec();
        let k = SigningKey::hmac("rs256", Algorithm::HS256, &secret);
        k.sign(&claims())
    };
    let unknown_kid = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("nobody".into());
        keys().outsider.sign_with(h, &claims())
    };
    let no_kid = {
        let h = Header::new(Algorithm::ES256);
        key("es256").sign_with(h, &claims())
    };
    let jwk_mismatch = {
        // Token says RS256 but the kid's JWK pins PS256.
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("ps256".into());
        key("rs256").sign_with(h, &claims())
    };
    let other = keys()
        .other
        .sign(&json!({"iss": "https://other.test", "exp": now() + 600}));
    let custom = key("es256").sign(&with(json!({"iss": CUSTOM_ISSUER})));
    cases.extend([
        case("missing token", "/api", &[], 401),
        case(
            "expired",
            "/api",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"exp": now() - 120})))),
            )],
            401,
        ),
        case(
            "expired within skew",
            "/api",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"exp": now() - 20})))),
            )],
            200,
        ),
        case(
            "not yet valid",
            "/api",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"nbf": now() + 300})))),
            )],
            401,
        ),
        case(
            "wrong issuer",
            "/api",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"iss": "https://evil.test"})))),
            )],
            401,
        ),
        case(
            "no issuer",
            "/api",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"iss": null})))),
            )],
            401,
        ),
        case(
            "wrong audience",
            "/api",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"aud": "nope"})))),
            )],
            403,
        ),
        case(
            "no audience",
            "/api",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"aud": null})))),
            )],
            403,
        ),
        case(
            "string audience",
            "/api",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"aud": "api"})))),
            )],
            200,
        ),
        case(
            "tampered signature",
            "/api",
            &[("authorization", bearer(&tampered))],
            401,
        ),
        case(
            "swapped payload",
            "/api",
            &[("authorization", bearer(&swapped_payload.join(".")))],
            401,
        ),
        case(
            "alg none",
            "/api",
            &[(
                "authorization",
                bearer(&mint::unsigned(&json!({"alg": "none"}), &claims())),
            )],
            401,
        ),
        case(
            "alg none with kid",
            "/api",
            &[(
                "authorization",
                bearer(&mint::unsigned(
                    &json!({"alg": "none", "kid": "rs256"}),
                    &claims(),
                )),
            )],
            401,
        ),
        case(
            "key confusion HS256/RSA",
            "/api",
            &[("authorization", bearer(&confusion))],
            401,
        ),
        case(
            "unknown kid",
            "/api",
            &[("authorization", bearer(&unknown_kid))],
            401,
        ),
        case(
            "no kid tries every key",
            "/api",
            &[("authorization", bearer(&no_kid))],
            200,
        ),
        case(
            "JWK alg disagrees",
            "/api",
            &[("authorization", bearer(&jwk_mismatch))],
            401,
        ),
        case(
            "garbage",
            "/api",
            &[("authorization", "Bearer not.a.jwt".into())],
            401,
        ),
        case(
            "two dots only",
            "/api",
            &[("authorization", "Bearer ..".into())],
            401,
        ),
        case(
            "basic auth only",
            "/api",
            &[("authorization", "Basic YWxpY2U6cHc=".into())],
            401,
        ),
        case(
            "query access_token",
            &format!("/api?access_token={good}"),
            &[],
            200,
        ),
        case("bypass prefix", "/public/page", &[], 200),
        case("bypass exact path", "/regex-bypass", &[], 200),
        case(
            "any: main",
            "/any",
            &[("authorization", bearer(&good))],
            200,
        ),
        case(
            "any: other",
            "/any",
            &[("x-other-token", other.clone())],
            200,
        ),
        case("any: none", "/any", &[], 401),
        case(
            "any: bad main",
            "/any",
            &[("authorization", bearer(&tampered))],
            401,
        ),
        case(
            "all: main only",
            "/all",
            &[("authorization", bearer(&good))],
            401,
        ),
        case(
            "all: both",
            "/all",
            &[
                ("authorization", bearer(&good)),
                ("x-other-token", other.clone()),
            ],
            200,
        ),
        case("allow_missing: none", "/optional", &[], 200),
        case(
            "allow_missing: good",
            "/optional",
            &[("authorization", bearer(&good))],
            200,
        ),
        case(
            "allow_missing: bad",
            "/optional",
            &[("authorization", bearer(&tampered))],
            401,
        ),
        case(
            "allow_missing_or_failed: bad",
            "/lenient",
            &[("authorization", bearer(&tampered))],
            200,
        ),
        case(
            "provider_and_audiences: web",
            "/web",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"aud": "web"})))),
            )],
            200,
        ),
        case(
            "provider_and_audiences: api only",
            "/web",
            &[(
                "authorization",
                bearer(&key("es256").sign(&with(json!({"aud": "api"})))),
            )],
            403,
        ),
        case(
            "custom header with prefix",
            "/custom",
            &[("x-jwt", format!("Token {}", custom))],
            200,
        ),
        case(
            "custom header wrong prefix",
            "/custom",
            &[("x-jwt", bearer(&custom))],
            401,
        ),
        case("custom param", &format!("/custom?jwt={}", custom), &[], 200),
        case(
            "custom cookie",
            "/custom",
            &[("cookie", format!("a=b; session={}", custom))],
            200,
        ),
        case(
            "default location not used by custom",
            "/custom",
            &[("authorization", bearer(&custom))],
            401,
        ),
        case(
            "regex rule GET falls through to main",
            "/v1/x",
            &[("x-other-token", other.clone())],
            401,
        ),
    ]);
    cases.extend(extraction_and_output_cases());
    cases.extend(header_matcher_cases());
    cases.extend(claim_and_payload_cases());
    cases.extend(sequential_cases());
    let mut post = case(
        "regex rule with POST",
        "/v1/x",
        &[("x-other-token", other)],
        200,
    );
    post.method = "POST";
    cases.push(post);
    cases
}

/// Tokens in every place and form a client can put them, and what the upstream then receives.
fn extraction_and_output_cases() -> Vec<Case> {
    let good = key("es256").sign(&claims());
    let bob = key("rs256").sign(&with(json!({"sub": "bob"})));
    let mut tampered = good.clone();
    let len = tampered.len();
    tampered.replace_range(len - 8.., "AAAAAAAA");
    let custom = key("es256").sign(&with(json!({"iss": CUSTOM_ISSUER})));
    let encoded_dots = good.replace('.', "%2E");
    // A token claiming to be an admin, with the custom provider's kid but signed by another key.
    let forged_custom = keys()
        .outsider
        .sign(&with(json!({"iss": CUSTOM_ISSUER, "sub": "admin"})));
    vec![
        case("open route: forged identity removed", "/public/x", &[], 200),
        case(
            "open route: token kept, identity not set",
            "/public/x",
            &[("authorization", bearer(&good))],
            200,
        ),
        case(
            "encoded path is not the open route",
            "/%70ublic/x",
            &[],
            401,
        ),
        case("double slash is not the open route", "//public/x", &[], 401),
        case("allow_missing: none, forged removed", "/optional", &[], 200),
        case("allow_missing_or_failed: none", "/lenient", &[], 200),
        case(
            "allow_missing_or_failed: bad token kept, forged removed",
            "/lenient",
            &[("authorization", bearer(&tampered))],
            200,
        ),
        case(
            "allow_missing_or_failed: good",
            "/lenient",
            &[("authorization", bearer(&good))],
            200,
        ),
        case(
            "lowercase bearer is not the prefix",
            "/api",
            &[("authorization", format!("bearer {good}"))],
            401,
        ),
        case(
            "uppercase BEARER is not the prefix",
            "/api",
            &[("authorization", format!("BEARER {good}"))],
            401,
        ),
        case(
            "prefix in the middle of the value",
            "/api",
            &[(
                "authorization",
                format!("Basic YWxpY2U6cHc=, Bearer {good}"),
            )],
            200,
        ),
        case(
            "spaces after the prefix",
            "/api",
            &[("authorization", format!("Bearer   {good}"))],
            200,
        ),
        case(
            "junk after the token",
            "/api",
            &[("authorization", format!("Bearer {good}, x"))],
            401,
        ),
        case(
            "two Authorization headers with tokens",
            "/api",
            &[
                ("authorization", bearer(&good)),
                ("authorization", bearer(&bob)),
            ],
            401,
        ),
        case(
            "Basic then Bearer headers",
            "/api",
            &[
                ("authorization", "Basic YWxpY2U6cHc=".into()),
                ("authorization", bearer(&good)),
            ],
            200,
        ),
        case(
            "percent-encoded query value",
            &format!("/api?access_token={encoded_dots}"),
            &[],
            200,
        ),
        case(
            "percent-encoded query key",
            &format!("/api?a=1&access%5Ftoken={good}&b=2"),
            &[],
            200,
        ),
        case(
            "percent-encoded bad token in the query",
            &format!("/api?access%5Ftoken={tampered}"),
            &[],
            401,
        ),
        case(
            "repeated query parameter: first is bad",
            &format!("/api?access_token={tampered}&access_token={good}"),
            &[],
            401,
        ),
        case(
            "repeated query parameter: first is good",
            &format!("/api?access_token={good}&access_token={tampered}"),
            &[],
            200,
        ),
        case(
            "tokens in the query and the header",
            &format!("/api?access_token={good}"),
            &[("authorization", bearer(&bob))],
            200,
        ),
        case(
            "bad header token beside a good query token",
            &format!("/api?access_token={good}"),
            &[("authorization", bearer(&tampered))],
            401,
        ),
        case("query name without a value", "/api?access_token", &[], 401),
        case(
            "custom prefix in the middle of the value",
            "/custom",
            &[("x-jwt", format!("scheme=x Token {custom}"))],
            200,
        ),
        case(
            "custom prefix in lowercase",
            "/custom",
            &[("x-jwt", format!("token {custom}"))],
            401,
        ),
        case(
            "custom cookie in quotes",
            "/custom",
            &[("cookie", format!("session=\"{custom}\"; a=b"))],
            200,
        ),
        case(
            "two cookie headers: the first (forged) one counts",
            "/custom",
            &[
                ("cookie", format!("session={forged_custom}")),
                ("cookie", format!("session={custom}")),
            ],
            401,
        ),
        case(
            "two cookie headers: the first (good) one counts",
            "/custom",
            &[
                ("cookie", format!("session={custom}")),
                ("cookie", format!("session={forged_custom}")),
            ],
            200,
        ),
        case(
            "one cookie name twice in a header: the first counts",
            "/custom",
            &[(
                "cookie",
                format!("session={forged_custom}; session={custom}"),
            )],
            401,
        ),
    ]
}

/// Claims as header text, and payloads whose JSON Envoy reads strictly: duplicate members, time
/// claims beyond 64 bits or at 0.
fn claim_and_payload_cases() -> Vec<Case> {
    let es256 = key("es256");
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": "es256"}).to_string();
    // The default claims as JSON text, with `extra` members appended.
    let claims_with = |drop: &str, extra: &str| {
        let text = with(json!({ drop: null })).to_string();
        format!("{},{extra}}}", &text[..text.len() - 1])
    };
    let signed = |claims: String| bearer(&es256.sign_text(&header, &claims));
    vec![
        case(
            "array, object and number claims as header text",
            "/api",
            &[(
                "authorization",
                bearer(&es256.sign(&with(json!({"groups": ["dev", "ops"], "score": 1.5})))),
            )],
            200,
        ),
        case(
            "object claim and negative number",
            "/api",
            &[(
                "authorization",
                bearer(&es256.sign(&with(
                    json!({"groups": {"k": ["<v>", 2.5, 1e20]}, "score": -3}),
                ))),
            )],
            200,
        ),
        case(
            "duplicate sub in a signed payload",
            "/api",
            &[(
                "authorization",
                signed(claims_with("none", r#""sub":"admin""#)),
            )],
            401,
        ),
        case(
            "duplicate member nested in a signed payload",
            "/api",
            &[(
                "authorization",
                signed(claims_with("none", r#""org":{"a":1,"a":2}"#)),
            )],
            401,
        ),
        case(
            "duplicate kid in a signed header",
            "/api",
            &[(
                "authorization",
                bearer(&es256.sign_text(
                    r#"{"alg":"ES256","kid":"es256","kid":"es256"}"#,
                    &claims().to_string(),
                )),
            )],
            401,
        ),
        case(
            "exp 1e20",
            "/api",
            &[("authorization", signed(claims_with("exp", r#""exp":1e20"#)))],
            401,
        ),
        case(
            "exp beyond 64 bits",
            "/api",
            &[(
                "authorization",
                signed(claims_with("exp", r#""exp":99999999999999999999999"#)),
            )],
            401,
        ),
        case(
            "negative nbf",
            "/api",
            &[("authorization", signed(claims_with("none", r#""nbf":-1"#)))],
            401,
        ),
        case(
            "exp 0 is no expiry",
            "/api",
            &[("authorization", signed(claims_with("exp", r#""exp":0"#)))],
            200,
        ),
    ]
}

/// Requirement groups whose checks change the headers for the next one, as in Envoy.
fn sequential_cases() -> Vec<Case> {
    let good = key("es256").sign(&claims());
    let other = keys()
        .other
        .sign(&with(json!({"iss": "https://other.test"})));
    vec![
        case(
            "requires_any: main verifies one token, fails on another, other passes",
            &format!("/any?access_token={good}"),
            &[
                ("authorization", bearer(&other)),
                ("x-other-token", other.clone()),
            ],
            200,
        ),
        case(
            "requires_all then allow_missing_or_failed: no identity headers left",
            "/all-lenient",
            &[("authorization", bearer(&good))],
            200,
        ),
    ]
}

/// Route header matchers on repeated and missing headers, as Envoy 1.40 matches them: any
/// value of a repeated header may match, values are not split on commas, and a missing header
/// matches no value matcher, inverted or not.
fn header_matcher_cases() -> Vec<Case> {
    vec![
        case("header rules: nothing matches", "/hdr", &[], 200),
        case(
            "header rules: second x-admin value matches",
            "/hdr",
            &[
                ("x-admin", "false".into()),
                ("x-admin", "true".into()),
                ("x-role", "guest".into()),
            ],
            401,
        ),
        case(
            "header rules: x-admin values are not split on commas",
            "/hdr",
            &[("x-admin", "false,true".into()), ("x-role", "guest".into())],
            200,
        ),
        case(
            "header rules: inverted, some x-role value matches",
            "/hdr",
            &[("x-role", "admin".into()), ("x-role", "guest".into())],
            200,
        ),
        case(
            "header rules: inverted, no x-role value matches",
            "/hdr",
            &[("x-role", "admin".into())],
            401,
        ),
        case(
            "header rules: regex on each value, not the joined ones",
            "/hdr",
            &[
                ("x-tier", "x".into()),
                ("x-tier", "gold".into()),
                ("x-role", "guest".into()),
            ],
            401,
        ),
        case(
            "header rules: \\d matches ASCII digits",
            "/hdr",
            &[("x-level", "12".into())],
            401,
        ),
        case(
            "header rules: \\d does not match other digits (RE2 is ASCII)",
            "/hdr",
            &[("x-level", "\u{661}\u{662}".into())],
            200,
        ),
        case(
            "header rules: regex does not see joined values",
            "/hdr",
            &[
                ("x-tier", "x".into()),
                ("x-tier", "silver".into()),
                ("x-role", "guest".into()),
            ],
            200,
        ),
    ]
}

/// Percent-decodes a query component (test side; `%XY` only, as Envoy).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the upstream received that authentication decides: the identity and token headers and
/// the path, its query as decoded and sorted pairs (Envoy rebuilds the query that way when it
/// removes a token parameter; jwt-auth keeps the other parameters as sent).
fn upstream_view(response: reqwest::blocking::Response) -> Value {
    let status = response.status().as_u16();
    if status != 200 {
        return json!({"status": status});
    }
    let seen: Value = response.json().unwrap();
    let path = seen["path"].as_str().unwrap_or_default();
    let (base, query) = path.split_once('?').unwrap_or((path, ""));
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    pairs.sort();
    let headers = &seen["headers"];
    let pick = |name: &str| headers.get(name).cloned().unwrap_or(Value::Null);
    json!({
        "status": 200,
        "path": base,
        "query": pairs,
        "x-sub": pick("x-sub"),
        "x-jwt-payload": pick("x-jwt-payload"),
        "x-groups": pick("x-groups"),
        "x-score": pick("x-score"),
        "authorization": pick("authorization"),
        "x-other-token": pick("x-other-token"),
        "x-jwt": pick("x-jwt"),
        "cookie": pick("cookie"),
    })
}

fn send(client: &reqwest::blocking::Client, base: &str, c: &Case) -> reqwest::blocking::Response {
    let method = reqwest::Method::from_bytes(c.method.as_bytes()).unwrap();
    let mut request = client.request(method, format!("{base}{}", c.path));
    for (k, v) in &c.headers {
        request = request.header(k, v);
    }
    request.send().unwrap()
}

#[test]
fn same_decisions_as_envoy_jwt_authn() {
    let upstream = Echo::start();
    let envoy = side_by_side(&config(), &upstream, 1).start();
    let client = http_client();
    let mut mismatches = Vec::new();
    let cases = battery();
    for c in &cases {
        let native = upstream_view(send(&client, &envoy.url("native"), c));
        let wasm = upstream_view(send(&client, &envoy.url("wasm"), c));
        if native != wasm || wasm["status"] != c.expect {
            mismatches.push(format!(
                "{}: expected {}\n  native {native}\n  wasm   {wasm}",
                c.name, c.expect
            ));
        }
        if wasm["x-sub"] == "admin" || wasm["x-jwt-payload"] == FORGED[1].1 {
            mismatches.push(format!(
                "{}: a forged identity reached the upstream",
                c.name
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ in what the upstream receives:\n{}\n--- envoy log ---\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n"),
        envoy.log_tail(30)
    );
    // Counters are real: every allowed and denied request shows up.
    // Counters are real: every allowed and denied request shows up (flushed on the filter's tick).
    let expected_allowed = cases.iter().filter(|c| c.expect == 200).count() as i64;
    let counted = || {
        let stats = envoy.stats();
        let allowed = stats
            .get("wasmcustom.jwt_auth.allowed")
            .copied()
            .unwrap_or(0);
        let denied: i64 = stats
            .iter()
            .filter(|(k, _)| k.starts_with("wasmcustom.jwt_auth.denied."))
            .map(|(_, v)| v)
            .sum();
        (allowed, denied)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted() != (expected_allowed, cases.len() as i64 - expected_allowed) {
        assert!(Instant::now() < deadline, "counters {:?}", counted());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(envoy.stat("wasmcustom.jwt_auth.denied.signature") >= 2);
}

#[test]
fn forwards_claims_and_payload_and_strips_the_token() {
    let upstream = Echo::start();
    let envoy = side_by_side(&config(), &upstream, 1).start();
    let token = key("es256").sign(&with(json!({"groups": ["dev", "ops"]})));
    let response = http_client()
        .get(format!("{}/api", envoy.url("wasm")))
        .header("authorization", bearer(&token))
        .header("x-sub", "forged")
        .header("x-jwt-payload", "forged")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: Value = response.json().unwrap();
    let headers = &seen["headers"];
    assert_eq!(
        headers["x-sub"], "alice",
        "claim_to_headers replaces a client-sent value"
    );
    assert_eq!(headers["x-jwt-payload"], token.split('.').nth(1).unwrap());
    assert!(
        headers.get("authorization").is_none(),
        "token forwarded although forward is false"
    );
    let published: Value =
        serde_json::from_str(headers["x-published-payload"].as_str().unwrap()).unwrap();
    assert_eq!(published["sub"], "alice");
    assert_eq!(published["groups"], json!(["dev", "ops"]));
    // An array claim goes to its header as Envoy 1.40 sends it: base64 of its JSON.
    assert_eq!(headers["x-groups"], "WyJkZXYiLCJvcHMiXQ==");

    // A client that repeats the verified values, value for value, still gets them through, as
    // from native jwt_authn: an identity header must not vanish (a limit keyed by it would not
    // apply).
    let payload = token.split('.').nth(1).unwrap();
    for listener in ["native", "wasm"] {
        let response = http_client()
            .get(format!("{}/api", envoy.url(listener)))
            .header("authorization", bearer(&token))
            .header("x-sub", "alice")
            .header("x-jwt-payload", payload)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{listener}");
        let seen: Value = response.json().unwrap();
        assert_eq!(seen["headers"]["x-sub"], "alice", "{listener}: {seen}");
        assert_eq!(
            seen["headers"]["x-jwt-payload"], payload,
            "{listener}: {seen}"
        );
    }
}

#[test]
fn refuses_tokens_that_carry_their_own_key() {
    let upstream = Echo::start();
    let envoy = side_by_side(&config(), &upstream, 1).start();
    let k = key("rs256");
    for extra in ["jku", "x5u", "jwk"] {
        let mut header = json!({"alg": "RS256", "kid": "rs256"});
        header[extra] = if extra == "jwk" {
            k.jwk().clone()
        } else {
            json!("https://attacker.test/keys")
        };
        let token = k.sign_raw(&header, &claims());
        let response = http_client()
            .get(format!("{}/api", envoy.url("wasm")))
            .header("authorization", bearer(&token))
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{extra}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }
}

#[test]
fn challenge_and_body_say_what_failed() {
    let upstream = Echo::start();
    let envoy = side_by_side(&config(), &upstream, 1).start();
    let client = http_client();
    let missing = client
        .get(format!("{}/api?x=1", envoy.url("wasm")))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 401);
    let port = envoy.port("wasm");
    assert_eq!(
        missing.headers()["www-authenticate"],
        format!("Bearer realm=\"http://127.0.0.1:{port}/api\"").as_str()
    );
    assert_eq!(missing.text().unwrap(), "Jwt is missing");
    let expired = key("es256").sign(&with(json!({"exp": now() - 3600})));
    let response = client
        .get(format!("{}/api", envoy.url("wasm")))
        .header("authorization", bearer(&expired))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(
        response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error_description=\"Jwt is expired\"")
    );
    assert_eq!(response.text().unwrap(), "Jwt is expired");
}

fn remote_config(jwks: &JwksServer, extra: Value) -> Value {
    let mut remote = json!({
        "http_uri": {"uri": jwks.url(), "cluster": "jwks", "timeout": "1s"},
        "cache_duration": "300s"
    });
    for (k, v) in extra.as_object().unwrap() {
        remote[k] = v.clone();
    }
    json!({
        "providers": {"remote": {"issuer": ISSUER, "remote_jwks": remote}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "remote"}}]
    })
}

/// JWKS fetches made by the Wasm filter (the native filter's carry a marker).
fn wasm_fetches(jwks: &JwksServer) -> u64 {
    jwks.requests() - jwks.requests_matching(NATIVE_MARKER) as u64
}

fn get_with(envoy_url: &str, token: &str) -> u16 {
    http_client()
        .get(format!("{envoy_url}/api"))
        .header("authorization", bearer(token))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn remote_jwks_first_use_rotation_and_unknown_kid_refetch() {
    let first = SigningKey::es256("first");
    let jwks = JwksServer::start(&mint::jwks(&[&first]));
    let upstream = Echo::start();
    let envoy = side_by_side(&remote_config(&jwks, json!({})), &upstream, jwks.port()).start();
    let url = envoy.url("wasm");
    // The first request waits for the fetch it triggers, then passes.
    assert_eq!(
        get_with(&url, &first.sign(&claims())),
        200,
        "{}",
        envoy.log_tail(20)
    );
    assert_eq!(wasm_fetches(&jwks), 1);
    // Envoy's native filter on the same JWKS agrees.
    assert_eq!(get_with(&envoy.url("native"), &first.sign(&claims())), 200);

    // The issuer rotates a new key in: a token with its kid triggers one refetch and passes.
    let second = SigningKey::es256("second");
    jwks.set_jwks(&mint::jwks(&[&first, &second]));
    assert_eq!(get_with(&url, &second.sign(&claims())), 200);
    assert_eq!(wasm_fetches(&jwks), 2);
    // A made-up kid right after does not cause another fetch (rate-limited) and is refused.
    let stranger = SigningKey::es256("stranger");
    assert_eq!(get_with(&url, &stranger.sign(&claims())), 401);
    assert_eq!(wasm_fetches(&jwks), 2);
    envoy.wait_for_stat("wasmcustom.jwt_auth.jwks_fetch_success", |v| v >= 2);
}

#[test]
fn remote_jwks_down_refuses_then_recovers_and_expired_keys_are_not_used() {
    let key = SigningKey::es256("k");
    let jwks = JwksServer::start(&mint::jwks(&[&key]));
    jwks.fail_with(503);
    let upstream = Echo::start();
    let config = remote_config(&jwks, json!({"cache_duration": "1s"}));
    let envoy = side_by_side(&config, &upstream, jwks.port()).start();
    let url = envoy.url("wasm");
    let token = key.sign(&claims());
    let response = http_client()
        .get(format!("{url}/api"))
        .header("authorization", bearer(&token))
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.text().unwrap(), "Jwks remote fetch is failed");
    envoy.wait_for_stat("wasmcustom.jwt_auth.jwks_fetch_failed", |v| v >= 1);

    // The endpoint comes back: after the retry back-off the next request fetches and passes.
    jwks.set_jwks(&mint::jwks(&[&key]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_with(&url, &token) != 200 {
        assert!(
            Instant::now() < deadline,
            "never recovered:\n{}",
            envoy.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // It goes down again: keys older than cache_duration (1 s) are expired, so once the refetch
    // fails both filters refuse, as Envoy does without async_fetch.
    jwks.fail_with(500);
    std::thread::sleep(Duration::from_millis(2500));
    for side in ["native", "wasm"] {
        let response = http_client()
            .get(format!("{}/api", envoy.url(side)))
            .header("authorization", bearer(&token))
            .send()
            .unwrap();
        assert_eq!(response.status(), 401, "{side}");
        assert_eq!(response.text().unwrap(), "Jwks remote fetch is failed");
    }
}

#[test]
fn with_async_fetch_a_failing_refresh_keeps_the_last_good_keys_in_both() {
    let key = SigningKey::es256("k");
    let jwks = JwksServer::start(&mint::jwks(&[&key]));
    let upstream = Echo::start();
    let config = remote_config(&jwks, json!({"cache_duration": "1s", "async_fetch": {}}));
    let envoy = side_by_side(&config, &upstream, jwks.port()).start();
    let token = key.sign(&claims());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_with(&envoy.url("wasm"), &token) != 200 {
        assert!(Instant::now() < deadline, "{}", envoy.log_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    jwks.fail_with(500);
    std::thread::sleep(Duration::from_millis(2500));
    for side in ["native", "wasm"] {
        assert_eq!(get_with(&envoy.url(side), &token), 200, "{side}");
    }
}

#[test]
fn a_rotated_jwks_with_entries_envoy_skips_retires_the_removed_key_in_both() {
    let old = SigningKey::es256("old");
    let new = SigningKey::es256("new");
    let jwks = JwksServer::start(&mint::jwks(&[&old]));
    let upstream = Echo::start();
    let config = remote_config(&jwks, json!({"cache_duration": "1s"}));
    let envoy = side_by_side(&config, &upstream, jwks.port())
        .concurrency(2)
        .start();
    let (old_token, new_token) = (old.sign(&claims()), new.sign(&claims()));
    for side in ["native", "wasm"] {
        assert_eq!(get_with(&envoy.url(side), &old_token), 200, "{side}");
    }
    // The issuer removes the old key; the new set carries entries Envoy skips or reads leniently.
    jwks.set_jwks(&odd_but_valid_jwks(&new));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: Vec<(u16, u16)> = ["native", "wasm"]
            .iter()
            .map(|side| {
                (
                    get_with(&envoy.url(side), &old_token),
                    get_with(&envoy.url(side), &new_token),
                )
            })
            .collect();
        if seen == [(401, 200), (401, 200)] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "(old, new) token status, native then wasm: {seen:?}\n{}",
            envoy.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn one_fetch_serves_all_workers() {
    let key = SigningKey::es256("k");
    let jwks = JwksServer::start(&mint::jwks(&[&key]));
    let upstream = Echo::start();
    let config = remote_config(&jwks, json!({"async_fetch": {}}));
    let envoy = side_by_side(&config, &upstream, jwks.port())
        .concurrency(4)
        .start();
    // async_fetch: the keys arrive before any request; wait for them to be shared.
    let deadline = Instant::now() + Duration::from_secs(10);
    while envoy.stat("wasmcustom.jwt_auth.jwks_fetch_success") < 1 {
        assert!(
            Instant::now() < deadline,
            "no async fetch:\n{}",
            envoy.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1200)); // every worker's tick has run
    let token = key.sign(&claims());
    // Many connections, so requests land on every worker.
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let url = envoy.url("wasm");
            let token = token.clone();
            std::thread::spawn(move || {
                let client = http_client();
                (0..5)
                    .map(|_| {
                        client
                            .get(format!("{url}/api"))
                            .header("authorization", bearer(&token))
                            .header("connection", "close")
                            .send()
                            .unwrap()
                            .status()
                            .as_u16()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let fetches = wasm_fetches(&jwks);
    let log = envoy.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("jwt-auth") || l.contains("access wasm"))
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200) && fetches == 1,
        "{fetches} fetches; {statuses:?}\n{}",
        lines.join("\n")
    );
}

#[test]
fn envoy_refuses_bad_config_and_says_which_field() {
    let upstream = Echo::start();
    let cases = [
        (
            json!({"providers": {"p": {"local_jwks": {"filename": "/etc/jwks.json"}}}}),
            "providers.p.local_jwks.filename",
        ),
        (
            json!({"providers": {"p": {"issuer": "x", "local_jwks": {"inline_string": "{\"keys\": 5}"}}}}),
            "providers.p.local_jwks",
        ),
        (
            json!({"providers": {}, "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "ghost"}}]}),
            "rules[0].requires.provider_name",
        ),
        (
            json!({"providers": {}, "unknown_top_level": true}),
            "unknown_top_level",
        ),
    ];
    for (config, field) in cases {
        // Only the Wasm listener gets the bad config; the native one must not be the one refusing.
        let mut builder = side_by_side(&json!({}), &upstream, 1);
        builder = builder.var("wasm_config", Value::String(config.to_string()).to_string());
        let err = builder
            .try_start()
            .err()
            .unwrap_or_else(|| panic!("Envoy accepted {config}"));
        assert!(err.contains(field), "log does not name {field}:\n{err}");
    }
}

#[test]
fn a_provider_without_usable_keys_loads_in_both_and_its_tokens_are_refused_alike() {
    // An encryption key (RSA-OAEP, `use: enc`): Envoy's jwt_authn loads the key set and finds no
    // key for an RS256 token; jwt-auth skips the key, loads the provider with a warning and
    // refuses its tokens the same way.
    let encryption = SigningKey::rsa("enc", Algorithm::RS256);
    let mut oaep = encryption.jwk().clone();
    oaep["use"] = json!("enc");
    oaep["alg"] = json!("RSA-OAEP");
    // The same key marked `use: enc` but with a signing `alg`: Envoy verifies signatures with
    // it; jwt-auth does not use an encryption key to verify signatures (a deliberate, stricter
    // difference).
    let mut enc_rs256 = encryption.jwk().clone();
    enc_rs256["use"] = json!("enc");
    let mut config = config();
    for (name, header, jwk) in [
        ("encrypting", "x-enc-token", &oaep),
        ("enc_use_only", "x-enc-use-token", &enc_rs256),
    ] {
        config["providers"][name] = json!({
            "issuer": "https://enc.test",
            "from_headers": [{"name": header}],
            "local_jwks": {"inline_string": json!({"keys": [jwk]}).to_string()}
        });
    }
    config["rules"] = json!([
        {"match": {"prefix": "/enc-use"}, "requires": {"provider_name": "enc_use_only"}},
        {"match": {"prefix": "/enc"}, "requires": {"provider_name": "encrypting"}},
        {"match": {"prefix": "/"}, "requires": {"provider_name": "main"}}
    ]);
    let upstream = Echo::start();
    let envoy = side_by_side(&config, &upstream, 1)
        .try_start()
        .unwrap_or_else(|log| {
            panic!("Envoy refused a configuration native jwt_authn loads:\n{log}")
        });
    let token = encryption.sign(&json!({"iss": "https://enc.test", "exp": now() + 600}));
    let client = http_client();
    let answer = |listener: &str, path: &str, header: &str| {
        let response = client
            .get(format!("{}{path}", envoy.url(listener)))
            .header(header, &token)
            .send()
            .unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let native = answer("native", "/enc", "x-enc-token");
    let wasm = answer("wasm", "/enc", "x-enc-token");
    assert_eq!(native.0, 401, "{native:?}");
    assert_eq!(native, wasm);
    assert_eq!(answer("native", "/enc-use", "x-enc-use-token").0, 200);
    assert_eq!(answer("wasm", "/enc-use", "x-enc-use-token").0, 401);
    // The other providers work as before.
    let good = key("es256").sign(&claims());
    let response = client
        .get(format!("{}/api", envoy.url("wasm")))
        .header("authorization", bearer(&good))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        envoy
            .log()
            .contains("provider \"encrypting\": local_jwks has no usable signing key"),
        "no warning naming the provider:\n{}",
        envoy.log_tail(30)
    );
}

/// Two listeners whose jwt-auth plugins share one VM (same `vm_id`, so the same shared data): the
/// victim's provider fetches from the `jwks` cluster, the other configuration names the same JWKS
/// URI but fetches it through an `evil` cluster that serves the attacker's keys.
const SHARED_VM_TEMPLATE: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {{admin_port}} } }
static_resources:
  listeners:
  - name: victim
    address: { socket_address: { address: 127.0.0.1, port_value: {{port:victim}} } }
    filter_chains: [{ filters: [{{hcm_victim}}] }]
  - name: other
    address: { socket_address: { address: 127.0.0.1, port_value: {{port:other}} } }
    filter_chains: [{ filters: [{{hcm_other}}] }]
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: upstream, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{upstream_port}} } } } }] }] }
  - name: jwks
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: jwks, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{jwks_port}} } } } }] }] }
  - name: evil
    type: STATIC
    connect_timeout: 1s
    load_assignment: { cluster_name: evil, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{evil_port}} } } } }] }] }
"#;

fn hcm_with_jwt_auth(name: &str, config: &Value) -> String {
    let wasm = meshgate_integration::paths::dist_dir().join("jwt-auth.wasm");
    let wasm = wasm.display().to_string();
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": name,
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]}]},
            "http_filters": [
                {"name": "meshgate.jwt_auth", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                    "config": {
                        "name": format!("jwt_auth_{name}"),
                        "vm_config": {"vm_id": "jwt_auth", "runtime": "envoy.wasm.runtime.v8",
                                      "code": {"local": {"filename": wasm}}},
                        "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                          "value": config.to_string()}
                    }}},
                {"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
            ]
        }
    })
    .to_string()
}

#[test]
fn another_configuration_in_the_vm_cannot_feed_its_keys_through_shared_data() {
    let honest = SigningKey::es256("honest");
    let attacker = SigningKey::es256("attacker");
    let jwks = JwksServer::start(&mint::jwks(&[&honest]));
    let evil = JwksServer::start(&mint::jwks(&[&attacker]));
    let upstream = Echo::start();
    let victim = remote_config(&jwks, json!({"async_fetch": {}}));
    let mut other = remote_config(&jwks, json!({}));
    other["providers"]["remote"]["remote_jwks"]["http_uri"]["cluster"] = json!("evil");
    let envoy = meshgate_integration::Envoy::builder(SHARED_VM_TEMPLATE)
        .var("hcm_victim", hcm_with_jwt_auth("victim", &victim))
        .var("hcm_other", hcm_with_jwt_auth("other", &other))
        .var("upstream_port", upstream.port())
        .var("jwks_port", jwks.port())
        .var("evil_port", evil.port())
        .start();
    let deadline = Instant::now() + Duration::from_secs(10);
    while jwks.requests() < 1 {
        assert!(
            Instant::now() < deadline,
            "no fetch:\n{}",
            envoy.log_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    // The other configuration fetches its keys (from the attacker's endpoint, under the same
    // URI) and accepts the attacker's token, as it is configured to.
    let forged = attacker.sign(&claims());
    assert_eq!(
        get_with(&envoy.url("other"), &forged),
        200,
        "{}",
        envoy.log_tail(30)
    );
    assert!(evil.requests() >= 1);
    // Every worker has ticked over shared data since.
    std::thread::sleep(Duration::from_millis(1500));
    // The attacker's token first: a token with a kid the victim does not know would make it
    // refetch its own keys, which would hide keys installed from the other configuration.
    assert_eq!(
        get_with(&envoy.url("victim"), &forged),
        401,
        "the victim verified a token with keys another configuration fetched:\n{}",
        envoy.log_tail(30)
    );
    assert_eq!(get_with(&envoy.url("victim"), &honest.sign(&claims())), 200);
}
