package meshgate.extension_phases_test

import data.meshgate.extension_phases

parameters := {"phases": {"AUTHN": ["istio-system", "auth"], "AUTHZ": ["auth"], "*": ["*"]}}

plugin(namespace, spec) := {
	"namespace": namespace,
	"object": {"kind": "WasmPlugin", "metadata": {"name": "hook"}, "spec": spec},
}

denials(request) := d if {
	d := extension_phases.deny with input as request with data.parameters as parameters
}

wasm_filter := {"name": "x", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"}}

envoy_filter(namespace, patches) := {
	"namespace": namespace,
	"object": {"kind": "EnvoyFilter", "metadata": {"name": "ef"}, "spec": {"configPatches": patches}},
}

http_patch(operation, neighbour, value) := {
	"applyTo": "HTTP_FILTER",
	"match": {"listener": {"filterChain": {"filter": {"name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": neighbour}}}}},
	"patch": {"operation": operation, "value": value},
}

test_listed_namespaces_use_their_phases if {
	count(denials(plugin("auth", {"phase": "AUTHN"}))) == 0
	count(denials(plugin("istio-system", {"phase": "AUTHN"}))) == 0
	count(denials(plugin("auth", {"phase": "AUTHZ"}))) == 0
}

test_other_namespaces_are_denied_with_the_object_named if {
	denials(plugin("apps", {"phase": "AUTHN"})) == {"WasmPlugin apps/hook: the plugin runs in phase AUTHN, which namespace apps may not use (allowed: istio-system, auth)"}
}

test_unlisted_phases_use_the_wildcard if {
	count(denials(plugin("apps", {"phase": "STATS"}))) == 0
	count(denials(plugin("apps", {}))) == 0
}

test_absent_or_null_phase_is_unspecified if {
	strict := {"phases": {"UNSPECIFIED_PHASE": ["edge"]}}
	count(extension_phases.deny) == 1 with input as plugin("apps", {}) with data.parameters as strict
	count(extension_phases.deny) == 1 with input as plugin("apps", {"phase": null}) with data.parameters as strict
	count(extension_phases.deny) == 0 with input as plugin("edge", {"phase": null}) with data.parameters as strict
}

test_lowercase_and_numeric_phases_are_judged_as_their_phase if {
	some msg in denials(plugin("apps", {"phase": "authn"}))
	contains(msg, "runs in phase AUTHN")
	some msg2 in denials(plugin("apps", {"phase": 1}))
	contains(msg2, "runs in phase AUTHN")
	count(denials(plugin("apps", {"phase": 3}))) == 0
}

test_unknown_phases_are_denied if {
	some msg in denials(plugin("auth", {"phase": "AUTHENTICATE"}))
	msg == "WasmPlugin auth/hook: unknown phase \"AUTHENTICATE\" (expected one of UNSPECIFIED_PHASE, AUTHN, AUTHZ, STATS)"
	count(denials(plugin("auth", {"phase": 7}))) == 1
	count(denials(plugin("auth", {"phase": ""}))) == 1
}

test_wildcard_does_not_cover_the_root_namespace if {
	some msg in denials(plugin("istio-system", {"phase": "STATS"}))
	contains(msg, "the root namespace")
	named := {"phases": {"*": ["*", "istio-system"]}}
	count(extension_phases.deny) == 0 with input as plugin("istio-system", {"phase": "STATS"}) with data.parameters as named
	moved := {"phases": {"*": ["*"]}, "rootNamespace": "mesh-root"}
	count(extension_phases.deny) == 0 with input as plugin("istio-system", {"phase": "STATS"}) with data.parameters as moved
	count(extension_phases.deny) == 1 with input as plugin("mesh-root", {"phase": "STATS"}) with data.parameters as moved
}

test_nothing_is_allowed_without_parameters if {
	count(extension_phases.deny) == 1 with input as plugin("istio-system", {"phase": "STATS"})
}

test_envoyfilter_before_jwt_authn_is_authn if {
	request := envoy_filter("apps", [http_patch("INSERT_BEFORE", "envoy.filters.http.jwt_authn", wasm_filter)])
	denials(request) == {"EnvoyFilter apps/ef: configPatches[0] (a Wasm filter, INSERT_BEFORE envoy.filters.http.jwt_authn) runs in phase AUTHN, which namespace apps may not use (allowed: istio-system, auth)"}
}

test_envoyfilter_positions if {
	after_authn := envoy_filter("apps", [http_patch("INSERT_AFTER", "envoy.filters.http.jwt_authn", wasm_filter)])
	some msg in denials(after_authn)
	contains(msg, "runs in phase AUTHZ")
	count(denials(envoy_filter("apps", [http_patch("INSERT_BEFORE", "envoy.filters.http.router", wasm_filter)]))) == 0
	count(denials(envoy_filter("apps", [http_patch("INSERT_AFTER", "envoy.filters.http.rbac", wasm_filter)]))) == 0
}

test_envoyfilter_unknown_places_are_the_earliest_phase if {
	count(denials(envoy_filter("apps", [http_patch("INSERT_FIRST", "envoy.filters.http.router", wasm_filter)]))) == 1
	count(denials(envoy_filter("apps", [http_patch("INSERT_BEFORE", "acme.custom", wasm_filter)]))) == 1
	count(denials(envoy_filter("apps", [{"applyTo": "NETWORK_FILTER", "patch": {"operation": "INSERT_FIRST", "value": {"typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"}}}}]))) == 1
	count(denials(envoy_filter("apps", [{"applyTo": "HTTP_FILTER", "patch": {"value": wasm_filter}}]))) == 1
}

test_envoyfilter_wasm_is_found_however_it_is_spelt if {
	every value in [
		{"typedConfig": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"}},
		{"typed_config": {"@type": "example.com/envoy.extensions.filters.http.wasm.v3.Wasm"}},
		{"typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"}},
		{"typed_config": {"@type": "type.googleapis.com/xds.type.v3.TypedStruct", "typeUrl": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"}},
		{"config_discovery": {"type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"]}},
		{"configDiscovery": {"typeUrls": ["type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"]}},
	] {
		count(denials(envoy_filter("apps", [http_patch("INSERT_BEFORE", "envoy.filters.http.jwt_authn", value)]))) == 1
	}
}

test_envoyfilter_without_wasm_is_not_judged if {
	lua := {"typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}}
	count(denials(envoy_filter("apps", [http_patch("INSERT_FIRST", "envoy.filters.http.router", lua)]))) == 0
	struct := {"typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}}
	count(denials(envoy_filter("apps", [http_patch("INSERT_FIRST", "envoy.filters.http.router", struct)]))) == 0
}

test_each_wasm_patch_is_judged if {
	request := envoy_filter("auth", [
		http_patch("INSERT_BEFORE", "envoy.filters.http.jwt_authn", wasm_filter),
		http_patch("INSERT_BEFORE", "envoy.filters.http.router", wasm_filter),
		http_patch("INSERT_FIRST", "envoy.filters.http.router", wasm_filter),
	])
	count(denials(request)) == 0
	denials(envoy_filter("apps", [
		http_patch("INSERT_BEFORE", "envoy.filters.http.router", wasm_filter),
		http_patch("INSERT_FIRST", "envoy.filters.http.router", wasm_filter),
	])) == {"EnvoyFilter apps/ef: configPatches[1] (a Wasm filter, INSERT_FIRST envoy.filters.http.router) runs in phase AUTHN, which namespace apps may not use (allowed: istio-system, auth)"}
}

test_envoy_extension_policy_wasm_is_authz if {
	policy := {"namespace": "apps", "object": {"kind": "EnvoyExtensionPolicy", "metadata": {"name": "eep"}, "spec": {"wasm": [{"code": {"type": "Image"}}]}}}
	denials(policy) == {"EnvoyExtensionPolicy apps/eep: spec.wasm (Envoy Gateway runs Wasm after authentication) runs in phase AUTHZ, which namespace apps may not use (allowed: auth)"}
	no_wasm := {"namespace": "apps", "object": {"kind": "EnvoyExtensionPolicy", "metadata": {"name": "eep"}, "spec": {"extProc": []}}}
	count(denials(no_wasm)) == 0
}

test_pods_are_not_judged if {
	count(denials({"namespace": "apps", "object": {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}})) == 0
}

test_envoyfilter_patches_holding_a_module_are_judged if {
	matcher := {"name": "m", "typed_config": {
		"@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher",
		"extension_config": {"typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"}},
	}}
	request := envoy_filter("apps", [
		http_patch("INSERT_BEFORE", "envoy.filters.http.router", wasm_filter),
		http_patch("INSERT_BEFORE", "envoy.filters.http.jwt_authn", matcher),
	])
	count(denials(request)) == 0
	found := object.union(request, {"modules": {"https://x/m.wasm": {"path": "/spec/configPatches/1/patch/value/typed_config/extension_config/typed_config/config/vm_config/code/remote/http_uri/uri"}}})
	denials(found) == {"EnvoyFilter apps/ef: configPatches[1] (a Wasm filter, INSERT_BEFORE envoy.filters.http.jwt_authn) runs in phase AUTHN, which namespace apps may not use (allowed: istio-system, auth)"}
	elsewhere := object.union(request, {"modules": {"https://x/m.wasm": {"path": "/spec/configPatches/10/patch/value"}}})
	count(denials(elsewhere)) == 0
}
