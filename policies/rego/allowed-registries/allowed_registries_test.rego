package meshgate.allowed_registries_test

import data.meshgate.allowed_registries

pod(image) := {"object": {"spec": {"containers": [{"name": "app", "image": image}]}}}

parameters := {"registries": ["ghcr.io/acme/", "docker.io/library/", "127.0.0.1:5000/"]}

test_normalisation if {
	allowed_registries.normalize("nginx") == "docker.io/library/nginx"
	allowed_registries.normalize("bitnami/redis:7") == "docker.io/bitnami/redis:7"
	allowed_registries.normalize("ghcr.io/acme/app:1") == "ghcr.io/acme/app:1"
	allowed_registries.normalize("localhost/app") == "localhost/app"
	allowed_registries.normalize("127.0.0.1:5000/app") == "127.0.0.1:5000/app"
}

test_allowed_registry_passes if {
	count(allowed_registries.deny) == 0 with input as pod("ghcr.io/acme/app:1") with data.parameters as parameters
}

test_docker_hub_short_name_passes_when_library_is_allowed if {
	count(allowed_registries.deny) == 0 with input as pod("nginx:1.27") with data.parameters as parameters
}

test_other_registry_is_denied if {
	some msg in allowed_registries.deny with input as pod("quay.io/evil/app:1") with data.parameters as parameters
	contains(msg, "is not from an allowed registry")
}

test_prefix_must_match_the_organisation if {
	count(allowed_registries.deny) == 1 with input as pod("ghcr.io/acme-evil/app:1") with data.parameters as parameters
}

test_no_parameters_allows_nothing if {
	count(allowed_registries.deny) == 1 with input as pod("ghcr.io/acme/app:1")
}
