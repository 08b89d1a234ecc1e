# Images only from allowed registries. Parameters: `registries`, a list of prefixes such as
# "ghcr.io/acme/" or "registry.example.com/". Image names are normalised first, as the
# container runtime does: "nginx" is "docker.io/library/nginx".
package meshgate.allowed_registries

import data.meshgate.lib.kubernetes

default allowed := []

allowed := data.parameters.registries

deny contains msg if {
	some c in kubernetes.containers
	name := normalize(c.image)
	not startswith_any(name, allowed)
	msg := sprintf("%s is not from an allowed registry (%s)", [kubernetes.describe(c), concat(", ", allowed)])
}

startswith_any(name, prefixes) if {
	some prefix in prefixes
	startswith(name, prefix)
}

# The first path component is a registry host when it has a dot or a port, or is localhost.
normalize(image) := image if {
	host := split(image, "/")[0]
	count(split(image, "/")) > 1
	is_registry_host(host)
} else := concat("/", ["docker.io", image]) if {
	count(split(image, "/")) > 1
} else := concat("/", ["docker.io/library", image])

is_registry_host(host) if contains(host, ".")

is_registry_host(host) if contains(host, ":")

is_registry_host(host) if host == "localhost"
