use serde_json::json;

use super::*;

const HEX: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

#[test]
fn a_wasm_plugin_names_one_module_oci_by_default() {
    let plugin = json!({"spec": {"url": "registry.example/filters/auth:1", "sha256": HEX}});
    let found = find_modules(ExtensionKind::WasmPlugin, &plugin).unwrap();
    assert_eq!(
        found,
        [ModuleRef {
            key: "registry.example/filters/auth:1".into(),
            source: Source::Oci("registry.example/filters/auth:1".into()),
            path: "/spec/url".into(),
            sha256: Some(HEX.into()),
        }]
    );
    let http = json!({"spec": {"url": "https://filters.example/auth.wasm"}});
    let found = find_modules(ExtensionKind::WasmPlugin, &http).unwrap();
    assert_eq!(found[0].source.label(), "https");
    assert_eq!(found[0].sha256, None);
    let file = json!({"spec": {"url": "file:///etc/auth.wasm"}});
    assert_eq!(
        find_modules(ExtensionKind::WasmPlugin, &file).unwrap()[0].key,
        "file:/etc/auth.wasm"
    );
    for bad in [
        json!({"spec": {}}),
        json!({"spec": {"url": "ftp://x/y"}}),
        json!({"spec": {"url": "oci://r/x:1", "sha256": "abc"}}),
        json!({"spec": {"url": "oci://r/x:1", "sha256": 7}}),
    ] {
        assert!(
            find_modules(ExtensionKind::WasmPlugin, &bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn envoy_filter_modules_are_found_at_any_depth_in_either_spelling() {
    let filter = json!({"spec": {"configPatches": [
        {"applyTo": "HTTP_FILTER", "patch": {"operation": "INSERT_BEFORE", "value": {
            "name": "auth",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                "config": {"vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"remote": {
                    "http_uri": {"uri": "http://filters.example/a.wasm", "cluster": "c", "timeout": "5s"},
                    "sha256": HEX}}}}}}}},
        {"applyTo": "LISTENER", "patch": {"operation": "MERGE", "value": {"filterChains": [{"filters": [{
            "typedConfig": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct",
                "typeUrl": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
                "value": {"config": {"vmConfig": {"code": {"local": {"inlineBytes": "AGFzbQEAAAA="}}}}}}}]}]}}},
        {"applyTo": "HTTP_FILTER", "patch": {"value": {"typed_config": {"config": {"vm_config": {
            "runtime": "envoy.wasm.runtime.null", "code": {"local": {"inline_string": "envoy.wasm.stats"}}}}}}}},
        {"applyTo": "HTTP_FILTER", "patch": {"value": {"typed_config": {"config": {"vm_config": {
            "code": {"local": {"filename": "/etc/istio/x.wasm"}}}}}}}},
    ]}});
    let found = find_modules(ExtensionKind::EnvoyFilter, &filter).unwrap();
    let keys: Vec<_> = found.iter().map(|m| m.key.as_str()).collect();
    let empty_module_sha = "93a44bbb96c751218e4c00d479e4c14358122a389acca16205b1e4d0dc5f9476";
    assert_eq!(
        keys,
        [
            "http://filters.example/a.wasm".to_string(),
            format!("inline:{empty_module_sha}"),
            "builtin:envoy.wasm.stats".into(),
            "file:/etc/istio/x.wasm".into(),
        ]
    );
    assert_eq!(
        found[0].path,
        "/spec/configPatches/0/patch/value/typed_config/config/vm_config/code/remote/http_uri/uri"
    );
    assert_eq!(found[0].sha256.as_deref(), Some(HEX));
    assert_eq!(
        found[1].path,
        "/spec/configPatches/1/patch/value/filterChains/0/filters/0/typedConfig/value/config/vmConfig/code/local/inlineBytes"
    );
    assert_eq!(found[1].source, Source::Inline(b"\0asm\x01\0\0\0".to_vec()));
    // Remote code that is not http(s), or a vm_config without code, is refused.
    let odd = json!({"spec": {"configPatches": [{"patch": {"value": {"vm_config": {"code": {"remote": {"http_uri": {"uri": "file:///x"}}}}}}}]}});
    assert!(find_modules(ExtensionKind::EnvoyFilter, &odd).is_err());
    let no_code = json!({"spec": {"configPatches": [{"patch": {"value": {"vmConfig": {}}}}]}});
    assert!(find_modules(ExtensionKind::EnvoyFilter, &no_code).is_err());
}

#[test]
fn envoy_extension_policy_code_sources() {
    let policy = json!({"spec": {"wasm": [
        {"name": "a", "code": {"type": "Image", "image": {"url": "oci://r.example/a:1"}}},
        {"name": "b", "code": {"type": "HTTP", "http": {"url": "https://f.example/b.wasm", "sha256": HEX}}},
        {"name": "c", "code": {"type": "ConfigMap", "configMap": {"name": "x"}}},
        {"name": "d", "code": {"type": "Image", "image": {"url": "r.example/d@sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"}}},
    ]}});
    let found = find_modules(ExtensionKind::EnvoyExtensionPolicy, &policy).unwrap();
    assert_eq!(found[0].source, Source::Oci("r.example/a:1".into()));
    assert_eq!(found[0].path, "/spec/wasm/0/code/image/url");
    assert_eq!(found[1].source.label(), "https");
    assert!(matches!(found[2].source, Source::Unverifiable(_)));
    assert_eq!(found[3].source.label(), "oci");
}

#[test]
fn too_many_modules_are_refused() {
    let patches: Vec<_> = (0..=MAX_MODULES)
        .map(|i| json!({"patch": {"value": {"vm_config": {"code": {"remote": {"http_uri": {"uri": format!("http://f/{i}.wasm")}}}}}}}))
        .collect();
    let filter = json!({"spec": {"configPatches": patches}});
    let error = find_modules(ExtensionKind::EnvoyFilter, &filter).unwrap_err();
    assert!(error.0.contains("more than 16"), "{error}");
}

#[test]
fn ambiguous_spellings_and_sources_are_refused_as_istio_reads_one_of_them() {
    let code = |local: serde_json::Value| {
        json!({"spec": {"configPatches": [{"patch": {"value": {"typed_config": {"config": {
            "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": local}}}}}}}]}})
    };
    for (local, needle) in [
        (
            json!({"inline_bytes": "AGFzbQEAAAA=", "inlineBytes": "AGFzbQEAAAA="}),
            "both inline_bytes and inlineBytes",
        ),
        (
            json!({"inline_bytes": "AGFzbQEAAAA=", "inlineBytes": null}),
            "both inline_bytes and inlineBytes",
        ),
        (
            json!({"inline_bytes": "AGFzbQEAAAA=", "inline_string": "x"}),
            "more than one code source",
        ),
        (
            json!({"filename": "/etc/ok.wasm", "inline_bytes": "AGFzbQEAAAA="}),
            "more than one code source",
        ),
        (
            json!({"environment_variable": "WASM"}),
            "environment variable",
        ),
        (json!({"inline_bytes": null}), "local code without a source"),
    ] {
        let error = find_modules(ExtensionKind::EnvoyFilter, &code(local.clone())).unwrap_err();
        assert!(error.0.contains(needle), "{local}: {error}");
    }
    let both = json!({"spec": {"configPatches": [{"patch": {"value": {
        "vm_config": {"code": {"local": {"filename": "/a.wasm"}}},
        "vmConfig": {"code": {"local": {"filename": "/b.wasm"}}}}}}]}});
    assert!(find_modules(ExtensionKind::EnvoyFilter, &both).is_err());
    let remote_and_local = json!({"spec": {"configPatches": [{"patch": {"value": {"vm_config": {"code": {
        "remote": {"http_uri": {"uri": "http://f/a.wasm"}}, "local": {"filename": "/a.wasm"}}}}}}]}});
    assert!(find_modules(ExtensionKind::EnvoyFilter, &remote_and_local).is_err());
    // A NullVM plugin is named by inline_string and nothing else.
    let null_vm = json!({"spec": {"configPatches": [{"patch": {"value": {"vm_config": {
        "runtime": "envoy.wasm.runtime.null", "code": {"local": {"inline_bytes": "AGFzbQEAAAA="}}}}}}]}});
    assert!(find_modules(ExtensionKind::EnvoyFilter, &null_vm).is_err());
}

#[test]
fn extension_configs_discovered_outside_ads_are_refused() {
    let discovered = |source: serde_json::Value| {
        json!({"spec": {"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {"value": {
            "name": "x", "config_discovery": {"config_source": source,
                "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]}}}}]}})
    };
    let rest = json!({"api_config_source": {"api_type": "REST", "cluster_names": ["evil"]}});
    let error = find_modules(ExtensionKind::EnvoyFilter, &discovered(rest)).unwrap_err();
    assert!(error.0.contains("other than ADS"), "{error}");
    let file = json!({"path_config_source": {"path": "/tmp/x.yaml"}});
    assert!(find_modules(ExtensionKind::EnvoyFilter, &discovered(file)).is_err());
    let mixed = json!({"ads": {}, "path": "/tmp/x.yaml"});
    assert!(find_modules(ExtensionKind::EnvoyFilter, &discovered(mixed)).is_err());
    let ads = json!({"ads": {}, "resource_api_version": "V3"});
    assert_eq!(
        find_modules(ExtensionKind::EnvoyFilter, &discovered(ads)).unwrap(),
        []
    );
}

#[test]
fn sha256_is_taken_only_as_the_proxy_compares_it() {
    for bad in [HEX.to_uppercase(), format!("sha256:{HEX}")] {
        let plugin = json!({"spec": {"url": "oci://r/x:1", "sha256": bad}});
        assert!(find_modules(ExtensionKind::WasmPlugin, &plugin).is_err());
    }
    let shapes = json!({"spec": {"configPatches": {"0": {}}}});
    assert!(find_modules(ExtensionKind::EnvoyFilter, &shapes).is_err());
}
