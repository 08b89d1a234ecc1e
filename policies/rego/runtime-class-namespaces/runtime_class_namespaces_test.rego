package meshgate.runtime_class_namespaces_test

import data.meshgate.runtime_class_namespaces

parameters := {"namespaces": {"edge": ["spin"], "*": ["wasmtime", "wasmedge"]}}

request(namespace, class) := {"namespace": namespace, "object": {"spec": {"runtimeClassName": class}}}

test_listed_namespace_uses_its_own_list if {
	count(runtime_class_namespaces.deny) == 0 with input as request("edge", "spin") with data.parameters as parameters
	count(runtime_class_namespaces.deny) == 1 with input as request("edge", "wasmtime") with data.parameters as parameters
}

test_other_namespaces_use_the_wildcard if {
	count(runtime_class_namespaces.deny) == 0 with input as request("default", "wasmedge") with data.parameters as parameters
	some msg in runtime_class_namespaces.deny with input as request("default", "spin") with data.parameters as parameters
	msg == "runtimeClassName spin is not allowed in namespace default (allowed: wasmtime, wasmedge)"
}

test_nothing_is_allowed_without_parameters if {
	count(runtime_class_namespaces.deny) == 1 with input as request("default", "wasmtime")
}
