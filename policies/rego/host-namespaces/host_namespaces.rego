# No host namespaces, hostPath volumes or hostPort: each one reaches past the Wasm sandbox
# into the node.
package meshgate.host_namespaces

import data.meshgate.lib.kubernetes

deny contains msg if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	input.object.spec[field] == true
	msg := sprintf("the pod sets %s: true", [field])
}

deny contains msg if {
	some volume in input.object.spec.volumes
	volume.hostPath
	msg := sprintf("volume %q mounts hostPath %s", [volume.name, volume.hostPath.path])
}

deny contains msg if {
	some c in kubernetes.containers
	some port in c.ports
	port.hostPort > 0
	msg := sprintf("%s binds hostPort %d", [kubernetes.describe(c), port.hostPort])
}
