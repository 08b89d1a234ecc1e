//! The authenticator end to end on the host: real keys, real signatures, a fake clock.

use std::sync::{Arc, OnceLock};

use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

use super::*;
use crate::mint::{self, SigningKey};

const NOW: u64 = 1_700_000_000;
const NOW_MS: u64 = NOW * 1000;

struct Keys {
    rs256: SigningKey,
    ps256: SigningKey,
    es256: SigningKey,
    es384: SigningKey,
    ed: SigningKey,
    hs256: SigningKey,
    other_rsa: SigningKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rs256 = SigningKey::rsa("rsa", Algorithm::RS256);
        Keys {
            ps256: rs256.with_alg("pss", Algorithm::PS256),
            rs256,
            es256: SigningKey::es256("ec"),
            es384: SigningKey::es384("ec384"),
            ed: SigningKey::ed25519("ed"),
            hs256: SigningKey::hmac(
                "hmac",
                Algorithm::HS256,
                b"a shared secret of 32 bytes!!!!!",
            ),
            other_rsa: SigningKey::rsa("rsa", Algorithm::RS256),
        }
    })
}

fn config() -> Value {
    let k = keys();
    json!({
        "providers": {
            "main": {
                "issuer": "https://issuer.example",
                "audiences": ["api"],
                "local_jwks": {"inline_string": mint::jwks(&[&k.rs256, &k.ps256, &k.es256, &k.es384, &k.ed, &k.hs256])},
                "forward_payload_header": "x-jwt-payload",
                "claim_to_headers": [{"header_name": "x-sub", "claim_name": "sub"},
                                     {"header_name": "x-groups", "claim_name": "groups"}],
                "payload_in_metadata": "main"
            },
            "other": {
                "issuer": "https://other.example",
                "from_headers": [{"name": "x-other-token"}],
                "forward": true,
                "local_jwks": {"inline_string": mint::jwks(&[&k.other_rsa])}
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
            {"match": {"prefix": "/"}, "requires": {"provider_name": "main"}}
        ],
        "bypass_cors_preflight": true
    })
}

fn authenticator() -> Authenticator {
    Authenticator::from_json(config().to_string().as_bytes()).unwrap()
}

fn claims() -> Value {
    json!({"iss": "https://issuer.example", "aud": "api", "sub": "alice",
           "groups": ["dev", "ops"], "exp": NOW + 300, "iat": NOW})
}

fn request(path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut h = vec![
        (":path".into(), path.into()),
        (":method".into(), "GET".into()),
        (":authority".into(), "api.local".into()),
        (":scheme".into(), "http".into()),
    ];
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn status_of(outcome: &Outcome) -> u32 {
    match outcome {
        Outcome::Allow(_) => 200,
        Outcome::Deny(d) => d.http_status,
        Outcome::NeedKeys(_) => 0,
        Outcome::Unreadable => 500,
    }
}

fn check(path: &str, token: &str) -> Outcome {
    authenticator().authenticate(&request(path, &[("authorization", &bearer(token))]), NOW_MS)
}

#[test]
fn every_algorithm_verifies() {
    let k = keys();
    for key in [&k.rs256, &k.ps256, &k.es256, &k.es384, &k.ed, &k.hs256] {
        let outcome = check("/api", &key.sign(&claims()));
        assert_eq!(status_of(&outcome), 200, "{:?}: {outcome:?}", key.alg);
    }
}

#[test]
fn outputs_of_a_good_token() {
    let token = keys().es256.sign(&claims());
    let Outcome::Allow(m) = check("/api", &token) else {
        panic!("denied")
    };
    assert_eq!(
        m.remove_headers,
        ["x-jwt-payload", "x-sub", "x-groups", "authorization"],
        "output headers first, then the token, which is not forwarded by default"
    );
    let set: std::collections::HashMap<_, _> = m.set_headers.iter().cloned().collect();
    assert_eq!(set["x-sub"], "alice");
    // ["dev","ops"] as Envoy 1.40 sends an array claim: base64 of its JSON.
    assert_eq!(set["x-groups"], "WyJkZXYiLCJvcHMiXQ==");
    assert_eq!(set["x-jwt-payload"], token.split('.').nth(1).unwrap());
    assert_eq!(m.publish[0].0, "main");
    assert_eq!(
        serde_json::from_str::<Value>(&m.publish[0].1).unwrap()["sub"],
        "alice"
    );
}

#[test]
fn refusals_with_envoy_statuses() {
    let k = keys();
    let c = claims();
    let with = |patch: Value| {
        let mut c = c.clone();
        for (key, value) in patch.as_object().unwrap() {
            c[key] = value.clone();
        }
        c
    };
    let mut tampered = k.rs256.sign(&c);
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let rsa_jwk_as_secret = {
        // Key confusion: sign HS256 with the RSA public key's bytes as the secret.
        let n = k.rs256.jwk()["n"].as_str().unwrap().as_bytes().to_vec();
        SigningKey::hmac("rsa", Algorithm::HS256, &n)
    };
    let cases: Vec<(&str, String, Status)> = vec![
        (
            "expired",
            k.rs256.sign(&with(json!({"exp": NOW - 61}))),
            Status::JwtExpired,
        ),
        (
            "not yet valid",
            k.rs256.sign(&with(json!({"nbf": NOW + 61}))),
            Status::JwtNotYetValid,
        ),
        (
            "wrong issuer",
            k.rs256.sign(&with(json!({"iss": "evil"}))),
            Status::JwtUnknownIssuer,
        ),
        (
            "wrong audience",
            k.rs256.sign(&with(json!({"aud": "web"}))),
            Status::JwtAudienceNotAllowed,
        ),
        ("tampered", tampered, Status::JwtVerificationFail),
        (
            "alg none",
            mint::unsigned(&json!({"alg": "none"}), &c),
            Status::JwtHeaderNotImplementedAlg,
        ),
        (
            "key confusion",
            rsa_jwk_as_secret.sign(&c),
            Status::JwksKidAlgMismatch,
        ),
        (
            "unknown kid",
            {
                let mut h = Header::new(Algorithm::RS256);
                h.kid = Some("nope".into());
                k.other_rsa.sign_with(h, &c)
            },
            Status::JwksKidAlgMismatch,
        ),
        (
            "foreign key",
            k.other_rsa.sign(&c),
            Status::JwtVerificationFail,
        ),
        (
            "jku header",
            k.rs256.sign_raw(
                &json!({"alg":"RS256","kid":"rsa","jku":"https://evil/jwks"}),
                &c,
            ),
            Status::JwtHeaderEmbeddedKey,
        ),
        ("garbage", "not-a-jwt".into(), Status::JwtBadFormat),
    ];
    for (name, token, expected) in cases {
        match check("/api", &token) {
            Outcome::Deny(d) => {
                assert_eq!(d.status, expected, "{name}");
                assert_eq!(d.http_status, expected.http_status(), "{name}");
                assert!(
                    d.www_authenticate.starts_with(
                        "Bearer realm=\"http://api.local/api\", error=\"invalid_token\""
                    ),
                    "{name}: {}",
                    d.www_authenticate
                );
            }
            other => panic!("{name}: expected {expected:?}, got {other:?}"),
        }
    }
    // The key-confusion token is refused even when its kid names the RSA key: an RSA key never
    // verifies HS256.
    assert!(!keys().rs256.jwk()["kty"].as_str().unwrap().eq("oct"));
}

#[test]
fn missing_token_and_rules() {
    let mut a = authenticator();
    let Outcome::Deny(d) = a.authenticate(&request("/api", &[]), NOW_MS) else {
        panic!("missing token must be refused")
    };
    assert_eq!((d.status, d.http_status), (Status::JwtMissed, 401));
    assert_eq!(d.www_authenticate, "Bearer realm=\"http://api.local/api\"");
    assert_eq!(
        status_of(&a.authenticate(&request("/public/x", &[]), NOW_MS)),
        200
    );
    assert_eq!(
        status_of(&a.authenticate(&request("/optional", &[]), NOW_MS)),
        200
    );
    assert_eq!(
        status_of(&a.authenticate(
            &request("/optional", &[("authorization", "Bearer x.y.z")]),
            NOW_MS
        )),
        401
    );
    assert_eq!(
        status_of(&a.authenticate(
            &request("/lenient", &[("authorization", "Bearer x.y.z")]),
            NOW_MS
        )),
        200
    );
    let preflight = request(
        "/api",
        &[
            ("origin", "https://app"),
            ("access-control-request-method", "POST"),
        ],
    );
    let mut preflight = preflight;
    preflight[1].1 = "OPTIONS".into();
    assert_eq!(status_of(&a.authenticate(&preflight, NOW_MS)), 200);
}

#[test]
fn requirement_groups() {
    let k = keys();
    let main = k.rs256.sign(&claims());
    let other = k
        .other_rsa
        .sign(&json!({"iss": "https://other.example", "exp": NOW + 60}));
    let mut a = authenticator();
    let run = |a: &mut Authenticator, path: &str, h: &[(&str, &str)]| {
        status_of(&a.authenticate(&request(path, h), NOW_MS))
    };
    let main_h = ("authorization", bearer(&main));
    let other_h = ("x-other-token", other.clone());
    assert_eq!(run(&mut a, "/any", &[(main_h.0, &main_h.1)]), 200);
    assert_eq!(run(&mut a, "/any", &[(other_h.0, &other_h.1)]), 200);
    assert_eq!(run(&mut a, "/any", &[]), 401);
    assert_eq!(run(&mut a, "/all", &[(main_h.0, &main_h.1)]), 401);
    assert_eq!(
        run(
            &mut a,
            "/all",
            &[(main_h.0, &main_h.1), (other_h.0, &other_h.1)]
        ),
        200
    );
    // provider_and_audiences overrides the provider's audiences.
    assert_eq!(run(&mut a, "/web", &[(main_h.0, &main_h.1)]), 403);
    let web = k
        .rs256
        .sign(&json!({"iss": "https://issuer.example", "aud": ["web"], "exp": NOW + 60}));
    assert_eq!(
        run(&mut a, "/web", &[("authorization", &bearer(&web))]),
        200
    );
}

#[test]
fn cache_skips_the_signature_but_not_the_clock() {
    let mut a = authenticator();
    let token = keys().rs256.sign(&claims());
    let h = request("/api", &[("authorization", &bearer(&token))]);
    assert_eq!(status_of(&a.authenticate(&h, NOW_MS)), 200);
    assert_eq!(status_of(&a.authenticate(&h, NOW_MS)), 200);
    assert_eq!(
        a.take_tally(),
        Tally {
            cache_hits: 1,
            cache_misses: 1
        }
    );
    // Past exp + skew, the cached token is refused like any other.
    let later = (NOW + 300 + 61) * 1000;
    let Outcome::Deny(d) = a.authenticate(&h, later) else {
        panic!("expired token allowed")
    };
    assert_eq!(d.status, Status::JwtExpired);
}

fn remote_config() -> Vec<u8> {
    json!({
        "providers": {"r": {
            "issuer": "iss",
            "remote_jwks": {"http_uri": {"uri": "http://jwks.local/keys", "cluster": "jwks", "timeout": "1s"},
                            "cache_duration": "300s"}
        }},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "r"}}]
    })
    .to_string()
    .into_bytes()
}

#[test]
fn remote_keys_wait_then_verify_and_unknown_kid_refetches_once() {
    let k = keys();
    let mut a = Authenticator::from_json(&remote_config()).unwrap();
    let token = k.es256.sign(&json!({"iss": "iss", "exp": NOW + 60}));
    let h = request("/", &[("authorization", &bearer(&token))]);
    assert_eq!(a.authenticate(&h, NOW_MS), Outcome::NeedKeys(vec![0]));
    let (cfg, state) = a.remote(0).unwrap();
    assert!(state.should_fetch(cfg, NOW_MS));
    state.fetch_started();
    a.install_keys(
        0,
        Arc::new(KeySet::parse(&mint::jwks(&[&k.es256])).unwrap()),
        NOW_MS,
    );
    assert_eq!(status_of(&a.authenticate(&h, NOW_MS)), 200);

    // A token signed by a key rotated in after the fetch: one refetch is allowed...
    let rotated = SigningKey::es256("new").sign(&json!({"iss": "iss", "exp": NOW + 60}));
    let h2 = request("/", &[("authorization", &bearer(&rotated))]);
    assert_eq!(a.authenticate(&h2, NOW_MS + 1), Outcome::NeedKeys(vec![0]));
    let (cfg, state) = a.remote(0).unwrap();
    assert!(state.should_fetch(cfg, NOW_MS + 1));
    state.fetch_started();
    a.install_keys(
        0,
        Arc::new(KeySet::parse(&mint::jwks(&[&k.es256])).unwrap()),
        NOW_MS + 2,
    );
    // ...and when the new JWKS still lacks the kid, the token is refused, with no second refetch.
    let Outcome::Deny(d) = a.authenticate(&h2, NOW_MS + 3) else {
        panic!("allowed")
    };
    assert_eq!(d.status, Status::JwksKidAlgMismatch);
}

#[test]
fn expired_remote_keys_are_not_used_even_for_a_cached_token() {
    let k = keys();
    let mut a = Authenticator::from_json(&remote_config()).unwrap();
    let token = k.es256.sign(&json!({"iss": "iss", "exp": NOW + 3600}));
    let h = request("/", &[("authorization", &bearer(&token))]);
    let (_, state) = a.remote(0).unwrap();
    state.fetch_started();
    a.install_keys(
        0,
        Arc::new(KeySet::parse(&mint::jwks(&[&k.es256])).unwrap()),
        NOW_MS,
    );
    assert_eq!(status_of(&a.authenticate(&h, NOW_MS)), 200);
    // cache_duration (300 s) later the keys are expired: the request waits for a refetch...
    let later = NOW_MS + 300_000;
    assert_eq!(a.authenticate(&h, later), Outcome::NeedKeys(vec![0]));
    // ...and when it fails, the token (verified and cached before) is refused.
    let (cfg, state) = a.remote(0).unwrap();
    let cfg = cfg.clone();
    state.fetch_started();
    state.fetch_failed(&cfg, "503".into(), later);
    let Outcome::Deny(d) = a.authenticate(&h, later + 1) else {
        panic!("allowed with expired keys")
    };
    assert_eq!(d.status, Status::JwksFetchFail);
}

#[test]
fn remote_fetch_failure_refuses_until_retry() {
    let mut a = Authenticator::from_json(&remote_config()).unwrap();
    let token = keys().es256.sign(&json!({"iss": "iss", "exp": NOW + 60}));
    let h = request("/", &[("authorization", &bearer(&token))]);
    let (cfg, state) = a.remote(0).unwrap();
    state.fetch_started();
    let cfg = cfg.clone();
    state.fetch_failed(&cfg, "503".into(), NOW_MS);
    let Outcome::Deny(d) = a.authenticate(&h, NOW_MS + 10) else {
        panic!("allowed")
    };
    assert_eq!(d.status, Status::JwksFetchFail);
}

#[test]
fn config_errors_name_the_field() {
    let cases = [
        (
            json!({"providers": {"p": {"local_jwks": {"filename": "/etc/jwks.json"}}}}),
            "providers.p.local_jwks.filename",
        ),
        (
            json!({"providers": {"p": {"local_jwks": {"inline_string": "{}"}}}}),
            "providers.p.local_jwks",
        ),
        (
            json!({"providers": {"p": {"local_jwks": {"inline_string": "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\"}]}"}}}}),
            "keys[0]",
        ),
        (
            json!({"providers": {"p": {"issuer": "x"}}}),
            "providers.p.remote_jwks",
        ),
        (
            json!({"providers": {"p": {"bogus_field": 1}}}),
            "bogus_field",
        ),
        (
            json!({"providers": {"p": {"remote_jwks": {"http_uri": {"uri": "ftp://x", "cluster": "c", "timeout": "1s"}}}}}),
            "providers.p.remote_jwks.http_uri.uri",
        ),
        (
            json!({"rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "nope"}}]}),
            "rules[0].requires.provider_name",
        ),
        (
            json!({"rules": [{"match": {"prefix": "/", "grpc": {}}}]}),
            "rules[0].match.grpc",
        ),
        (
            json!({"rules": [{"match": {"prefix": "/"}, "requirement_name": "x"}]}),
            "rules[0].requirement_name",
        ),
        (
            json!({"providers": {"p": {"remote_jwks": {"http_uri": {"uri": "http://x/", "cluster": "c", "timeout": "1"}}}}}),
            "seconds",
        ),
    ];
    for (config, field) in cases {
        let err = Authenticator::from_json(config.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{config}: {err}");
    }
}

#[test]
fn camel_case_config_is_accepted() {
    let k = keys();
    let config = json!({
        "providers": {"p": {"issuer": "i", "localJwks": {"inlineString": mint::jwks(&[&k.es256])},
                            "fromHeaders": [{"name": "x-token", "valuePrefix": "JWT "}],
                            "forwardPayloadHeader": "x-payload", "clockSkewSeconds": 5}},
        "rules": [{"match": {"safeRegex": {"regex": "/v[0-9]/.*"}}, "requires": {"providerName": "p"}}],
        "bypassCorsPreflight": false
    });
    let mut a = Authenticator::from_json(config.to_string().as_bytes()).unwrap();
    let token = k.es256.sign(&json!({"iss": "i"}));
    let h = request("/v1/x", &[("x-token", &format!("JWT {token}"))]);
    assert_eq!(status_of(&a.authenticate(&h, NOW_MS)), 200);
    assert_eq!(
        status_of(&a.authenticate(&request("/v1/x", &[]), NOW_MS)),
        401
    );
    assert_eq!(
        status_of(&a.authenticate(&request("/other", &[]), NOW_MS)),
        200
    );
}

/// Every header a client could forge as a verified identity: the output headers of both
/// providers. None may reach the upstream unless a verified token set it.
const FORGEABLE: [&str; 3] = ["x-jwt-payload", "x-sub", "x-groups"];

fn forged(extra: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut h: Vec<(String, String)> = FORGEABLE
        .iter()
        .map(|n| (n.to_string(), "admin".to_string()))
        .collect();
    h.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    h
}

fn allowed(outcome: Outcome) -> Mutations {
    match outcome {
        Outcome::Allow(m) => m,
        other => panic!("not allowed: {other:?}"),
    }
}

#[test]
fn forged_output_headers_are_removed_whenever_no_token_verified() {
    let mut tampered = keys().es256.sign(&claims());
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let good = keys().es256.sign(&claims());
    let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        ("/public", vec![]),
        ("/public", vec![("authorization", bearer(&good))]),
        ("/optional", vec![]),
        ("/lenient", vec![]),
        ("/lenient", vec![("authorization", bearer(&tampered))]),
    ];
    for (path, extra) in cases {
        let mut headers = request(path, &[]);
        headers.extend(forged(&extra));
        let m = allowed(authenticator().authenticate(&headers, NOW_MS));
        for name in FORGEABLE {
            assert!(
                m.remove_headers.iter().any(|h| h == name),
                "{path}: {name} kept"
            );
        }
        assert!(m.set_headers.is_empty(), "{path}: {:?}", m.set_headers);
    }
    // A CORS preflight skips the check but not the removal.
    let mut preflight = request(
        "/api",
        &[
            ("origin", "https://app"),
            ("access-control-request-method", "GET"),
        ],
    );
    preflight.retain(|(k, _)| k != ":method");
    preflight.push((":method".into(), "OPTIONS".into()));
    preflight.extend(forged(&[]));
    let m = allowed(authenticator().authenticate(&preflight, NOW_MS));
    assert_eq!(m.remove_headers, FORGEABLE);
}

#[test]
fn verified_outputs_reach_the_upstream_even_when_the_client_sent_the_same_values() {
    let token = keys().es256.sign(&claims());
    let clean = allowed(authenticator().authenticate(
        &request("/api", &[("authorization", &bearer(&token))]),
        NOW_MS,
    ));
    // The same request repeating, value for value, what the filter forwards.
    let mut repeated = request("/api", &[("authorization", &bearer(&token))]);
    for (name, value) in &clean.set_headers {
        repeated.push((name.clone(), value.clone()));
    }
    let m = allowed(authenticator().authenticate(&repeated, NOW_MS));
    for name in FORGEABLE {
        assert!(
            m.remove_headers.iter().any(|h| h == name),
            "{name} kept as sent"
        );
    }
    let mut set = m.set_headers.clone();
    let mut expected = clean.set_headers.clone();
    set.sort();
    expected.sort();
    assert_eq!(set, expected, "the verified outputs are set again");
    assert!(set.iter().any(|(k, v)| k == "x-sub" && v == "alice"));
}

#[test]
fn a_query_token_is_removed_from_the_path() {
    let token = keys().es256.sign(&claims());
    let path = format!("/api?a=1&access_token={token}&b=%2F");
    let m = allowed(authenticator().authenticate(&request(&path, &[]), NOW_MS));
    assert_eq!(m.path.as_deref(), Some("/api?a=1&b=%2F"));
    assert!(!m.remove_headers.iter().any(|h| h == "authorization"));
}

#[test]
fn several_tokens_all_verify_and_each_adds_its_headers() {
    let alice = keys().es256.sign(&claims());
    let mut bob_claims = claims();
    bob_claims["sub"] = json!("bob");
    let bob = keys().es256.sign(&bob_claims);
    let path = format!("/api?access_token={alice}");
    let m = allowed(
        authenticator().authenticate(&request(&path, &[("authorization", &bearer(&bob))]), NOW_MS),
    );
    let subs: Vec<&str> = m
        .set_headers
        .iter()
        .filter(|(k, _)| k == "x-sub")
        .map(|(_, v)| v.as_str())
        .collect();
    // Envoy checks the last token found first: the parameter, then the header.
    assert_eq!(subs, ["alice", "bob"]);
    let mut tampered = bob.clone();
    tampered.replace_range(tampered.len() - 6.., "AAAAAA");
    let outcome = authenticator().authenticate(
        &request(&path, &[("authorization", &bearer(&tampered))]),
        NOW_MS,
    );
    assert_eq!(status_of(&outcome), 401, "one bad token fails the request");
}

#[test]
fn bypass_inside_requires_any_covers_only_the_named_providers() {
    let mut config = config();
    config["rules"] = json!([{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
        {"provider_name": "other"}, {"allow_missing_or_failed": {}}]}}}]);
    let mut auth = Authenticator::from_json(config.to_string().as_bytes()).unwrap();
    let main_token = keys().es256.sign(&claims());
    let m = allowed(auth.authenticate(
        &request("/x", &[("authorization", &bearer(&main_token))]),
        NOW_MS,
    ));
    // As in Envoy: main's token is not looked at, so it stays and sets nothing.
    assert!(m.set_headers.is_empty(), "{:?}", m.set_headers);
    assert!(!m.remove_headers.iter().any(|h| h == "authorization"));
}

#[test]
fn a_provider_without_usable_keys_loads_and_refuses_its_tokens() {
    let rsa = SigningKey::rsa("enc", Algorithm::RS256);
    let mut jwk = rsa.jwk().clone();
    jwk["use"] = json!("enc");
    let mut config = config();
    config["providers"]["enc"] = json!({
        "issuer": "https://enc.example",
        "from_headers": [{"name": "x-enc"}],
        "local_jwks": {"inline_string": json!({"keys": [jwk]}).to_string()}
    });
    config["rules"] = json!([{"match": {"prefix": "/"}, "requires": {"provider_name": "enc"}}]);
    let mut auth = Authenticator::from_json(config.to_string().as_bytes()).unwrap();
    let warnings = auth.warnings();
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("\"enc\""), "{warnings:?}");
    let token = rsa.sign(&json!({"iss": "https://enc.example", "exp": NOW + 60}));
    let outcome = auth.authenticate(&request("/", &[("x-enc", &token)]), NOW_MS);
    assert_eq!(status_of(&outcome), 401);
}

#[test]
fn only_tokens_up_to_the_size_bound_are_cached() {
    let mut auth = authenticator();
    let small = keys().es256.sign(&claims());
    let mut big_claims = claims();
    big_claims["pad"] = json!("x".repeat(4096));
    let big = keys().es256.sign(&big_claims);
    for token in [&small, &small, &big, &big] {
        let outcome = auth.authenticate(
            &request("/api", &[("authorization", &bearer(token))]),
            NOW_MS,
        );
        assert_eq!(status_of(&outcome), 200);
    }
    let tally = auth.take_tally();
    // The small token once missed then hit; the big one is verified every time.
    assert_eq!((tally.cache_hits, tally.cache_misses), (1, 3));
}

#[test]
fn headers_the_host_failed_to_read_are_refused_not_let_through() {
    // Envoy's get_header_map_pairs answers a missing map with an empty list, not an error.
    assert_eq!(
        authenticator().authenticate(&[], NOW_MS),
        Outcome::Unreadable
    );
    let no_method = vec![(":path".to_string(), "/api".to_string())];
    assert_eq!(
        authenticator().authenticate(&no_method, NOW_MS),
        Outcome::Unreadable
    );
}

/// Two providers on one key, as Envoy 1.40 was probed with: `demo` reads `Authorization` and
/// `x-token`, `other` reads `Authorization`.
fn sequential_config() -> Vec<u8> {
    let jwks = mint::jwks(&[&keys().es256]);
    json!({
        "providers": {
            "demo": {"issuer": "demo", "local_jwks": {"inline_string": jwks},
                     "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}, {"name": "x-token"}],
                     "forward_payload_header": "x-jwt-payload",
                     "claim_to_headers": [{"header_name": "x-user", "claim_name": "sub"}]},
            "other": {"issuer": "other", "local_jwks": {"inline_string": jwks},
                      "claim_to_headers": [{"header_name": "x-other-user", "claim_name": "sub"}]}
        },
        "rules": [
            {"match": {"prefix": "/any"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "demo"}, {"provider_name": "other"}]}}},
            {"match": {"prefix": "/all"}, "requires": {"requires_all": {"requirements": [
                {"provider_name": "demo"}, {"allow_missing_or_failed": {}}]}}}
        ]
    })
    .to_string()
    .into_bytes()
}

/// The headers the upstream gets: the request's, with the changes applied.
fn upstream_headers(request: &[(String, String)], m: &Mutations) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = request
        .iter()
        .filter(|(n, _)| !n.starts_with(':') && !m.remove_headers.contains(n))
        .cloned()
        .collect();
    out.extend(m.set_headers.iter().cloned());
    out.sort();
    out
}

#[test]
fn checks_run_one_after_another_on_the_headers_as_in_envoy() {
    let k = keys();
    let mut a = Authenticator::from_json(&sequential_config()).unwrap();
    let demo = k.es256.sign(&json!({"iss": "demo", "sub": "dave"}));
    let other = k.es256.sign(&json!({"iss": "other", "sub": "olga"}));
    // requires_any [demo, other]: demo verifies the x-token token (and applies its outputs),
    // then fails on the other provider's token; other then passes.
    let h = request(
        "/any",
        &[("authorization", &bearer(&other)), ("x-token", &demo)],
    );
    let Outcome::Allow(m) = a.authenticate(&h, NOW_MS) else {
        panic!("denied")
    };
    let payload = demo.split('.').nth(1).unwrap().to_string();
    assert_eq!(
        upstream_headers(&h, &m),
        [
            ("x-jwt-payload".to_string(), payload),
            ("x-other-user".into(), "olga".into()),
            ("x-user".into(), "dave".into()),
        ]
    );
    // requires_all [demo, allow_missing_or_failed]: the second check starts by removing every
    // provider's outputs, and finds no token, demo having removed it.
    let h = request("/all", &[("authorization", &bearer(&demo))]);
    let Outcome::Allow(m) = a.authenticate(&h, NOW_MS) else {
        panic!("denied")
    };
    assert_eq!(upstream_headers(&h, &m), []);
}
