package meshgate.allowed_registries_test

import data.meshgate.allowed_registries

pod(image) := {"object": {"spec": {"containers": [{"name": "app", "image": image}]}}}

parameters := {"registries": ["ghcr.io/acme/", "docker.io/library/", "127.0.0.1:5000/", "registry.example.com/team", "localhost"]}

denied(image) if {
	count(allowed_registries.deny) == 1 with input as pod(image) with data.parameters as parameters
}

admitted(image) if {
	count(allowed_registries.deny) == 0 with input as pod(image) with data.parameters as parameters
}

test_normalisation if {
	allowed_registries.normalize("nginx") == "docker.io/library/nginx"
	allowed_registries.normalize("nginx:1.27") == "docker.io/library/nginx"
	allowed_registries.normalize("bitnami/redis:7") == "docker.io/bitnami/redis"
	allowed_registries.normalize("docker.io/nginx") == "docker.io/library/nginx"
	allowed_registries.normalize("index.docker.io/bitnami/redis") == "docker.io/bitnami/redis"
	allowed_registries.normalize("ghcr.io/acme/app:1") == "ghcr.io/acme/app"
	allowed_registries.normalize("GHCR.io/acme/app@sha256:00") == "ghcr.io/acme/app"
	allowed_registries.normalize("localhost/app") == "localhost/app"
	allowed_registries.normalize("127.0.0.1:5000/app:2") == "127.0.0.1:5000/app"
}

test_entries_name_a_host_and_path_segments if {
	allowed_registries.entry_ref("ghcr.io/acme/") == {"host": "ghcr.io", "path": ["acme"]}
	allowed_registries.entry_ref("ghcr.io") == {"host": "ghcr.io", "path": []}
	allowed_registries.entry_ref("nginx") == {"host": "docker.io", "path": ["library", "nginx"]}
	allowed_registries.entry_ref("bitnami/") == {"host": "docker.io", "path": ["bitnami"]}
	allowed_registries.entry_ref("docker.io/bitnami/") == {"host": "docker.io", "path": ["bitnami"]}
	allowed_registries.entry_ref("docker.io/nginx") == {"host": "docker.io", "path": ["library", "nginx"]}
}

test_allowed_registry_passes if {
	admitted("ghcr.io/acme/app:1")
	admitted("ghcr.io/acme/team/app@sha256:00")
	admitted("registry.example.com/team/app:1")
	admitted("registry.example.com/team")
	admitted("localhost/app")
	denied("localhost:5000/app")
}

test_docker_hub_short_name_passes_when_library_is_allowed if {
	admitted("nginx:1.27")
	admitted("docker.io/nginx")
	admitted("index.docker.io/library/nginx")
}

test_other_registry_is_denied if {
	some msg in allowed_registries.deny with input as pod("quay.io/evil/app:1") with data.parameters as parameters
	contains(msg, "is not from an allowed registry")
}

test_segments_are_matched_whole if {
	denied("ghcr.io/acme-evil/app:1")
	denied("registry.example.com/team-evil/app")
	denied("registry.example.com.evil/team/app")
	denied("localhost.attacker.com/x")
	denied("127.0.0.1:50000/app")
	denied("bitnami/redis")
	denied("ghcr.io/acme//app")
	denied("")
}

test_no_parameters_allows_nothing if {
	count(allowed_registries.deny) == 1 with input as pod("ghcr.io/acme/app:1")
}

test_only_numeric_ports_are_removed if {
	allowed_registries.without_port("mirror.example.com:5443") == "mirror.example.com"
	allowed_registries.without_port("[::1]:5000") == "[::1]"
	allowed_registries.without_port("[::1]") == "[::1]"
	allowed_registries.without_port("mirror.example.com:54x3") == "mirror.example.com:54x3"
	allowed_registries.without_port("mirror.example.com:") == "mirror.example.com:"
	allowed_registries.without_port("mirror.example.com") == "mirror.example.com"
}
