# No privileged containers and no privilege escalation on Wasm runtimes: a Wasm sandbox
# means nothing if its host process runs with the node's privileges. From the Pod Security
# Standards' "restricted" profile: every container (init and ephemeral too) must set
# `allowPrivilegeEscalation: false` explicitly, since Kubernetes allows escalation when it is
# unset, none may be privileged, and none may add a capability other than NET_BIND_SERVICE.
# From the "baseline" profile: /proc stays masked, only the safe sysctls, no Unconfined
# seccomp, no Windows HostProcess. Dropping ALL capabilities is not required.
package meshgate.privileged

import data.meshgate.lib.kubernetes

# The one capability a container may add: any other (SYS_MODULE, SYS_PTRACE, BPF, ...) is
# a way to root on the node.
addable_capability := "NET_BIND_SERVICE"

# The Pod Security Standards' safe sysctls (Kubernetes 1.32): namespaced and isolated from
# other pods. Names are compared exactly, so `kernel/core_pattern` is not safe either.
safe_sysctls := {
	"kernel.shm_rmid_forced",
	"net.ipv4.ip_local_port_range",
	"net.ipv4.ip_local_reserved_ports",
	"net.ipv4.ip_unprivileged_port_start",
	"net.ipv4.ping_group_range",
	"net.ipv4.tcp_fin_timeout",
	"net.ipv4.tcp_keepalive_intvl",
	"net.ipv4.tcp_keepalive_probes",
	"net.ipv4.tcp_keepalive_time",
	"net.ipv4.tcp_rmem",
	"net.ipv4.tcp_syncookies",
	"net.ipv4.tcp_wmem",
}

# Seccomp profile types that confine: anything else set (Unconfined) is denied.
confining_seccomp := {"RuntimeDefault", "Localhost"}

pod_security_context := input.object.spec.securityContext

# Bound once here: regorus' VM looks a rule of another package up again on every reference.
containers := kubernetes.containers

deny contains msg if {
	some c in containers
	c.securityContext.privileged == true
	msg := sprintf("%s is privileged", [kubernetes.describe(c)])
}

deny contains msg if {
	some c in containers
	not c.securityContext.allowPrivilegeEscalation == false
	msg := sprintf("%s allows privilege escalation (securityContext.allowPrivilegeEscalation must be false)", [kubernetes.describe(c)])
}

# Spelled as the container runtime reads it: any case, with or without `CAP_`.
addable(capability) if {
	is_string(capability)
	trim_prefix(upper(capability), "CAP_") == addable_capability
}

deny contains msg if {
	some c in containers
	some capability in c.securityContext.capabilities.add
	not addable(capability)
	msg := sprintf("%s adds capability %v (only NET_BIND_SERVICE may be added)", [kubernetes.describe(c), capability])
}

# Unmasked exposes the host's /proc (sysrq-trigger, kcore) to the container.
deny contains msg if {
	some c in containers
	mount := c.securityContext.procMount
	mount != null
	mount != "Default"
	msg := sprintf("%s sets procMount %v (only Default is allowed)", [kubernetes.describe(c), mount])
}

deny contains msg if {
	some sysctl in pod_security_context.sysctls
	not sysctl.name in safe_sysctls
	msg := sprintf("pod sets sysctl %v (not in the Pod Security Standards' safe set)", [sysctl.name])
}

deny contains msg if {
	kind := pod_security_context.seccompProfile.type
	kind != null
	not kind in confining_seccomp
	msg := sprintf("pod sets seccompProfile type %v (must be RuntimeDefault or Localhost)", [kind])
}

deny contains msg if {
	some c in containers
	kind := c.securityContext.seccompProfile.type
	kind != null
	not kind in confining_seccomp
	msg := sprintf("%s sets seccompProfile type %v (must be RuntimeDefault or Localhost)", [kubernetes.describe(c), kind])
}

deny contains msg if {
	pod_security_context.windowsOptions.hostProcess == true
	msg := "pod is a Windows HostProcess pod (securityContext.windowsOptions.hostProcess must not be true)"
}

deny contains msg if {
	some c in containers
	c.securityContext.windowsOptions.hostProcess == true
	msg := sprintf("%s is a Windows HostProcess container (securityContext.windowsOptions.hostProcess must not be true)", [kubernetes.describe(c)])
}
