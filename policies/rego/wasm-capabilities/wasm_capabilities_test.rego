package meshgate.wasm_capabilities_test

import data.meshgate.wasm_capabilities

parameters := {"network": ["edge"], "filesystem": ["storage", "edge"]}

facts(kind, imports) := {"digest": "sha256:00", "capabilities": {"kind": kind, "imports": imports, "exports": []}}

pod(namespace, images) := {
	"namespace": namespace,
	"object": {"kind": "Pod", "metadata": {"name": "p"}, "spec": {
		"containers": [{"name": "app", "image": "ghcr.io/acme/app:1"}],
		"initContainers": [{"name": "init", "image": "ghcr.io/acme/init:1"}],
	}},
	"images": images,
}

plugin(namespace, modules) := {
	"namespace": namespace,
	"object": {"kind": "WasmPlugin", "metadata": {"name": "hook"}, "spec": {"url": "oci://ghcr.io/acme/hook:1"}},
	"modules": modules,
}

module(kind, imports) := object.union(facts(kind, imports), {"url": "oci://ghcr.io/acme/hook:1", "source": "oci", "path": "/spec/url"})

quiet := facts("component", ["wasi:cli/environment@0.2.0", "wasi:io/streams@0.2.0"])

denials(request) := d if {
	d := wasm_capabilities.deny with input as request with data.parameters as parameters
}

test_component_sockets_are_network if {
	request := pod("apps", {"ghcr.io/acme/app:1": facts("component", ["wasi:sockets/tcp@0.2.0", "wasi:io/streams@0.2.0"]), "ghcr.io/acme/init:1": quiet})
	denials(request) == {"container \"app\" (image ghcr.io/acme/app:1) imports network capabilities (wasi:sockets/tcp@0.2.0), which namespace apps may not use (allowed: edge)"}
	count(denials(object.union(request, {"namespace": "edge"}))) == 0
}

test_network_imports_of_every_kind if {
	every name in [
		"wasi:sockets/ip-name-lookup@0.2.3",
		"wasi:http/outgoing-handler@0.2.0",
		"wasi:http/handler@0.3.0",
		"WASI:Sockets/udp@0.2.0",
		"wasi_snapshot_preview1/sock_accept",
		"wasi_snapshot_preview1/sock_open",
		"wasi_snapshot_preview1/sock_getaddrinfo",
		"wasi_unstable/sock_recv",
		"wasmedge_httpsreq/send_data",
		"env/proxy_http_call",
		"env/proxy_grpc_call",
	] {
		some msg in denials(pod("apps", {"ghcr.io/acme/app:1": facts("module", [name]), "ghcr.io/acme/init:1": quiet}))
		contains(msg, "imports network capabilities")
	}
}

test_filesystem_imports_of_every_kind if {
	every name in [
		"wasi:filesystem/types@0.2.0",
		"wasi:filesystem/preopens@0.2.0",
		"wasi_snapshot_preview1/path_open",
		"wasi_snapshot_preview1/path_unlink_file",
		"wasi_snapshot_preview1/fd_prestat_get",
		"wasi_snapshot_preview1/fd_prestat_dir_name",
		"wasi_snapshot_preview1/fd_readdir",
		"wasi_unstable/path_open",
	] {
		denials(pod("apps", {"ghcr.io/acme/app:1": facts("module", [name]), "ghcr.io/acme/init:1": quiet})) == {sprintf("container \"app\" (image ghcr.io/acme/app:1) imports filesystem capabilities (%s), which namespace apps may not use (allowed: storage, edge)", [name])}
	}
}

test_harmless_imports_are_not_counted if {
	every name in [
		"wasi_snapshot_preview1/fd_write",
		"wasi_snapshot_preview1/fd_read",
		"wasi_snapshot_preview1/environ_get",
		"wasi_snapshot_preview1/clock_time_get",
		"wasi:http/types@0.2.0",
		"wasi:http/incoming-handler@0.2.0",
		"wasi:cli/stdout@0.2.0",
		"env/proxy_log",
		"acme/sock_open",
		"env/path_open",
	] {
		count(denials(pod("apps", {"ghcr.io/acme/app:1": facts("module", [name]), "ghcr.io/acme/init:1": quiet}))) == 0
	}
}

test_both_capabilities_are_reported_in_order if {
	request := pod("apps", {
		"ghcr.io/acme/app:1": quiet,
		"ghcr.io/acme/init:1": facts("module", ["wasi_snapshot_preview1/sock_send", "wasi_snapshot_preview1/path_open", "wasi_snapshot_preview1/fd_write", "wasi_snapshot_preview1/sock_accept"]),
	})
	denials(request) == {
		"container \"init\" (image ghcr.io/acme/init:1) imports network capabilities (wasi_snapshot_preview1/sock_accept, wasi_snapshot_preview1/sock_send), which namespace apps may not use (allowed: edge)",
		"container \"init\" (image ghcr.io/acme/init:1) imports filesystem capabilities (wasi_snapshot_preview1/path_open), which namespace apps may not use (allowed: storage, edge)",
	}
	count(denials(object.union(request, {"namespace": "storage"}))) == 1
}

test_wildcard_allows_every_namespace if {
	request := pod("apps", {"ghcr.io/acme/app:1": facts("component", ["wasi:sockets/tcp@0.2.0", "wasi:filesystem/types@0.2.0"]), "ghcr.io/acme/init:1": quiet})
	count(wasm_capabilities.deny) == 0 with input as request with data.parameters as {"network": ["*"], "filesystem": ["*"]}
	count(wasm_capabilities.deny) == 2 with input as request
}

test_unchanged_images_are_skipped if {
	request := pod("apps", {"ghcr.io/acme/app:1": {"image": "ghcr.io/acme/app:1", "unchanged": true}, "ghcr.io/acme/init:1": quiet})
	count(denials(request)) == 0
}

test_missing_capabilities_deny_by_default if {
	request := pod("apps", {"ghcr.io/acme/app:1": {"digest": "sha256:00"}, "ghcr.io/acme/init:1": quiet})
	denials(request) == {"container \"app\" (image ghcr.io/acme/app:1): capabilities unknown (the webhook did not read its Wasm: imageVerification.artifactCheck: parse for images)"}
	count(denials(pod("apps", {}))) == 2
	count(wasm_capabilities.deny) == 2 with input as pod("apps", {}) with data.parameters as {"missingCapabilities": "deny-typo"}
}

test_missing_capabilities_can_warn_or_pass if {
	request := pod("apps", {"ghcr.io/acme/init:1": quiet})
	count(wasm_capabilities.deny) == 0 with input as request with data.parameters as {"missingCapabilities": "warn"}
	count(wasm_capabilities.warn) == 1 with input as request with data.parameters as {"missingCapabilities": "warn"}
	count(wasm_capabilities.deny) == 0 with input as request with data.parameters as {"missingCapabilities": "allow"}
	count(wasm_capabilities.warn) == 0 with input as request with data.parameters as {"missingCapabilities": "allow"}
	count(wasm_capabilities.warn) == 0 with input as request
}

test_extension_modules_are_judged if {
	request := plugin("apps", {"oci://ghcr.io/acme/hook:1": module("module", ["env/proxy_http_call", "env/proxy_log"])})
	denials(request) == {"module oci://ghcr.io/acme/hook:1 (at /spec/url) imports network capabilities (env/proxy_http_call), which namespace apps may not use (allowed: edge)"}
	count(denials(object.union(request, {"namespace": "edge"}))) == 0
}

test_every_module_of_an_envoyfilter_is_judged if {
	request := {
		"namespace": "apps",
		"object": {"kind": "EnvoyFilter", "metadata": {"name": "ef"}, "spec": {}},
		"modules": {
			"https://downloads.example.com/a.wasm": {"path": "/spec/configPatches/0/patch/value/typed_config/config/vm_config/code/remote/http_uri/uri", "capabilities": {"kind": "module", "imports": ["wasi_snapshot_preview1/path_open"]}},
			"inline:ab12": {"path": "/spec/configPatches/1/patch/value/typed_config/config/vm_config/code/local/inline_bytes", "capabilities": {"kind": "module", "imports": ["env/proxy_log"]}},
			"file:/etc/wasm/b.wasm": {"path": "/spec/configPatches/2/patch/value/typed_config/config/vm_config/code/local/filename"},
		},
	}
	denials(request) == {
		"module https://downloads.example.com/a.wasm (at /spec/configPatches/0/patch/value/typed_config/config/vm_config/code/remote/http_uri/uri) imports filesystem capabilities (wasi_snapshot_preview1/path_open), which namespace apps may not use (allowed: storage, edge)",
		"module file:/etc/wasm/b.wasm (at /spec/configPatches/2/patch/value/typed_config/config/vm_config/code/local/filename): capabilities unknown (the webhook did not read its Wasm: imageVerification.artifactCheck: parse for images)",
	}
}

test_a_wasmplugin_without_module_facts_is_unknown if {
	some msg in denials(plugin("edge", {}))
	msg == "module oci://ghcr.io/acme/hook:1 (at /spec/url): capabilities unknown (the webhook did not read its Wasm: imageVerification.artifactCheck: parse for images)"
	count(denials({"namespace": "edge", "object": {"kind": "WasmPlugin", "metadata": {"name": "hook"}, "spec": {"url": "oci://ghcr.io/acme/hook:1"}}})) == 1
}
