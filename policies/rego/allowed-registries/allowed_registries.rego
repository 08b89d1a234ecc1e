# Images only from allowed registries. Parameters: `registries`, a list of entries, each a
# registry host optionally followed by repository path segments: "ghcr.io/acme" (or
# "ghcr.io/acme/") allows ghcr.io/acme/app and ghcr.io/acme/team/app, not ghcr.io/acme-evil/app;
# "127.0.0.1:5000" allows every image of that registry, "127.0.0.1:*" every port of that host. Hosts and paths are compared whole,
# segment by segment, never as string prefixes: "localhost" does not allow
# localhost.attacker.com/x.
#
# Image names are normalised first, as the container runtime does: "nginx" is
# docker.io/library/nginx, "acme/web" is docker.io/acme/web, index.docker.io is docker.io.
# Entries without a registry host name Docker Hub the same way: "nginx" is
# docker.io/library/nginx, "bitnami/" is docker.io/bitnami.
package meshgate.allowed_registries

import data.meshgate.lib.kubernetes

default allowed := []

allowed := data.parameters.registries

deny contains msg if {
	some c in kubernetes.containers
	not allowed_image(c.image)
	msg := sprintf("%s is not from an allowed registry (%s)", [kubernetes.describe(c), concat(", ", allowed)])
}

allowed_image(image) if {
	ref := image_ref(image)
	some entry in allowed
	within(ref, entry_ref(entry))
}

# The image is on the entry's host, and the entry's path segments start the image's path. A
# name with an empty segment ("ghcr.io/acme//app", or no name at all) is not a valid
# reference and is never within anything.
within(ref, entry) if {
	not "" in ref.path
	host_matches(ref.host, entry.host)
	n := count(entry.path)
	count(ref.path) >= n
	array.slice(ref.path, 0, n) == entry.path
}

# An entry host "name:*" allows that host on any port, or none (a development registry on a
# port chosen at start); any other entry host only itself.
host_matches(host, entry_host) if host == entry_host

host_matches(host, entry_host) if {
	endswith(entry_host, ":*")
	without_port(host) == trim_suffix(entry_host, ":*")
}

# "host:5000" is "host", "[::1]:5000" is "[::1]"; a host without a numeric port is itself.
without_port(host) := concat(":", array.slice(parts, 0, count(parts) - 1)) if {
	parts := split(host, ":")
	count(parts) > 1
	digits(parts[count(parts) - 1])
} else := host

# One or more ASCII digits (string builtins: see image-digest on regex.match's cost).
digits(s) if {
	s != ""
	trim(s, "0123456789") == ""
}

# An image's registry host and repository path segments, tag and digest removed:
# "nginx:1.27" is {"host": "docker.io", "path": ["library", "nginx"]}.
image_ref(image) := ref if {
	parts := split(split(image, "@")[0], "/")
	count(parts) > 1
	is_registry_host(parts[0])
	ref := hub_library(canonical_host(parts[0]), without_tag(array.slice(parts, 1, count(parts))), false)
} else := hub_library("docker.io", without_tag(split(split(image, "@")[0], "/")), false)

# An entry's host and path segments. A first segment that looks like a host is one, even
# alone ("ghcr.io"); a trailing slash marks a namespace ("bitnami/" is docker.io/bitnami, while
# "nginx" is docker.io/library/nginx, as in image names).
entry_ref(entry) := ref if {
	parts := split(trim_right(entry, "/"), "/")
	is_registry_host(parts[0])
	ref := hub_library(canonical_host(parts[0]), array.slice(parts, 1, count(parts)), endswith(entry, "/"))
} else := hub_library("docker.io", split(trim_right(entry, "/"), "/"), endswith(entry, "/"))

# Docker Hub's one-segment names live under library/ ("docker.io/nginx" is
# docker.io/library/nginx).
hub_library(host, path, namespace) := {"host": host, "path": array.concat(["library"], path)} if {
	host == "docker.io"
	count(path) == 1
	not namespace
} else := {"host": host, "path": path}

without_tag(path) := array.concat(array.slice(path, 0, count(path) - 1), [split(path[count(path) - 1], ":")[0]])

# Host names are case-insensitive; index.docker.io is Docker Hub's old name.
canonical_host(host) := "docker.io" if {
	lower(host) == "index.docker.io"
} else := lower(host)

# The first path component is a registry host when it has a dot or a port, is localhost, or
# has capitals (repository names cannot), as the container runtime decides.
is_registry_host(host) if contains(host, ".")

is_registry_host(host) if contains(host, ":")

is_registry_host(host) if host == "localhost"

is_registry_host(host) if lower(host) != host

# The normalised name, for messages and tests: host and path joined.
normalize(image) := concat("/", array.concat([ref.host], ref.path)) if {
	ref := image_ref(image)
}
