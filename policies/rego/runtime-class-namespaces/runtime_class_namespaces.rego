# Which Wasm RuntimeClasses each namespace may use. Parameters: `namespaces`, a map from
# namespace to allowed RuntimeClass names; the key "*" applies to namespaces not listed.
package meshgate.runtime_class_namespaces

default allowed := []

allowed := data.parameters.namespaces[input.namespace]

allowed := data.parameters.namespaces["*"] if not data.parameters.namespaces[input.namespace]

deny contains msg if {
	class := input.object.spec.runtimeClassName
	not class in allowed
	msg := sprintf("runtimeClassName %s is not allowed in namespace %s (allowed: %s)", [class, input.namespace, concat(", ", allowed)])
}
