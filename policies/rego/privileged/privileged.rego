# No privileged containers and no privilege escalation on Wasm runtimes: a Wasm sandbox
# means nothing if its host process runs with the node's privileges. As the Pod Security
# Standards' "restricted" profile: every container (init and ephemeral too) must set
# `allowPrivilegeEscalation: false` explicitly, since Kubernetes allows escalation when it is
# unset, and none may be privileged.
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
	not c.securityContext.allowPrivilegeEscalation == false
	msg := sprintf("%s allows privilege escalation (securityContext.allowPrivilegeEscalation must be false)", [kubernetes.describe(c)])
}

deny contains msg if {
	some c in kubernetes.containers
	some capability in c.securityContext.capabilities.add
	upper(capability) in privileged_capabilities
	msg := sprintf("%s adds capability %s", [kubernetes.describe(c), capability])
}
