package meshgate.privileged_test

import data.meshgate.privileged

pod(container) := {"object": {"spec": {"runtimeClassName": "wasmtime", "containers": [container]}}}

restricted := {"allowPrivilegeEscalation": false}

test_privileged_container_is_denied if {
	msgs := privileged.deny with input as pod({"name": "app", "image": "i", "securityContext": {"privileged": true, "allowPrivilegeEscalation": false}})
	msgs == {`container "app" (image i) is privileged`}
}

test_privilege_escalation_is_denied if {
	some msg in privileged.deny with input as pod({"name": "app", "image": "i", "securityContext": {"allowPrivilegeEscalation": true}})
	contains(msg, "allows privilege escalation")
}

test_unset_privilege_escalation_is_denied if {
	msgs := privileged.deny with input as pod({"name": "app", "image": "i"})
	msgs == {`container "app" (image i) allows privilege escalation (securityContext.allowPrivilegeEscalation must be false)`}
	count(privileged.deny) == 1 with input as pod({"name": "app", "image": "i", "securityContext": {"privileged": false}})
	count(privileged.deny) == 1 with input as pod({"name": "app", "image": "i", "securityContext": {"allowPrivilegeEscalation": null}})
}

test_sys_admin_capability_is_denied if {
	some msg in privileged.deny with input as pod({"name": "app", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"add": ["sys_admin"]}}})
	contains(msg, "adds capability sys_admin")
}

test_privileged_init_container_is_denied if {
	input_pod := {"object": {"spec": {"containers": [{"name": "app", "image": "i", "securityContext": restricted}], "initContainers": [{"name": "setup", "image": "s", "securityContext": {"privileged": true, "allowPrivilegeEscalation": false}}]}}}
	count(privileged.deny) == 1 with input as input_pod
}

test_init_and_ephemeral_containers_must_forbid_escalation if {
	input_pod := {"object": {"spec": {
		"containers": [{"name": "app", "image": "i", "securityContext": restricted}],
		"initContainers": [{"name": "setup", "image": "s"}],
		"ephemeralContainers": [{"name": "debug", "image": "d", "securityContext": {}}],
	}}}
	msgs := privileged.deny with input as input_pod
	count(msgs) == 2
	some init in msgs
	contains(init, `container "setup"`)
	some ephemeral in msgs
	contains(ephemeral, `container "debug"`)
}

test_unprivileged_container_is_allowed if {
	count(privileged.deny) == 0 with input as pod({"name": "app", "image": "i", "securityContext": {"privileged": false, "allowPrivilegeEscalation": false}})
}

test_only_net_bind_service_may_be_added if {
	msgs := privileged.deny with input as pod({"name": "app", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"add": ["cap_net_bind_service", "SYS_PTRACE", 7]}}})
	msgs == {
		`container "app" (image i) adds capability SYS_PTRACE (only NET_BIND_SERVICE may be added)`,
		`container "app" (image i) adds capability 7 (only NET_BIND_SERVICE may be added)`,
	}
}

test_null_fields_count_as_unset if {
	count(privileged.deny) == 0 with input as {"object": {"spec": {
		"securityContext": {"seccompProfile": {"type": null}, "sysctls": [], "windowsOptions": {"hostProcess": null}},
		"containers": [{"name": "app", "image": "i", "securityContext": {"allowPrivilegeEscalation": false, "procMount": null, "seccompProfile": null}}],
	}}}
}
