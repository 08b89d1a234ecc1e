use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.yaml", Path::new("/etc/meshgate"))
}

#[test]
fn defaults_cover_every_wasm_runtime() {
    let config = parse("{}").unwrap();
    assert_eq!(config.listen.port(), 8443);
    assert!(config.runtime_classes.contains("spin"));
    assert_eq!(config.runtime_classes.len(), 7);
    assert_eq!(config.failure_policy, FailurePolicy::Fail);
    assert_eq!(config.limits.max_body_bytes, 3 * 1024 * 1024);
}

#[test]
fn bad_field_is_reported_with_its_path() {
    let text = r#"
policies:
  - name: a
    rego: {files: [a.rego]}
  - name: b
    rego: {files: [b.rego]}
  - name: c
    rego: {files: [c.rego]}
    mode: block
"#;
    let err = parse(text).unwrap_err().to_string();
    assert!(
        err.contains("policies[2].mode: unknown variant `block`"),
        "{err}"
    );
}

#[test]
fn unknown_fields_and_missing_sources_are_refused() {
    let err = parse("listen: 127.0.0.1:1\nlisten_addr: x\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `listen_addr`"), "{err}");
    let err = parse("policies: [{name: a}]").unwrap_err().to_string();
    assert!(
        err.contains("policies[0]: exactly one of rego, gatekeeper, wasm"),
        "{err}"
    );
    let err = parse("policies: [{name: a, rego: {files: [x]}}, {name: a, rego: {files: [y]}}]")
        .unwrap_err()
        .to_string();
    assert!(err.contains("policies[1].name: duplicate"), "{err}");
    let err = parse("tls: {certFile: a.pem}").unwrap_err().to_string();
    assert!(err.contains("certFile and keyFile"), "{err}");
}

#[test]
fn front_door_limits_and_client_ca_are_checked() {
    let config = parse("probeListen: 127.0.0.1:8081\ntls: {clientCaFile: ca/api.crt}").unwrap();
    assert_eq!(
        config.limits.max_bytes_in_flight,
        4 * config.limits.max_body_bytes
    );
    assert_eq!(config.limits.max_json_values, 50_000);
    assert_eq!(config.limits.max_connections, 1024);
    assert_eq!(config.limits.handshake_timeout, Duration::from_secs(5));
    assert_eq!(config.limits.idle_timeout, Duration::from_secs(5));
    assert_eq!(config.limits.body_read_timeout, Duration::from_secs(2));
    assert_eq!(
        config.tls.client_ca_file.as_deref(),
        Some(Path::new("/etc/meshgate/ca/api.crt"))
    );
    assert_eq!(config.probe_listen.map(|a| a.port()), Some(8081));
    for (limits, error) in [
        (
            "{maxBodyBytes: 2000, maxBytesInFlight: 1000}",
            "limits.maxBytesInFlight: must be at least limits.maxBodyBytes",
        ),
        ("{maxBytesInFlight: 8589934592}", "must be below 4Gi"),
        ("{maxJsonValues: 0}", "maxJsonValues must be at least 1"),
        (
            "{maxConnections: 0}",
            "limits.maxConnections: must be greater than zero",
        ),
        (
            "{idleTimeout: 0s}",
            "limits.idleTimeout: must be greater than zero",
        ),
    ] {
        let err = parse(&format!("limits: {limits}")).unwrap_err().to_string();
        assert!(err.contains(error), "{limits}: {err}");
    }
}

#[test]
fn relative_paths_resolve_against_the_config_file() {
    let config = parse("policies: [{name: a, rego: {files: [p/a.rego]}, timeout: 250ms}]").unwrap();
    let policy = &config.policies[0];
    assert_eq!(
        match &policy.source {
            PolicySource::Rego(rego) => rego.files[0].clone(),
            other => panic!("{other:?}"),
        },
        PathBuf::from("/etc/meshgate/p/a.rego")
    );
    assert_eq!(policy.timeout, Some(Duration::from_millis(250)));
}

#[test]
fn wasm_sources_and_quantities_are_checked() {
    let config = parse(
            "wasm: {cacheDir: cache, cacheKeyFile: key}\npolicies: [{name: a, wasm: {file: p.wasm, memoryLimit: 16Mi}, settings: {x: 1}}]",
        )
        .unwrap();
    let wasm = config.policies[0].source.wasm().unwrap();
    assert_eq!(wasm.memory_limit, Quantity(16 << 20));
    assert_eq!(
        wasm.file.as_deref(),
        Some(Path::new("/etc/meshgate/p.wasm"))
    );
    assert_eq!(
        config.policies[0].parameters,
        Some(serde_json::json!({"x": 1}))
    );
    assert_eq!(
        config.wasm.cache_dir.as_deref(),
        Some(Path::new("/etc/meshgate/cache"))
    );
    assert_eq!(
        config.wasm.cache_key_file.as_deref(),
        Some(Path::new("/etc/meshgate/key"))
    );
    assert_eq!(Quantity::parse("1Gi"), Ok(Quantity(1 << 30)));
    assert_eq!(Quantity::parse("4096"), Ok(Quantity(4096)));
    for (policy, error) in [
        (
            "{file: a, image: b}",
            "policies[0].wasm: exactly one of file, image",
        ),
        ("{}", "policies[0].wasm: exactly one of file, image"),
        (
            "{image: r/p:1}",
            "policies[0].wasm.image: a policy image needs imageVerification",
        ),
        (
            "{file: a, memoryLimit: 64MB}",
            "policies[0].wasm.memoryLimit",
        ),
        ("{file: a, memoryLimit: 1Ki}", "at least one Wasm page"),
        (
            "{file: a, fuel: 0}",
            "policies[0].wasm.fuel: must be greater than zero",
        ),
    ] {
        let err = parse(&format!("policies: [{{name: a, wasm: {policy}}}]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(error), "{policy}: {err}");
    }
}

#[test]
fn trust_rules_are_checked_and_require_counts_keys() {
    let base = "imageVerification:\n  keys: [{name: a, pem: x}, {name: b, file: b.pub}]\n";
    let config = parse(&format!(
        "{base}  trust:\n    - {{name: t, images: ['ghcr.io/**'], keys: [a, b], require: 2}}\n\
             \x20   - {{name: u, images: ['*/x'], keys: [a, b], require: all}}\n\
             \x20   - {{name: v, images: ['**'], keys: [a, b]}}\n"
    ))
    .unwrap();
    let images = config.image_verification.unwrap();
    let needed: Vec<usize> = images
        .trust
        .iter()
        .map(|r| r.require.needed(r.keys.len()))
        .collect();
    assert_eq!(needed, vec![2, 2, 1]);
    assert_eq!(
        images.keys[1].file.as_deref(),
        Some(Path::new("/etc/meshgate/b.pub"))
    );
    for (trust, error) in [
        (
            "[{name: t, images: [x], keys: [c]}]",
            "trust[0].keys[0]: no key named c",
        ),
        (
            "[{name: t, images: [x], keys: [a], require: 2}]",
            "trust[0].require",
        ),
        ("[]", "imageVerification.trust: must list at least one rule"),
        (
            "[{name: t, images: [x], keys: [a], require: some}]",
            "trust[0]",
        ),
    ] {
        let err = parse(&format!("{base}  trust: {trust}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(error), "{trust}: {err}");
    }
    let err = parse("imageVerification: {keys: [{name: a}], trust: [{name: t, images: [x]}]}")
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one of file, pem"), "{err}");
}

#[test]
fn images_fail_closed_unless_their_own_section_says_ignore() {
    let section = "imageVerification: {keys: [], trust: [{name: t, images: ['**']";
    // The server's Ignore is for policy errors; it does not reach images.
    let config = parse(&format!("failurePolicy: Ignore\n{section}}}]}}")).unwrap();
    let images = config.image_verification.unwrap();
    assert_eq!(images.failure_policy, FailurePolicy::Fail);
    assert_eq!(images.on_update, OnUpdate::ChangedImages);
    assert!(!images.trust[0].require_digest);
    let config = parse(&format!(
        "{section}, requireDigest: true}}], failurePolicy: Ignore, onUpdate: allImages}}"
    ))
    .unwrap();
    let images = config.image_verification.unwrap();
    assert_eq!(images.failure_policy, FailurePolicy::Ignore);
    assert_eq!(images.on_update, OnUpdate::AllImages);
    assert!(images.trust[0].require_digest);
    let err = parse(&format!("{section}}}], onUpdate: never}}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("imageVerification.onUpdate"), "{err}");
}

#[test]
fn namespace_selectors_are_compiled_once_and_exclude_wins() {
    let config = parse(
        "policies: [{name: a, rego: {files: [a.rego]}, namespaces: {include: ['team-*'], exclude: [team-x]}}]",
    )
    .unwrap();
    let namespaces = &config.policies[0].namespaces;
    assert!(namespaces.applies_to("team-a"));
    assert!(!namespaces.applies_to("team-x"), "exclude wins");
    assert!(!namespaces.applies_to("default"));
    assert!(
        parse("policies: [{name: a, rego: {files: [a.rego]}}]")
            .unwrap()
            .policies[0]
            .namespaces
            .applies_to("anything")
    );
    let err = parse("policies: [{name: a, rego: {files: [a.rego]}, namespaces: {include: [a], exclude: ['[']}}]")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("policies[0].namespaces[1]: invalid glob"),
        "{err}"
    );
}

#[test]
fn attestations_need_a_predicate_type_and_an_identity_to_sign_them() {
    let base = "imageVerification:\n  keys: [{name: a, pem: x}]\n  identities: [{name: ci, subject: s, issuer: i}]\n";
    for (rule, error) in [
        (
            "{name: r, images: ['**'], keys: [a], attestations: [t]}",
            "trust[0].attestations[0]: an attestation must be signed by one of the rule's identities",
        ),
        (
            "{name: r, images: ['**'], identities: [ci], attestations: ['']}",
            "trust[0].attestations[0]: must name a predicate type",
        ),
        (
            "{name: r, images: ['**'], identities: [ci], attestations: ['https://sigstore.dev/cosign/sign/v1']}",
            "trust[0].attestations[0]: is the predicate type of image signatures",
        ),
    ] {
        let err = parse(&format!("{base}  trust: [{rule}]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(error), "{rule}: {err}");
    }
    let config = parse(&format!(
        "{base}  trust: [{{name: r, images: ['**'], identities: [ci], attestations: [https://slsa.dev/provenance/v1]}}]\n"
    ))
    .unwrap();
    assert_eq!(
        config.image_verification.unwrap().trust[0].attestations,
        vec!["https://slsa.dev/provenance/v1"]
    );
}

#[test]
fn policies_judge_pods_unless_kinds_say_otherwise() {
    let config = parse(
        r#"
policies:
  - {name: pods, rego: {files: [a.rego]}}
  - {name: plugins, rego: {files: [a.rego]}, kinds: [WasmPlugin, EnvoyFilter]}
  - {name: all, wasm: {file: p.wasm}, kinds: ["*"]}
  - {name: gk, gatekeeper: {template: t.yaml, constraint: c.yaml}}
"#,
    )
    .unwrap();
    let kinds: Vec<_> = config.policies.iter().map(|p| &p.kinds).collect();
    assert_eq!(kinds[0], &PolicyKinds::Only(vec!["Pod".into()]));
    assert!(kinds[1].contains("EnvoyFilter") && !kinds[1].contains("Pod"));
    assert_eq!(kinds[2], &PolicyKinds::All);
    assert_eq!(kinds[3], &PolicyKinds::All, "a Constraint's match decides");
    let error = parse("policies: [{name: x, rego: {files: [a.rego]}, kinds: [Deployment]}]")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("policies[0].kinds[0]: unknown kind Deployment"),
        "{error}"
    );
}

#[test]
fn extensions_and_runtimes_are_checked() {
    let error = parse("extensions: {httpHosts: [\"https://x.example/\"]}")
        .unwrap_err()
        .to_string();
    assert!(error.contains("extensions.httpHosts[0]"), "{error}");
    let error = parse("runtimes: {spin: {layouts: [docker]}}")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("runtimes.spin.layouts[0]: unknown layout docker"),
        "{error}"
    );
    let error = parse("runtimes: {spin: {modules: [component]}}")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("needs imageVerification.artifactCheck: parse"),
        "{error}"
    );
    let config = parse("extensions: {httpHosts: [\"filters.example:*\"]}\nruntimes: {spin: {handler: spin, layouts: [spin]}}").unwrap();
    assert_eq!(config.extensions.http_hosts, ["filters.example:*"]);
    assert_eq!(config.runtimes["spin"].handler.as_deref(), Some("spin"));
}
