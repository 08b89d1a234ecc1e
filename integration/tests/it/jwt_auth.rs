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
                "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"}],
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
                "local_jwks": {"inline_string": mint::jwks(&[key("es256")])}
            }
        },
        "rules": [
            {"match": {"prefix": "/public"}},
            {"match": {"prefix": "/any"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "main"}, {"provider_name": "other"}]}}},
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
            {"match": {"prefix": "/"}, "requires": {"provider_name": "main"}}
        ]
    })
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

fn case(name: &str, path: &str, headers: &[(&str, String)], expect: u16) -> Case {
    Case {
        name: name.into(),
        method: "GET",
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
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
        let native = send(&client, &envoy.url("native"), c).status().as_u16();
        let wasm = send(&client, &envoy.url("wasm"), c).status().as_u16();
        if native != wasm || wasm != c.expect {
            mismatches.push(format!(
                "{}: native {native}, wasm {wasm}, expected {}",
                c.name, c.expect
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}\n--- envoy log ---\n{}",
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
fn remote_jwks_down_refuses_then_recovers_and_keeps_last_good_keys() {
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
    // It goes down again; refreshes (cache_duration 1s) fail, but the last good keys still serve.
    jwks.fail_with(500);
    let before = jwks.requests();
    let deadline = Instant::now() + Duration::from_secs(10);
    while jwks.requests() < before + 2 {
        assert!(Instant::now() < deadline, "no refresh attempted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get_with(&url, &token), 200);
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
