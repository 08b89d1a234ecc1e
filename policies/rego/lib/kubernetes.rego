# Helpers shared by the starter policies. The input is the AdmissionReview request; for
# workloads (Deployment, CronJob, ...) meshgate has already expanded `object` to the Pod the
# template makes, so policies only ever look at a Pod.
package meshgate.lib.kubernetes

# Every container the pod runs: regular, init and ephemeral.
containers contains c if {
	some field in ["containers", "initContainers", "ephemeralContainers"]
	some c in input.object.spec[field]
}

# How messages name a container: its name and image.
describe(c) := sprintf("container %q (image %s)", [c.name, c.image])
