//! The Envoy harness against real Envoy: start, serve, Wasm, stats, refusal, and `--mode validate`
//! of every config shipped under `envoy/`.

// Test helpers fail the test by panicking, with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate_integration::{Envoy, envoy::template_file, http_client, paths};

#[test]
fn serves_direct_response_with_and_without_a_wasm_filter() {
    let envoy = Envoy::builder(template_file("integration/templates/passthrough.yaml")).start();
    let client = http_client();
    for listener in ["plain", "passthrough"] {
        let response = client.get(envoy.url(listener)).send().unwrap();
        assert_eq!(response.status(), 200, "{listener}");
        assert_eq!(response.text().unwrap(), "ok\n", "{listener}");
    }
    // The Wasm VM really ran: Envoy counts the active V8 VM.
    let stats = envoy.stats();
    assert!(
        stats
            .get("wasm.envoy.wasm.runtime.v8.active")
            .copied()
            .unwrap_or(0)
            >= 1,
        "no active V8 VM in stats: {:?}",
        stats
            .iter()
            .filter(|(k, _)| k.starts_with("wasm"))
            .collect::<Vec<_>>()
    );
    assert_eq!(envoy.stat("http.plain.downstream_rq_2xx"), 1);
    assert_eq!(envoy.stat("http.passthrough.downstream_rq_2xx"), 1);
}

#[test]
fn refuses_a_broken_bootstrap_with_the_reason() {
    let broken = "admin: { address: { socket_address: { address: 127.0.0.1, port_value: {{admin_port}} } } }\n\
                  static_resources: { clusters: [ { name: x, no_such_field: 1 } ] }\n";
    let err = Envoy::builder(broken)
        .try_start()
        .err()
        .expect("Envoy must refuse an unknown field");
    assert!(
        err.contains("no_such_field"),
        "log does not name the field:\n{err}"
    );
}

#[test]
fn every_config_under_envoy_validates() {
    let dir = paths::repo_root().join("envoy");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let is_envoy_config = path.extension().is_some_and(|e| e == "yaml")
            && std::fs::read_to_string(&path)
                .unwrap()
                .contains("static_resources");
        if !is_envoy_config {
            continue;
        }
        let result = Envoy::builder(std::fs::read_to_string(&path).unwrap()).validate();
        if let Err(log) = result {
            panic!("{} does not validate:\n{log}", path.display());
        }
        checked += 1;
    }
    assert!(
        checked > 0,
        "no Envoy configs found under {}",
        dir.display()
    );
}
