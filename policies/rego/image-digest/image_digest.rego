# Images pinned by digest: a tag can be moved to other content after review, a digest cannot.
# Shipped in warn mode in the example configurations.
package meshgate.image_digest

import data.meshgate.lib.kubernetes

deny contains msg if {
	some c in kubernetes.containers
	not pinned(c.image)
	msg := sprintf("%s is not pinned by digest (use image@sha256:...)", [kubernetes.describe(c)])
}

# The image ends in "@sha256:" and 64 lowercase hex digits. String builtins rather than
# regex.match: regorus gives every regex.match call fresh matching caches, which costs tens of
# microseconds per container on every review.
pinned(image) if {
	parts := split(image, "@sha256:")
	count(parts) > 1
	digest := parts[count(parts) - 1]
	count(digest) == 64
	trim(digest, "0123456789abcdef") == ""
}
