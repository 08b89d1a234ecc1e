//! meshgate's rate-limit filter in real Envoy with 4 workers: exactness across workers (beside
//! Envoy's own local_ratelimit), refill, per-key isolation, shadow mode, headers, JWT-claim keys,
//! and Envoy refusing a bad configuration.

// Test helpers fail the test by panicking, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use meshgate_integration::bootstrap::{
    bootstrap_with_clusters, cluster, filter, grpc_cluster, routed_listener, wasm_filter,
};
use meshgate_integration::{Echo, Envoy, Redis, RlsServer, http_client, ports};
use meshgate_jwt::mint::{self, SigningKey};
use serde_json::{Value, json};

fn rate_limit(config: &Value) -> Value {
    wasm_filter("rate-limit.wasm", "rate_limit", &config.to_string())
}

fn native_local_ratelimit(max_tokens: u32, fill_interval: &str) -> Value {
    filter(
        "envoy.filters.http.local_ratelimit",
        json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "native_rl",
            "token_bucket": {"max_tokens": max_tokens, "tokens_per_fill": max_tokens, "fill_interval": fill_interval},
            "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "rl_enabled"},
            "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "rl_enforced"}
        }),
    )
}

fn start(listeners: Vec<Value>, upstream: &Echo) -> Envoy {
    Envoy::builder(bootstrap_with_clusters(
        listeners,
        vec![cluster("upstream", upstream.port())],
    ))
    .concurrency(4)
    .start()
}

/// An Envoy (4 workers) whose listener "wasm" runs the rate-limit filter with `config`.
fn start_one(config: &Value, upstream: &Echo) -> Envoy {
    start(
        vec![routed_listener(
            "wasm",
            vec![rate_limit(config)],
            "upstream",
        )],
        upstream,
    )
}

/// Sends `per_thread` requests from each of `threads` threads, a new connection each, and
/// returns the statuses.
fn burst(url: &str, threads: usize, per_thread: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (url, headers) = (url.to_string(), headers.clone());
            std::thread::spawn(move || {
                let client = http_client();
                (0..per_thread)
                    .map(|_| {
                        let mut r = client.get(&url).header("connection", "close");
                        for (k, v) in &headers {
                            r = r.header(k, v);
                        }
                        r.send().unwrap().status().as_u16()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[test]
fn exact_across_four_workers_like_local_ratelimit() {
    let upstream = Echo::start();
    let config = json!({"token_bucket": {"max_tokens": 25, "tokens_per_fill": 25, "fill_interval": "3600s"}});
    let envoy = start(
        vec![
            routed_listener("wasm", vec![rate_limit(&config)], "upstream"),
            routed_listener(
                "native",
                vec![native_local_ratelimit(25, "3600s")],
                "upstream",
            ),
        ],
        &upstream,
    );
    for listener in ["wasm", "native"] {
        let statuses = burst(&envoy.url(listener), 16, 10, &[]);
        assert_eq!(count(&statuses, 200), 25, "{listener}: {statuses:?}");
        assert_eq!(count(&statuses, 429), 135, "{listener}");
    }
    // Every worker served part of the burst (else exactness across workers proves nothing).
    let per_worker = envoy
        .stats()
        .into_iter()
        .filter(|(k, v)| {
            k.starts_with("listener.127.0.0.1_")
                && k.contains(".worker_")
                && k.ends_with("downstream_cx_total")
                && *v > 0
        })
        .count();
    assert!(
        per_worker >= 4,
        "connections did not spread over the workers ({per_worker})"
    );
    envoy.wait_for_stat("wasmcustom.rate_limit.limited.default", |v| v == 135);
    envoy.wait_for_stat("wasmcustom.rate_limit.allowed", |v| v == 25);
}

/// A bucket large enough for workers to lease tokens (several per compare-and-swap once it is
/// busy): across four workers never more than the bucket, and at most the documented
/// under-admission (workers × min(31, tokens / 64)) less.
#[test]
fn a_large_bucket_leased_across_four_workers_never_admits_more_than_it_holds() {
    const TOKENS: usize = 400;
    let upstream = Echo::start();
    let config = json!({"token_bucket": {"max_tokens": TOKENS, "tokens_per_fill": TOKENS, "fill_interval": "3600s"}});
    let envoy = start_one(&config, &upstream);
    let url = envoy.url("wasm");
    let first = burst(&url, 16, 40, &[]);
    let admitted = count(&first, 200);
    let leased_at_most = 4 * (TOKENS / 64).min(31);
    assert!(
        (TOKENS - leased_at_most..=TOKENS).contains(&admitted),
        "{admitted} of {} admitted from a bucket of {TOKENS}",
        first.len()
    );
    assert_eq!(count(&first, 429), first.len() - admitted);
    // What workers still hold on lease is all that may come after: never past the bucket.
    let second = burst(&url, 8, 25, &[]);
    let total = admitted + count(&second, 200);
    assert!(
        total <= TOKENS,
        "{total} admitted from a bucket of {TOKENS}"
    );
    assert_eq!(count(&second, 429), second.len() - count(&second, 200));
}

#[test]
fn headers_on_allowed_and_limited_responses_and_refill() {
    let upstream = Echo::start();
    let config = json!({
        "token_bucket": {"max_tokens": 2, "tokens_per_fill": 2, "fill_interval": "2s"},
        "legacy_headers": true
    });
    let envoy = start_one(&config, &upstream);
    let client = http_client();
    let get = || client.get(envoy.url("wasm")).send().unwrap();
    // Align to a fresh window: wait until the bucket has refilled if a previous fill is near.
    let first = get();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["ratelimit-policy"], "\"default\";q=2;w=2");
    let remaining = first.headers()["ratelimit"].to_str().unwrap().to_string();
    assert!(remaining.starts_with("\"default\";r=1;t="), "{remaining}");
    assert_eq!(first.headers()["x-ratelimit-limit"], "2");
    assert_eq!(get().status(), 200);
    let limited = get();
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(
        limited.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"default\";r=0;t=")
    );
    assert_eq!(limited.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(limited.text().unwrap(), "rate limited by default\n");
    assert_eq!(
        upstream.served(),
        2,
        "a limited request never reaches the upstream"
    );
    // After Retry-After, tokens are back.
    std::thread::sleep(Duration::from_secs(retry_after) + Duration::from_millis(100));
    assert_eq!(get().status(), 200);
}

#[test]
fn per_key_buckets_and_shadow_mode() {
    let upstream = Echo::start();
    let config = json!({
        "descriptors": [
            {"name": "per_user", "entries": [{"request_header": {"header_name": "x-user", "descriptor_key": "user"}}],
             "token_bucket": {"max_tokens": 3, "fill_interval": "3600s"}},
            {"name": "trial", "shadow": true, "entries": [{"path": {"prefix": "/trial"}}],
             "token_bucket": {"max_tokens": 1, "fill_interval": "3600s"}}
        ]
    });
    let envoy = start_one(&config, &upstream);
    let url = envoy.url("wasm");
    let alice = burst(&url, 4, 3, &[("x-user", "alice")]);
    assert_eq!(count(&alice, 200), 3, "{alice:?}");
    let bob = burst(&url, 4, 3, &[("x-user", "bob")]);
    assert_eq!(count(&bob, 200), 3, "bob has his own bucket: {bob:?}");
    // No x-user: per_user does not apply; nothing limits.
    assert_eq!(count(&burst(&url, 2, 5, &[]), 200), 10);
    // Shadow: over the limit, yet served, and reported to the upstream and in stats.
    let client = http_client();
    let mut shadowed = 0;
    for _ in 0..4 {
        let response = client.get(format!("{url}/trial")).send().unwrap();
        assert_eq!(response.status(), 200);
        let seen: Value = response.json().unwrap();
        if seen["headers"]["x-meshgate-ratelimit-shadow"] == "trial" {
            shadowed += 1;
        }
    }
    assert_eq!(shadowed, 3);
    envoy.wait_for_stat("wasmcustom.rate_limit.shadow_limited.trial", |v| v == 3);
    envoy.wait_for_stat("wasmcustom.rate_limit.limited.per_user", |v| v == 18);
}

#[test]
fn flooding_new_keys_does_not_reset_a_limit_nor_lock_new_clients_out() {
    let upstream = Echo::start();
    let config = json!({
        "max_keys": 2,
        "descriptors": [{"name": "per_client",
                         "entries": [{"request_header": {"header_name": "x-client", "descriptor_key": "c"}}],
                         "token_bucket": {"max_tokens": 2, "fill_interval": "3600s"}}]
    });
    let envoy = start_one(&config, &upstream);
    let url = envoy.url("wasm");
    let victim = burst(&url, 1, 3, &[("x-client", "victim")]);
    assert_eq!(victim, [200, 200, 429]);
    // An attacker cycles through many fresh keys to push the victim's bucket out of the table
    // (2 keys → 4 slots) and to crowd everybody else out. Each is a new key with a quota of
    // its own, and takes over a slot whose bucket gave one token.
    let mut flood = Vec::new();
    for i in 0..40 {
        flood.extend(burst(&url, 1, 1, &[("x-client", &format!("attacker-{i}"))]));
    }
    assert_eq!(count(&flood, 200), 40, "{flood:?}");
    // The victim's bucket was never taken over (it is empty): still limited.
    assert_eq!(burst(&url, 1, 1, &[("x-client", "victim")]), [429]);
    // A client never seen before is served at once.
    assert_eq!(
        burst(&url, 1, 1, &[("x-client", "newcomer")]),
        [200],
        "a flood of new keys locked a new client out"
    );
    // Keys that use more than one token pin the other slots for the hour: a key that then
    // finds no slot shares an overflow bucket of the descriptor's size and interval, so it
    // gets its quota (2 an hour), not 2 a second.
    for i in 0..3 {
        let heavy = burst(&url, 1, 2, &[("x-client", &format!("heavy-{i}"))]);
        assert_eq!(heavy, [200, 200]);
    }
    let late = requests_of(&url, "x-client", "late", 6, Duration::from_millis(300));
    assert_eq!(late, [200, 200, 429, 429, 429, 429]);
    envoy.wait_for_stat("wasmcustom.rate_limit.overflow", |v| v == 6);
}

#[test]
fn ipv6_clients_are_one_key_per_64() {
    let upstream = Echo::start();
    let config = json!({
        "xff_trusted_hops": 1,
        "descriptors": [{"name": "per_client", "entries": [{"remote_address": {}}],
                         "token_bucket": {"max_tokens": 2, "fill_interval": "3600s"}}]
    });
    let envoy = start_one(&config, &upstream);
    let url = envoy.url("wasm");
    // One host with a /64 may use any of 2^64 addresses, spelled any way it likes.
    let same_64: Vec<u16> = (1..=6)
        .flat_map(|i| {
            let address = format!("2001:db8:1:2:{i:x}::{i}");
            burst(&url, 1, 1, &[("x-forwarded-for", &address)])
        })
        .collect();
    assert_eq!(count(&same_64, 200), 2, "{same_64:?}");
    let spelled = burst(
        &url,
        1,
        1,
        &[("x-forwarded-for", "2001:0DB8:0001:0002:0:0:0:ff")],
    );
    assert_eq!(spelled, [429]);
    // Another /64 is another client.
    assert_eq!(
        burst(&url, 1, 2, &[("x-forwarded-for", "2001:db8:1:3::1")]),
        [200, 200]
    );
}

#[test]
fn absent_attributes_are_not_failures() {
    // Failed reads refuse the request; attributes that are simply absent (no such header, no
    // JWT payload published) must not count as failures.
    let upstream = Echo::start();
    let config = json!({
        "descriptors": [
            {"name": "per_subject", "entries": [{"jwt_claim": {"claim": "sub", "payload": "p"}}],
             "token_bucket": {"max_tokens": 1, "fill_interval": "3600s"}},
            {"name": "per_user", "entries": [{"request_header": {"header_name": "x-user", "descriptor_key": "u"}}],
             "token_bucket": {"max_tokens": 1, "fill_interval": "3600s"}},
            {"name": "per_client", "entries": [{"remote_address": {}}, {"path": {"prefix": "/limited"}}],
             "token_bucket": {"max_tokens": 1, "fill_interval": "3600s"}}
        ]
    });
    let envoy = start_one(&config, &upstream);
    assert_eq!(count(&burst(&envoy.url("wasm"), 2, 3, &[]), 200), 6);
    let limited = format!("{}/limited", envoy.url("wasm"));
    assert_eq!(burst(&limited, 1, 2, &[]), [200, 429]);
    envoy.wait_for_stat("wasmcustom.rate_limit.allowed", |v| v == 7);
    assert_eq!(envoy.stat("wasmcustom.rate_limit.attribute_errors"), 0);
}

/// Envoy's `server.memory_allocated`, after a stats flush.
fn memory_allocated(envoy: &Envoy) -> i64 {
    // The gauge is refreshed on each stats flush (every 0.2 s in these bootstraps).
    std::thread::sleep(Duration::from_millis(500));
    envoy.stat("server.memory_allocated")
}

#[test]
fn long_unique_keys_cost_envoy_a_fixed_size_each() {
    let upstream = Echo::start();
    let config = json!({
        "descriptors": [{"name": "per_client",
                         "entries": [{"request_header": {"header_name": "x-client", "descriptor_key": "c"}}],
                         "token_bucket": {"max_tokens": 5, "fill_interval": "3600s"}}]
    });
    let bootstrap = bootstrap_with_clusters(
        vec![routed_listener(
            "wasm",
            vec![rate_limit(&config)],
            "upstream",
        )],
        vec![cluster("upstream", upstream.port())],
    )
    .replacen(
        "{\"admin\":",
        "{\"stats_flush_interval\":\"0.2s\",\"admin\":",
        1,
    );
    let envoy = Envoy::builder(bootstrap).concurrency(4).start();
    let url = envoy.url("wasm");
    // Warm every worker's VM first, so what follows measures the keys, not the VMs.
    assert_eq!(count(&burst(&url, 8, 4, &[("x-client", "warm")]), 200), 5);
    let before = memory_allocated(&envoy);
    const KEYS: usize = 1000;
    let pad = "x".repeat(50_000);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (url, pad) = (url.clone(), pad.clone());
            std::thread::spawn(move || {
                let client = http_client();
                (0..KEYS / 4)
                    .map(|i| {
                        client
                            .get(&url)
                            .header("x-client", format!("{t}-{i}-{pad}"))
                            .send()
                            .unwrap()
                            .status()
                            .as_u16()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(count(&statuses, 200), KEYS, "each key has its own bucket");
    let grown = memory_allocated(&envoy) - before;
    eprintln!("{KEYS} keys of 50 KB grew Envoy by {grown} bytes");
    // 1000 keys of 50 KB: 50 MB if records held the keys; fixed-size records are ~100 KB.
    assert!(
        grown < 8 * 1024 * 1024,
        "{KEYS} keys of 50 KB grew Envoy by {} KB",
        grown / 1024
    );
}

/// Writes an LDS file (moved into place, which is when Envoy reloads it) with the rate-limit
/// listener on `port` running `config`.
fn write_lds(dir: &std::path::Path, port: u16, config: &Value) {
    let listener = routed_listener("wasm", vec![rate_limit(config)], "upstream")
        .to_string()
        .replace("\"{{port:wasm}}\"", &port.to_string())
        .replace(
            "{{dist}}",
            &meshgate_integration::paths::dist_dir()
                .display()
                .to_string(),
        );
    let mut listener: Value = serde_json::from_str(&listener).unwrap();
    listener["@type"] = json!("type.googleapis.com/envoy.config.listener.v3.Listener");
    let tmp = dir.join("lds.tmp");
    std::fs::write(&tmp, json!({"resources": [listener]}).to_string()).unwrap();
    std::fs::rename(&tmp, dir.join("lds.json")).unwrap();
}

#[test]
fn a_new_configuration_keeps_the_buckets_of_unchanged_descriptors() {
    let upstream = Echo::start();
    let per_user = json!({"name": "per_user",
        "entries": [{"request_header": {"header_name": "x-user", "descriptor_key": "user"}}],
        "token_bucket": {"max_tokens": 2, "fill_interval": "3600s"}});
    let dir = tempfile::tempdir().unwrap();
    let port = ports::free_port();
    write_lds(dir.path(), port, &json!({"descriptors": [per_user]}));
    let lds = json!({"lds_config": {"resource_api_version": "V3", "path_config_source": {
        "path": dir.path().join("lds.json"), "watched_directory": {"path": dir.path()}}}});
    let bootstrap = bootstrap_with_clusters(vec![], vec![cluster("upstream", upstream.port())])
        .replacen(
            "{\"admin\":",
            // Listeners from a file need a node identity.
            &format!("{{\"node\":{{\"id\":\"t\",\"cluster\":\"t\"}},\"dynamic_resources\":{lds},\"admin\":"),
            1,
        );
    let envoy = Envoy::builder(bootstrap).concurrency(4).start();
    let url = format!("http://127.0.0.1:{port}");
    assert_eq!(burst(&url, 1, 3, &[("x-user", "alice")]), [200, 200, 429]);
    assert_eq!(burst(&url, 1, 1, &[("x-user", "bob")]), [200]);
    // The operator adds a descriptor and a stat prefix; per_user is unchanged.
    write_lds(
        dir.path(),
        port,
        &json!({"stat_prefix": "v2", "descriptors": [per_user,
            {"name": "admin", "entries": [{"path": {"prefix": "/admin"}}],
             "token_bucket": {"max_tokens": 100, "fill_interval": "1s"}}]}),
    );
    envoy.wait_for_stat("listener_manager.lds.update_success", |v| v >= 2);
    envoy.wait_for_stat("listener_manager.listener_in_place_updated", |v| v >= 1);
    envoy.wait_for_stat("listener_manager.total_listeners_warming", |v| v == 0);
    // Requests reach the new configuration (its counters move) and find the old counts.
    assert_eq!(
        burst(&url, 1, 1, &[("x-user", "alice")]),
        [429],
        "the new configuration reset alice's bucket"
    );
    assert_eq!(burst(&url, 1, 2, &[("x-user", "bob")]), [200, 429]);
    envoy.wait_for_stat("wasmcustom.rate_limit.v2.limited.per_user", |v| v == 2);
}
#[test]
fn limits_per_jwt_subject_published_by_jwt_auth() {
    let key = SigningKey::es256("k");
    let jwt_config = json!({
        "providers": {"p": {"issuer": "iss", "local_jwks": {"inline_string": mint::jwks(&[&key])},
                            "payload_in_metadata": "p"}},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "p"}}]
    });
    let rl_config = json!({
        "descriptors": [{"name": "per_subject",
                         "entries": [{"jwt_claim": {"claim": "sub", "payload": "p", "descriptor_key": "sub"}}],
                         "token_bucket": {"max_tokens": 2, "fill_interval": "3600s"}}]
    });
    let upstream = Echo::start();
    let envoy = start(
        vec![routed_listener(
            "chain",
            vec![
                wasm_filter("jwt-auth.wasm", "jwt_auth", &jwt_config.to_string()),
                rate_limit(&rl_config),
            ],
            "upstream",
        )],
        &upstream,
    );
    let token = |sub: &str| {
        format!(
            "Bearer {}",
            key.sign(&json!({"iss": "iss", "sub": sub, "exp": mint::now() + 600}))
        )
    };
    let (alice, bob) = (token("alice"), token("bob"));
    let alice_statuses = burst(&envoy.url("chain"), 2, 3, &[("authorization", &alice)]);
    assert_eq!(count(&alice_statuses, 200), 2, "{alice_statuses:?}");
    assert_eq!(count(&alice_statuses, 429), 4);
    let bob_statuses = burst(&envoy.url("chain"), 1, 2, &[("authorization", &bob)]);
    assert_eq!(count(&bob_statuses, 200), 2, "{bob_statuses:?}");
    // Unauthenticated requests never reach the limiter.
    assert_eq!(count(&burst(&envoy.url("chain"), 1, 2, &[]), 401), 2);
}

#[test]
fn envoy_refuses_bad_config_and_says_which_field() {
    let upstream = Echo::start();
    let cases = [
        (
            json!({"token_bucket": {"max_tokens": 0, "fill_interval": "1s"}}),
            "token_bucket.max_tokens",
        ),
        (
            json!({"token_bucket": {"max_tokens": 5, "fill_interval": "0.01s"}}),
            "token_bucket.fill_interval",
        ),
        (
            json!({"token_bucket": {"max_tokens": 5, "fill_interval": "1s"}, "burst": 3}),
            "burst",
        ),
        (
            json!({"descriptors": [{"name": "d", "entries": [], "token_bucket": {"max_tokens": 1, "fill_interval": "1s"}}]}),
            "descriptors[0].entries",
        ),
    ];
    for (config, field) in cases {
        let bootstrap = bootstrap_with_clusters(
            vec![routed_listener(
                "wasm",
                vec![rate_limit(&config)],
                "upstream",
            )],
            vec![cluster("upstream", upstream.port())],
        );
        let err = Envoy::builder(bootstrap)
            .try_start()
            .err()
            .unwrap_or_else(|| panic!("Envoy accepted {config}"));
        assert!(err.contains(field), "log does not name {field}:\n{err}");
    }
}

fn global_config(extra: Value) -> Value {
    let mut global = json!({
        "cluster": "rls",
        "domain": "meshgate",
        "timeout": "1s",
        "descriptors": [{"name": "per_user",
                         "entries": [{"request_header": {"header_name": "x-user", "descriptor_key": "user"}}]}]
    });
    for (k, v) in extra.as_object().unwrap() {
        global[k] = v.clone();
    }
    json!({"global": global})
}

fn start_global(config: &Value, upstream: &Echo, rls_port: u16) -> Envoy {
    let bootstrap = bootstrap_with_clusters(
        vec![routed_listener(
            "wasm",
            vec![rate_limit(config)],
            "upstream",
        )],
        vec![
            cluster("upstream", upstream.port()),
            grpc_cluster("rls", rls_port),
        ],
    );
    Envoy::builder(bootstrap).concurrency(2).start()
}

#[test]
fn global_limits_are_counted_by_the_rate_limit_service() {
    let redis = Redis::start();
    let rls = RlsServer::start(&redis, "meshgate", "user", 3);
    let upstream = Echo::start();
    let envoy = start_global(&global_config(json!({})), &upstream, rls.port());
    let client = http_client();
    let get = |user: &str| {
        client
            .get(envoy.url("wasm"))
            .header("x-user", user)
            .send()
            .unwrap()
    };
    for _ in 0..3 {
        let ok = get("alice");
        assert_eq!(ok.status(), 200, "{}", envoy.log_tail(20));
        assert_eq!(
            ok.headers()["x-rls"],
            "fixture",
            "response_headers_to_add applied"
        );
        assert_eq!(ok.headers()["ratelimit-policy"], "\"per_user\";q=3;w=60");
    }
    let limited = get("alice");
    assert_eq!(limited.status(), 429);
    assert!(
        limited.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per_user\";r=0;t=")
    );
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(limited.headers()["x-rls"], "fixture");
    assert_eq!(rls.calls(), 4);
    // The OVER_LIMIT answer is remembered until its reset: refused without asking again (one
    // connection, so the same worker's memory answers).
    for _ in 0..5 {
        assert_eq!(get("alice").status(), 429);
    }
    assert_eq!(
        rls.calls(),
        4,
        "refusals in force do not hammer the service"
    );
    // Another user has their own count at the service.
    assert_eq!(get("bob").status(), 200);
    // What the service received, decoded with Envoy's own protos.
    let request = rls.requests().pop().unwrap();
    assert_eq!(request.domain, "meshgate");
    assert_eq!(request.hits_addend, 1);
    assert_eq!(request.descriptors.len(), 1);
    let entry = &request.descriptors[0].entries[0];
    assert_eq!((entry.key.as_str(), entry.value.as_str()), ("user", "bob"));
    // No x-user: the descriptor does not apply and the service is not asked.
    assert_eq!(client.get(envoy.url("wasm")).send().unwrap().status(), 200);
    assert_eq!(rls.calls(), 5);
    envoy.wait_for_stat("wasmcustom.rate_limit.rls_calls", |v| v == 5);
}

#[test]
fn rate_limit_service_down_fails_open_or_closed_as_configured() {
    let upstream = Echo::start();
    let closed_port = ports::free_port(); // nothing listens here
    let open = start_global(&global_config(json!({})), &upstream, closed_port);
    let response = http_client()
        .get(open.url("wasm"))
        .header("x-user", "a")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "fail open by default");
    open.wait_for_stat("wasmcustom.rate_limit.rls_errors", |v| v >= 1);

    let closed = start_global(
        &global_config(json!({"failure_mode_deny": true})),
        &upstream,
        closed_port,
    );
    let response = http_client()
        .get(closed.url("wasm"))
        .header("x-user", "a")
        .send()
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.text().unwrap(), "rate limit service unavailable\n");
}

#[test]
fn slow_rate_limit_service_times_out() {
    let redis = Redis::start();
    let rls = RlsServer::start(&redis, "meshgate", "user", 100);
    rls.set_delay(Duration::from_millis(800));
    let upstream = Echo::start();
    let envoy = start_global(
        &global_config(json!({"timeout": "0.05s"})),
        &upstream,
        rls.port(),
    );
    let started = std::time::Instant::now();
    let response = http_client()
        .get(envoy.url("wasm"))
        .header("x-user", "a")
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "fail open after the timeout");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "waited {:?}",
        started.elapsed()
    );
    envoy.wait_for_stat("wasmcustom.rate_limit.rls_errors", |v| v == 1);
}

/// `n` requests of the key `value` in header `header`, one at a time, `pause` apart.
fn requests_of(url: &str, header: &str, value: &str, n: usize, pause: Duration) -> Vec<u16> {
    (0..n)
        .flat_map(|i| {
            if i > 0 {
                std::thread::sleep(pause);
            }
            burst(url, 1, 1, &[(header, value)])
        })
        .collect()
}

#[test]
fn one_request_junk_keys_neither_pin_the_table_nor_raise_a_key_above_its_quota() {
    let upstream = Echo::start();
    // 3 tokens a minute per key; 4 keys → 8 slots.
    let config = json!({
        "max_keys": 4,
        "descriptors": [{"name": "per_key",
                         "entries": [{"request_header": {"header_name": "x-api-key", "descriptor_key": "key"}}],
                         "token_bucket": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "60s"}}]
    });
    let envoy = start_one(&config, &upstream);
    let url = envoy.url("wasm");
    // A burst of junk keys, one request each, then nothing: every slot holds a bucket that
    // is not full, for the whole minute.
    for i in 0..40 {
        let _ = burst(&url, 1, 1, &[("x-api-key", &format!("junk-{i}"))]);
    }
    // New clients still get a bucket (a slot whose bucket gave one token is reclaimed).
    for i in 0..5 {
        let key = format!("legit-{i}");
        assert_eq!(
            burst(&url, 1, 1, &[("x-api-key", &key)]),
            [200],
            "{key} was locked out by junk keys"
        );
    }
    // The attacker's own key, over 2.5 s: its quota, 3 a minute, whichever bucket it uses.
    let attacker = requests_of(
        &url,
        "x-api-key",
        "attacker",
        25,
        Duration::from_millis(100),
    );
    assert_eq!(count(&attacker, 200), 3, "{attacker:?}");
}

#[test]
fn a_key_is_not_handed_a_fresh_bucket_when_an_earlier_probed_slot_refills() {
    let upstream = Echo::start();
    // 8 keys → 16 slots, all probed by every key. Probe keys' buckets empty at once and are
    // full again a second later.
    let config = json!({
        "max_keys": 8,
        "descriptors": [
            {"name": "per_key", "entries": [{"request_header": {"header_name": "x-api-key", "descriptor_key": "key"}}],
             "token_bucket": {"max_tokens": 3, "tokens_per_fill": 3, "fill_interval": "60s"}},
            {"name": "per_probe", "entries": [{"request_header": {"header_name": "x-probe", "descriptor_key": "probe"}}],
             "token_bucket": {"max_tokens": 1, "fill_interval": "1s"}}
        ]
    });
    let envoy = start_one(&config, &upstream);
    let url = envoy.url("wasm");
    let keys = ["k0", "k1", "k2"];
    let mut admitted = [0usize; 3];
    for round in 0..4 {
        // Probe keys take most slots, so each key's bucket lands behind some of them.
        for i in 0..12 {
            let _ = burst(&url, 1, 1, &[("x-probe", &format!("p{round}-{i}"))]);
        }
        for (k, key) in keys.iter().enumerate() {
            admitted[k] += count(&burst(&url, 1, 2, &[("x-api-key", key)]), 200);
        }
        // The probe buckets refill: their slots may be taken over, but not by these keys.
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert_eq!(admitted, [3, 3, 3], "a key got more than 3 in a minute");
}
