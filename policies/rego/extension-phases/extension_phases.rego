# Which namespaces may attach Wasm to the proxies' filter chains, and in which phase.
#
# Parameters (`data.parameters`):
#   phases: map from phase (AUTHN, AUTHZ, STATS, UNSPECIFIED_PHASE) to the namespaces that may
#           use it; the key "*" applies to phases not listed. A namespace entry is a name, or
#           "*" for every namespace except the root namespace. No entry: nothing is allowed.
#   rootNamespace: Istio's root namespace (default istio-system). Plugins there apply to every
#           workload of the mesh, so it must be named explicitly: "*" does not cover it.
#
# The phase judged, per object kind:
#   WasmPlugin: spec.phase; absent or null is UNSPECIFIED_PHASE; a name in any case is read as
#     that phase (AUTHN for "authn"), an enum number as its name (1 → AUTHN); anything else is
#     denied as unknown.
#   EnvoyFilter: each patch whose value carries a Wasm filter (typed_config/typedConfig, or an
#     ECDS config_discovery, of type ...filters.http.wasm.v3.Wasm or ...filters.network.wasm.v3.Wasm,
#     directly or inside a udpa/xds TypedStruct) or holds a module the webhook found
#     (input.modules[...].path under the patch, however deeply nested), by where it goes: INSERT_BEFORE an
#     authentication filter (jwt_authn, istio_authn) is AUTHN, before an authorisation filter
#     (rbac, ext_authz) AUTHZ, before istio.stats STATS, before the router UNSPECIFIED_PHASE;
#     INSERT_AFTER one of them is the next phase. Every other place (INSERT_FIRST, an unknown
#     neighbour, ADD, REPLACE, MERGE, network filters, which see traffic before any HTTP
#     filter) is AUTHN: the earliest, so the strictest.
#   EnvoyExtensionPolicy: spec.wasm is AUTHZ (Envoy Gateway runs Wasm after its
#     authentication filters and before rbac).
package meshgate.extension_phases

phase_names := ["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]

default phases := {}

phases := data.parameters.phases

default root_namespace := "istio-system"

root_namespace := data.parameters.rootNamespace

namespace := input.namespace

object_name := sprintf("%s %s/%s", [input.object.kind, namespace, input.object.metadata.name])

# ---- WasmPlugin ----

default plugin_phase := null

plugin_phase := input.object.spec.phase

phase_of(p) := "UNSPECIFIED_PHASE" if p == null

phase_of(p) := upper(p) if {
	is_string(p)
	upper(p) in phase_names
}

phase_of(p) := phase_names[p] if is_number(p)

attachments contains {"what": "the plugin", "phase": phase} if {
	input.object.kind == "WasmPlugin"
	phase := phase_of(plugin_phase)
}

deny contains msg if {
	input.object.kind == "WasmPlugin"
	not phase_of(plugin_phase)
	msg := sprintf("%s: unknown phase %s (expected one of %s)", [object_name, json.marshal(plugin_phase), concat(", ", phase_names)])
}

# ---- EnvoyFilter ----

wasm_types := {"envoy.extensions.filters.http.wasm.v3.Wasm", "envoy.extensions.filters.network.wasm.v3.Wasm"}

typed_structs := {"udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"}

# Envoy resolves a type URL by its last segment, whatever the host before it.
type_name(url) := name if {
	parts := split(url, "/")
	name := parts[count(parts) - 1]
}

# The type names a patch value's filter configuration declares.
declared_types(value) := {t |
	some field in ["typed_config", "typedConfig"]
	config := value[field]
	some t in config_types(config)
} | {t |
	some field in ["config_discovery", "configDiscovery"]
	some urls in ["type_urls", "typeUrls"]
	some url in value[field][urls]
	t := type_name(url)
}

config_types(config) := {type_name(config["@type"])} | {type_name(url) |
	type_name(config["@type"]) in typed_structs
	some field in ["type_url", "typeUrl"]
	url := config[field]
}

carries_wasm(value) if {
	some t in declared_types(value)
	t in wasm_types
}

filter_phases := {
	"envoy.filters.http.jwt_authn": "AUTHN",
	"istio_authn": "AUTHN",
	"istio.authn": "AUTHN",
	"envoy.filters.http.rbac": "AUTHZ",
	"envoy.filters.http.ext_authz": "AUTHZ",
	"istio.stats": "STATS",
	"envoy.filters.http.router": "UNSPECIFIED_PHASE",
}

next_phase := {"AUTHN": "AUTHZ", "AUTHZ": "STATS", "STATS": "UNSPECIFIED_PHASE", "UNSPECIFIED_PHASE": "UNSPECIFIED_PHASE"}

default neighbour(_) := ""

neighbour(p) := p.match.listener.filterChain.filter.subFilter.name

default operation(_) := ""

operation(p) := p.patch.operation

# Where a Wasm patch goes: see the header. An HTTP filter placed by name keeps its neighbour's
# phase; any other place is the earliest.
patch_phase(p) := filter_phases[neighbour(p)] if {
	p.applyTo == "HTTP_FILTER"
	operation(p) == "INSERT_BEFORE"
}

patch_phase(p) := next_phase[filter_phases[neighbour(p)]] if {
	p.applyTo == "HTTP_FILTER"
	operation(p) == "INSERT_AFTER"
}

default placed_by_name(_) := false

placed_by_name(p) if {
	p.applyTo == "HTTP_FILTER"
	operation(p) in {"INSERT_BEFORE", "INSERT_AFTER"}
	filter_phases[neighbour(p)]
}

patch_phase(p) := "AUTHN" if not placed_by_name(p)

describe_patch(i, p) := sprintf("configPatches[%d] (a Wasm filter, %s %s)", [i, operation(p), neighbour(p)]) if neighbour(p) != ""

describe_patch(i, p) := sprintf("configPatches[%d] (a Wasm filter, %s %s)", [i, object.get(p, "applyTo", ""), operation(p)]) if neighbour(p) == ""

# A patch carries Wasm when its own filter is Wasm, or when the webhook found a module
# anywhere inside it (input.modules[...].path), however deeply nested.
patch_carries_wasm(_, p) if carries_wasm(p.patch.value)

patch_carries_wasm(i, _) if {
	some m in object.get(input, "modules", {})
	startswith(m.path, sprintf("/spec/configPatches/%d/", [i]))
}

attachments contains {"what": describe_patch(i, p), "phase": patch_phase(p)} if {
	input.object.kind == "EnvoyFilter"
	some i, p in input.object.spec.configPatches
	patch_carries_wasm(i, p)
}

# ---- EnvoyExtensionPolicy ----

attachments contains {"what": "spec.wasm (Envoy Gateway runs Wasm after authentication)", "phase": "AUTHZ"} if {
	input.object.kind == "EnvoyExtensionPolicy"
	count(input.object.spec.wasm) > 0
}

# ---- the decision ----

default namespaces_for(_) := []

namespaces_for(phase) := phases[phase]

namespaces_for(phase) := phases["*"] if not phases[phase]

may_use(phase) if namespace in namespaces_for(phase)

may_use(phase) if {
	"*" in namespaces_for(phase)
	namespace != root_namespace
}

allowed_text(phase) := "none" if count(namespaces_for(phase)) == 0

allowed_text(phase) := concat(", ", namespaces_for(phase)) if count(namespaces_for(phase)) > 0

root_note := " (the root namespace: its plugins apply mesh-wide, and \"*\" does not cover it)" if namespace == root_namespace

root_note := "" if namespace != root_namespace

deny contains msg if {
	some a in attachments
	not may_use(a.phase)
	msg := sprintf("%s: %s runs in phase %s, which namespace %s may not use%s (allowed: %s)", [object_name, a.what, a.phase, namespace, root_note, allowed_text(a.phase)])
}
