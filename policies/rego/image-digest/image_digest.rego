# Images pinned by digest: a tag can be moved to other content after review, a digest cannot.
# Shipped in warn mode in the example configurations.
package meshgate.image_digest

import data.meshgate.lib.kubernetes

deny contains msg if {
	some c in kubernetes.containers
	not regex.match(`@sha256:[a-f0-9]{64}$`, c.image)
	msg := sprintf("%s is not pinned by digest (use image@sha256:...)", [kubernetes.describe(c)])
}
