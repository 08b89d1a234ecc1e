# No privileged containers and no privilege escalation on Wasm runtimes: a Wasm sandbox
# means nothing if its host process runs with the node's privileges.
package meshgate.privileged

import data.meshgate.lib.kubernetes

# Capabilities that amount to root on the node.
privileged_capabilities := {"ALL", "SYS_ADMIN", "CAP_SYS_ADMIN"}

deny contains msg if {
	some c in kubernetes.containers
	c.securityContext.privileged == true
	msg := sprintf("%s is privileged", [kubernetes.describe(c)])
}

deny contains msg if {
	some c in kubernetes.containers
	c.securityContext.allowPrivilegeEscalation == true
	msg := sprintf("%s allows privilege escalation", [kubernetes.describe(c)])
}

deny contains msg if {
	some c in kubernetes.containers
	some capability in c.securityContext.capabilities.add
	upper(capability) in privileged_capabilities
	msg := sprintf("%s adds capability %s", [kubernetes.describe(c), capability])
}
