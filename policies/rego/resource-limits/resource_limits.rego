# Every container declares resource limits, so one Wasm workload cannot starve the node's
# others. Parameters: `resources` (default ["cpu", "memory"]).
package meshgate.resource_limits

import data.meshgate.lib.kubernetes

default required := ["cpu", "memory"]

required := data.parameters.resources

deny contains msg if {
	some field in ["containers", "initContainers"]
	some c in input.object.spec[field]
	some resource in required
	not c.resources.limits[resource]
	msg := sprintf("%s has no %s limit", [kubernetes.describe(c), resource])
}
