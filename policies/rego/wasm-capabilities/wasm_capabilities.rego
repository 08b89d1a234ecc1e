# Network and filesystem capabilities of Wasm code, by namespace: pods' Wasm images
# (input.images[<image>].capabilities, when the webhook parsed the Wasm layer) and the modules of
# WasmPlugin, EnvoyFilter and EnvoyExtensionPolicy objects (input.modules[<url>].capabilities).
#
# Parameters (`data.parameters`):
#   network: namespaces whose Wasm may import network capabilities ("*" for all)
#   filesystem: namespaces whose Wasm may import filesystem capabilities ("*" for all)
#   missingCapabilities: what to do with code whose capabilities the webhook did not read (an
#     image without `capabilities`, a WasmPlugin url without facts): deny (the default; also
#     for any other value), warn, or allow.
#
# Network: component imports of wasi:sockets/* and wasi:http/outgoing-handler (and the
# WASI 0.3 wasi:http/handler and wasi:http/client, whose import sends requests); core-module
# imports of wasi_snapshot_preview1 (or wasi_unstable) sock_* — the preview-1 sock_accept,
# sock_recv, sock_send, sock_shutdown and WasmEdge's sock_open, sock_connect, sock_bind,
# sock_getaddrinfo, ... —, WasmEdge's wasmedge_httpsreq module, and the proxy-wasm calls out
# through the proxy's clusters: env/proxy_http_call, env/proxy_grpc_call, env/proxy_grpc_stream.
# Filesystem: component imports of wasi:filesystem/*; core-module imports of path_* (every
# preview-1 call that names a path), fd_prestat_get and fd_prestat_dir_name (finding the
# preopened directories) and fd_readdir (listing one). fd_read/fd_write and the other fd_*
# calls are not counted: they act on descriptors that only stdio, path_open or a socket give.
# Component names are compared in lower case and without their @version.
package meshgate.wasm_capabilities

import data.meshgate.lib.kubernetes

default network_namespaces := []

network_namespaces := data.parameters.network

default filesystem_namespaces := []

filesystem_namespaces := data.parameters.filesystem

default missing := "deny"

missing := data.parameters.missingCapabilities

default images := {}

images := input.images

default modules := {}

modules := input.modules

# ---- what is judged: {"what": how messages name it, "facts": facts, or null when none} ----

default skipped(_) := false

# An image an UPDATE kept was judged when it was admitted.
skipped(facts) if facts.unchanged == true

code contains {"what": kubernetes.describe(c), "facts": facts} if {
	some c in kubernetes.containers
	facts := object.get(images, c.image, null)
	not skipped(facts)
}

code contains {"what": describe_module(key, facts), "facts": facts} if {
	some key, facts in modules
}

# A WasmPlugin's module without facts: the webhook did not read it.
code contains {"what": sprintf("module %s (at /spec/url)", [url]), "facts": null} if {
	input.object.kind == "WasmPlugin"
	url := input.object.spec.url
	not modules[url]
}

describe_module(key, facts) := sprintf("module %s (at %s)", [key, facts.path]) if is_string(facts.path)

describe_module(key, facts) := sprintf("module %s", [key]) if not is_string(facts.path)

# ---- classification ----

default imports(_) := []

imports(facts) := facts.capabilities.imports

has_capabilities(facts) if is_object(facts.capabilities)

# A component import's interface: `wasi:sockets/tcp@0.2.0` → `wasi:sockets/tcp`.
interface(name) := lower(split(name, "@")[0])

network_interfaces := {"wasi:http/outgoing-handler", "wasi:http/handler", "wasi:http/client"}

network_prefixes := ["wasi:sockets/", "wasi_snapshot_preview1/sock_", "wasi_unstable/sock_", "wasmedge_httpsreq/"]

network_calls := {"env/proxy_http_call", "env/proxy_grpc_call", "env/proxy_grpc_stream"}

filesystem_prefixes := ["wasi:filesystem/", "wasi_snapshot_preview1/path_", "wasi_unstable/path_"]

filesystem_calls := {
	"wasi_snapshot_preview1/fd_prestat_get", "wasi_snapshot_preview1/fd_prestat_dir_name", "wasi_snapshot_preview1/fd_readdir",
	"wasi_unstable/fd_prestat_get", "wasi_unstable/fd_prestat_dir_name", "wasi_unstable/fd_readdir",
}

is_network(name) if interface(name) in network_interfaces

is_network(name) if name in network_calls

is_network(name) if {
	some prefix in network_prefixes
	startswith(interface(name), prefix)
}

is_filesystem(name) if name in filesystem_calls

is_filesystem(name) if {
	some prefix in filesystem_prefixes
	startswith(interface(name), prefix)
}

network_imports(facts) := sort([name | some name in imports(facts); is_network(name)])

filesystem_imports(facts) := sort([name | some name in imports(facts); is_filesystem(name)])

# ---- the decision ----

may(namespaces) if input.namespace in namespaces

may(namespaces) if "*" in namespaces

allowed_text(namespaces) := "none" if count(namespaces) == 0

allowed_text(namespaces) := concat(", ", namespaces) if count(namespaces) > 0

finding(what, kind, names, namespaces) := sprintf("%s imports %s capabilities (%s), which namespace %s may not use (allowed: %s)", [what, kind, concat(", ", names), input.namespace, allowed_text(namespaces)])

deny contains msg if {
	some c in code
	has_capabilities(c.facts)
	names := network_imports(c.facts)
	count(names) > 0
	not may(network_namespaces)
	msg := finding(c.what, "network", names, network_namespaces)
}

deny contains msg if {
	some c in code
	has_capabilities(c.facts)
	names := filesystem_imports(c.facts)
	count(names) > 0
	not may(filesystem_namespaces)
	msg := finding(c.what, "filesystem", names, filesystem_namespaces)
}

unknown contains sprintf("%s: capabilities unknown (the webhook did not read its Wasm: imageVerification.artifactCheck: parse for images)", [c.what]) if {
	some c in code
	not has_capabilities(c.facts)
}

deny contains msg if {
	not missing in {"warn", "allow"}
	some msg in unknown
}

warn contains msg if {
	missing == "warn"
	some msg in unknown
}
