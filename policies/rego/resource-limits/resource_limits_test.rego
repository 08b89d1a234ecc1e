package meshgate.resource_limits_test

import data.meshgate.resource_limits

pod(resources) := {"object": {"spec": {"containers": [{"name": "app", "image": "i", "resources": resources}]}}}

test_missing_limits_are_each_reported if {
	resource_limits.deny == {
		`container "app" (image i) has no cpu limit`,
		`container "app" (image i) has no memory limit`,
	} with input as pod({"requests": {"cpu": "100m"}})
}

test_complete_limits_are_allowed if {
	count(resource_limits.deny) == 0 with input as pod({"limits": {"cpu": "500m", "memory": "64Mi"}})
}

test_required_resources_come_from_parameters if {
	count(resource_limits.deny) == 0 with input as pod({"limits": {"memory": "64Mi"}})
		with data.parameters as {"resources": ["memory"]}
}
