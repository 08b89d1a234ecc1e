package meshgate.host_namespaces_test

import data.meshgate.host_namespaces

container := {"name": "app", "image": "i"}

test_host_network_is_denied if {
	host_namespaces.deny == {"the pod sets hostNetwork: true"} with input as {"object": {"spec": {"hostNetwork": true, "containers": [container]}}}
}

test_host_pid_and_ipc_are_both_reported if {
	count(host_namespaces.deny) == 2 with input as {"object": {"spec": {"hostPID": true, "hostIPC": true, "containers": [container]}}}
}

test_host_path_is_denied if {
	some msg in host_namespaces.deny with input as {"object": {"spec": {"containers": [container], "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}}
	msg == `volume "root" mounts hostPath /`
}

test_host_port_is_denied if {
	some msg in host_namespaces.deny with input as {"object": {"spec": {"containers": [object.union(container, {"ports": [{"containerPort": 80, "hostPort": 8080}]})]}}}
	contains(msg, "binds hostPort 8080")
}

test_plain_pod_is_allowed if {
	count(host_namespaces.deny) == 0 with input as {"object": {"spec": {"hostNetwork": false, "containers": [object.union(container, {"ports": [{"containerPort": 80}]})], "volumes": [{"name": "cache", "emptyDir": {}}]}}}
}
