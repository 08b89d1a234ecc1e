package meshgate.privileged_test

import data.meshgate.privileged

pod(container) := {"object": {"spec": {"runtimeClassName": "wasmtime", "containers": [container]}}}

test_privileged_container_is_denied if {
	msgs := privileged.deny with input as pod({"name": "app", "image": "i", "securityContext": {"privileged": true}})
	msgs == {`container "app" (image i) is privileged`}
}

test_privilege_escalation_is_denied if {
	some msg in privileged.deny with input as pod({"name": "app", "image": "i", "securityContext": {"allowPrivilegeEscalation": true}})
	contains(msg, "allows privilege escalation")
}

test_sys_admin_capability_is_denied if {
	some msg in privileged.deny with input as pod({"name": "app", "image": "i", "securityContext": {"capabilities": {"add": ["sys_admin"]}}})
	contains(msg, "adds capability sys_admin")
}

test_privileged_init_container_is_denied if {
	input_pod := {"object": {"spec": {"containers": [{"name": "app", "image": "i"}], "initContainers": [{"name": "setup", "image": "s", "securityContext": {"privileged": true}}]}}}
	count(privileged.deny) == 1 with input as input_pod
}

test_unprivileged_container_is_allowed if {
	count(privileged.deny) == 0 with input as pod({"name": "app", "image": "i", "securityContext": {"privileged": false, "allowPrivilegeEscalation": false}})
}
