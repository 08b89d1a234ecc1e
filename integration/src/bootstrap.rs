//! Envoy bootstraps assembled from parts, for benchmarks and tests that need many listeners.

use serde_json::Value;

/// One HTTP filter of a listener's chain, as YAML-compatible JSON.
pub fn filter(name: &str, typed_config: Value) -> Value {
    serde_json::json!({"name": name, "typed_config": typed_config})
}

/// meshgate's jwt-auth (or any Wasm filter in `dist/`) with `configuration` as its plugin config.
pub fn wasm_filter(file: &str, vm_id: &str, configuration: &str) -> Value {
    filter(
        &format!("meshgate.{vm_id}"),
        serde_json::json!({
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": vm_id,
                "vm_config": {
                    "vm_id": vm_id,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": format!("{{{{dist}}}}/{file}")}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                }
            }
        }),
    )
}

/// A listener on `{{port:NAME}}` whose route answers 200 `ok` itself (no upstream), after
/// `filters`.
pub fn direct_listener(name: &str, filters: Vec<Value>) -> Value {
    listener(
        name,
        filters,
        serde_json::json!({"direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}),
    )
}

/// A listener on `{{port:NAME}}` routing everything to `cluster`, after `filters`.
pub fn routed_listener(name: &str, filters: Vec<Value>, cluster: &str) -> Value {
    listener(
        name,
        filters,
        serde_json::json!({"route": {"cluster": cluster}}),
    )
}

/// A static cluster of one endpoint on 127.0.0.1.
pub fn cluster(name: &str, port: u16) -> Value {
    serde_json::json!({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
        ]}]}
    })
}

/// A static HTTP/2 (h2c) cluster of one endpoint on 127.0.0.1, for gRPC services.
pub fn grpc_cluster(name: &str, port: u16) -> Value {
    let mut c = cluster(name, port);
    c["typed_extension_protocol_options"] = serde_json::json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}
        }
    });
    c
}

fn listener(name: &str, filters: Vec<Value>, action: Value) -> Value {
    let mut route = serde_json::json!({"match": {"prefix": "/"}});
    if let (Some(route), Some(action)) = (route.as_object_mut(), action.as_object()) {
        route.extend(action.clone());
    }
    let mut chain = filters;
    chain.push(filter(
        "envoy.filters.http.router",
        serde_json::json!({"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}),
    ));
    serde_json::json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": format!("{{{{port:{name}}}}}")}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{
                    "name": "all", "domains": ["*"],
                    "routes": [route]
                }]},
                "http_filters": chain
            }
        }]}]
    })
}

/// A whole bootstrap (JSON text, which is YAML) with these listeners and an admin port.
/// Ports are placeholders: quoted in JSON, so they are unquoted here for Envoy's integer fields.
pub fn bootstrap(listeners: Vec<Value>) -> String {
    bootstrap_with_clusters(listeners, Vec::new())
}

/// [`bootstrap`] with clusters.
pub fn bootstrap_with_clusters(listeners: Vec<Value>, clusters: Vec<Value>) -> String {
    let doc = serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": "{{admin_port}}"}}},
        "static_resources": {"listeners": listeners, "clusters": clusters}
    });
    unquote_ports(&doc.to_string())
}

/// `"{{port:NAME}}"` → `{{port:NAME}}` and `"{{admin_port}}"` → `{{admin_port}}`, nothing else.
fn unquote_ports(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut rest = json;
    while let Some(start) = rest.find("\"{{") {
        let candidate = &rest[start + 1..];
        let end = candidate.find("}}\"");
        let inner = end.map(|e| &candidate[2..e]);
        match (end, inner) {
            (Some(e), Some(inner))
                if (inner == "admin_port" || inner.starts_with("port:"))
                    && !inner.contains(['"', '{', '}', '\\']) =>
            {
                out.push_str(&rest[..start]);
                out.push_str(&candidate[..e + 2]);
                rest = &candidate[e + 3..];
            }
            _ => {
                out.push_str(&rest[..start + 3]);
                rest = &rest[start + 3..];
            }
        }
    }
    out.push_str(rest);
    out
}
