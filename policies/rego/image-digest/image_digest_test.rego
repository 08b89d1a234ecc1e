package meshgate.image_digest_test

import data.meshgate.image_digest

digest := "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"

pod(image) := {"object": {"spec": {"containers": [{"name": "app", "image": image}]}}}

test_tag_is_reported if {
	some msg in image_digest.deny with input as pod("ghcr.io/acme/app:1.0")
	contains(msg, "is not pinned by digest")
}

test_digest_is_accepted if {
	count(image_digest.deny) == 0 with input as pod(concat("@", ["ghcr.io/acme/app", digest]))
}

test_tag_and_digest_is_accepted if {
	count(image_digest.deny) == 0 with input as pod(concat("@", ["ghcr.io/acme/app:1.0", digest]))
}

test_truncated_digest_is_reported if {
	count(image_digest.deny) == 1 with input as pod("ghcr.io/acme/app@sha256:abc")
}

test_malformed_digests_are_reported if {
	hex := "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
	malformed := [
		concat("", ["ghcr.io/acme/app@sha256:", upper(hex)]),
		concat("", ["ghcr.io/acme/app@sha256:", hex, "0"]),
		concat("", ["ghcr.io/acme/app@sha256:", hex, " "]),
		concat("", ["ghcr.io/acme/app@sha256:", substring(hex, 0, 63), "g"]),
		concat("", ["ghcr.io/acme/app@sha256:", hex, "@sha256:"]),
		concat("", ["ghcr.io/acme/app@sha512:", hex]),
		concat("", ["ghcr.io/acme/app:sha256:", hex]),
	]
	every image in malformed {
		count(image_digest.deny) == 1 with input as pod(image)
	}
}

test_last_digest_counts if {
	count(image_digest.deny) == 0 with input as pod(concat("@", ["ghcr.io/acme/app@sha256:x", digest]))
}
