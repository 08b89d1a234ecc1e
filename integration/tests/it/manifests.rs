//! The Kubernetes manifests under `istio/`, checked as an API server would without one:
//! built-in kinds against Kubernetes' own schemas (PyPI `kubernetes-validate`, strict),
//! cert-manager objects against their CRDs' OpenAPI schemas (`../shared/crds`), the webhook's
//! ConfigMap by the real `meshgate serve`, and the references between the objects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use meshgate_integration::Webhook;
use meshgate_integration::paths::repo_root;
use meshgate_integration::ports::free_port;
use meshgate_integration::webhook::sample_review;
use serde_json::{Value as Json, json};

/// Kubernetes version the manifests target: the first with `matchConditions` GA.
const KUBERNETES: &str = "1.30.0";

/// `../shared` beside the repository, or `MESHGATE_SHARED`.
fn shared() -> PathBuf {
    meshgate_integration::paths::shared("")
}

/// Every document of every YAML file under `dir`, with its file.
fn documents(dir: &Path) -> Vec<(PathBuf, Json)> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(documents(&path));
        } else if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value: Json = serde::Deserialize::deserialize(doc)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if !value.is_null() {
                    out.push((path.clone(), value));
                }
            }
        }
    }
    out
}

fn find<'a>(docs: &'a [(PathBuf, Json)], kind: &str, name: &str) -> &'a Json {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} under istio/"))
}

fn is_built_in(doc: &Json) -> bool {
    let api_version = doc["apiVersion"].as_str().unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    group.is_empty()
        || group.ends_with(".k8s.io")
        || ["apps", "batch", "policy", "autoscaling"].contains(&group)
}

#[test]
fn built_in_kinds_validate_strictly() {
    let validator = repo_root().join(".venv/bin/kubernetes-validate");
    assert!(
        validator.is_file(),
        "{} missing: run `make setup`",
        validator.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (path, doc)) in documents(&repo_root().join("istio"))
        .into_iter()
        .enumerate()
    {
        if doc["kind"] == "Kustomization" || !is_built_in(&doc) {
            continue;
        }
        let file = dir.path().join(format!(
            "{i}-{}",
            path.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
        files.push(file);
    }
    assert!(
        files.len() >= 10,
        "expected the webhook's objects and the RuntimeClasses, found {}",
        files.len()
    );
    let run = |files: &[PathBuf]| {
        Command::new(&validator)
            .args(["--strict", "--quiet", "-k", KUBERNETES])
            .args(files)
            .output()
            .unwrap()
    };
    let out = run(&files);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The check can fail: a misspelt field is caught.
    let broken = dir.path().join("broken.yaml");
    let service = std::fs::read_to_string(repo_root().join("istio/webhook/service.yaml")).unwrap();
    std::fs::write(&broken, service.replace("selector:", "selectr:")).unwrap();
    let out = run(&[broken]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("'selectr' was unexpected"));
}

/// A CRD version's schema as JSON Schema, strict: objects that list their properties accept no
/// others (the API server would prune them silently; a typo should fail here instead).
fn crd_schema(crd_file: &Path, kind: &str, version: &str) -> Json {
    let text =
        std::fs::read_to_string(crd_file).unwrap_or_else(|e| panic!("{}: {e}", crd_file.display()));
    let crd = serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Json as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| d["kind"] == "CustomResourceDefinition" && d["spec"]["names"]["kind"] == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind} in {}", crd_file.display()));
    let mut schema = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap_or_else(|| panic!("{kind} has no version {version}"))["schema"]["openAPIV3Schema"]
        .clone();
    fn strict(schema: &mut Json) {
        if let Some(object) = schema.as_object_mut() {
            if object.contains_key("properties")
                && !object.contains_key("additionalProperties")
                && object.get("x-kubernetes-preserve-unknown-fields") != Some(&json!(true))
            {
                object.insert("additionalProperties".into(), json!(false));
            }
            for value in object.values_mut() {
                strict(value);
            }
        } else if let Some(array) = schema.as_array_mut() {
            array.iter_mut().for_each(strict);
        }
    }
    strict(&mut schema);
    // apiVersion, kind and metadata are the API server's, not in every CRD schema.
    if let Some(properties) = schema["properties"].as_object_mut() {
        for field in ["apiVersion", "kind", "metadata"] {
            properties.entry(field).or_insert(json!({}));
        }
    }
    schema
}

fn schema_errors(schema: &Json, doc: &Json) -> Vec<String> {
    let validator = jsonschema::validator_for(schema).unwrap();
    validator
        .iter_errors(doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn cert_manager_objects_validate_against_their_crds() {
    let crds = shared().join("crds");
    let docs = documents(&repo_root().join("istio"));
    let mut checked = 0;
    for (path, doc) in &docs {
        let (file, version) = match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
            (Some("cert-manager.io/v1"), Some("Certificate")) => {
                ("cert-manager.io_certificates.yaml", "v1")
            }
            (Some("cert-manager.io/v1"), Some("Issuer")) => ("cert-manager.io_issuers.yaml", "v1"),
            (Some("cert-manager.io/v1"), Some("ClusterIssuer")) => {
                ("cert-manager.io_clusterissuers.yaml", "v1")
            }
            _ => continue,
        };
        let schema = crd_schema(&crds.join(file), doc["kind"].as_str().unwrap(), version);
        let errors = schema_errors(&schema, doc);
        assert!(
            errors.is_empty(),
            "{}: {} {}: {errors:#?}",
            path.display(),
            doc["kind"],
            doc["metadata"]["name"]
        );
        checked += 1;
    }
    assert!(checked >= 2, "expected an Issuer and a Certificate");

    // The check can fail: a misspelt field of the Certificate is caught.
    let mut certificate = find(&docs, "Certificate", "meshgate-webhook").clone();
    certificate["spec"]["dnsName"] = json!(["x"]);
    let schema = crd_schema(
        &crds.join("cert-manager.io_certificates.yaml"),
        "Certificate",
        "v1",
    );
    assert!(!schema_errors(&schema, &certificate).is_empty());
}

#[test]
fn webhook_objects_reference_each_other_consistently() {
    let docs = documents(&repo_root().join("istio/webhook"));
    let deployment = find(&docs, "Deployment", "meshgate-webhook");
    let service = find(&docs, "Service", "meshgate-webhook");
    let certificate = find(&docs, "Certificate", "meshgate-webhook");
    let webhook = find(&docs, "ValidatingWebhookConfiguration", "meshgate-webhook");
    let configmap = find(&docs, "ConfigMap", "meshgate-webhook");
    let config: Json =
        serde_yaml::from_str(configmap["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let pod = &deployment["spec"]["template"]["spec"];

    // Service → pods, webhook → Service.
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let client = &webhook["webhooks"][0]["clientConfig"]["service"];
    assert_eq!(client["name"], service["metadata"]["name"]);
    assert_eq!(client["namespace"], service["metadata"]["namespace"]);
    assert_eq!(client["port"], service["spec"]["ports"][0]["port"]);
    assert_eq!(client["path"], "/validate");
    // The container listens where the config says.
    assert_eq!(
        config["listen"],
        format!(
            "0.0.0.0:{}",
            pod["containers"][0]["ports"][0]["containerPort"]
        )
    );
    // The NetworkPolicy admits ingress to those pods on the webhook port only.
    let policy = find(&docs, "NetworkPolicy", "meshgate-webhook");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    let ingress = policy["spec"]["ingress"].as_array().unwrap();
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0]["ports"],
        json!([{"protocol": "TCP", "port": pod["containers"][0]["ports"][0]["name"]}])
    );
    // cert-manager: the Secret the pod mounts, the CA injected into the webhook, the DNS name
    // the API server dials.
    let tls_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap();
    assert_eq!(
        tls_volume["secret"]["secretName"],
        certificate["spec"]["secretName"]
    );
    assert_eq!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!(
            "{}/{}",
            certificate["metadata"]["namespace"].as_str().unwrap(),
            certificate["metadata"]["name"].as_str().unwrap()
        )
    );
    let dns = format!(
        "{}.{}.svc",
        service["metadata"]["name"].as_str().unwrap(),
        service["metadata"]["namespace"].as_str().unwrap()
    );
    assert!(
        certificate["spec"]["dnsNames"]
            .as_array()
            .unwrap()
            .contains(&json!(dns))
    );
    // The API server gives up after timeoutSeconds; the webhook answers (fail closed) before.
    let review_timeout =
        humantime::parse_duration(config["limits"]["reviewTimeout"].as_str().unwrap()).unwrap();
    assert!(review_timeout.as_secs() < webhook["webhooks"][0]["timeoutSeconds"].as_u64().unwrap());
    // matchConditions select exactly the configured RuntimeClasses.
    let expression = webhook["webhooks"][0]["matchConditions"][0]["expression"]
        .as_str()
        .unwrap();
    for class in config["runtimeClasses"].as_array().unwrap() {
        assert_eq!(
            expression
                .matches(&format!("'{}'", class.as_str().unwrap()))
                .count(),
            3,
            "{class} in every branch"
        );
    }
    // The second validating entry judges the extension kinds on the same service.
    let mutating = find(&docs, "MutatingWebhookConfiguration", "meshgate-webhook");
    let entry = |config: &Json, name: &str| -> Json {
        config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .unwrap_or_else(|| panic!("no webhook entry {name}"))
            .clone()
    };
    let extensions = entry(webhook, "wasm-extensions.meshgate.dev");
    let mut resources: Vec<String> = extensions["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["operations"], json!(["CREATE", "UPDATE"]), "{r}");
            format!(
                "{}/{}/{}",
                r["apiGroups"][0].as_str().unwrap(),
                r["apiVersions"][0].as_str().unwrap(),
                r["resources"][0].as_str().unwrap()
            )
        })
        .collect();
    resources.sort();
    assert_eq!(
        resources,
        [
            "extensions.istio.io/v1alpha1/wasmplugins",
            "gateway.envoyproxy.io/v1alpha1/envoyextensionpolicies",
            "networking.istio.io/v1alpha3/envoyfilters",
        ]
    );
    // /mutate: the pods entry selects exactly what the validating pods entry selects, and
    // every WasmPlugin; the CA is injected as into the validating configuration.
    assert_eq!(
        mutating["metadata"]["annotations"],
        webhook["metadata"]["annotations"]
    );
    let pods = entry(webhook, "wasm-pods.meshgate.dev");
    let pin_pods = entry(mutating, "pin-wasm-pods.meshgate.dev");
    for field in [
        "rules",
        "matchConditions",
        "namespaceSelector",
        "matchPolicy",
    ] {
        assert_eq!(pin_pods[field], pods[field], "{field}");
    }
    let pin_plugins = entry(mutating, "pin-wasmplugins.meshgate.dev");
    assert_eq!(
        pin_plugins["rules"],
        json!([{"apiGroups": ["extensions.istio.io"], "apiVersions": ["v1alpha1"], "resources": ["wasmplugins"], "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}])
    );
    for (config, path) in [(webhook, "/validate"), (mutating, "/mutate")] {
        for w in config["webhooks"].as_array().unwrap() {
            let name = &w["name"];
            let client = &w["clientConfig"]["service"];
            assert_eq!(client["name"], service["metadata"]["name"], "{name}");
            assert_eq!(
                client["namespace"], service["metadata"]["namespace"],
                "{name}"
            );
            assert_eq!(
                client["port"], service["spec"]["ports"][0]["port"],
                "{name}"
            );
            assert_eq!(client["path"], path, "{name}");
            assert_eq!(w["sideEffects"], "None", "{name}");
            assert_eq!(w["failurePolicy"], "Fail", "{name}");
            assert_eq!(w["namespaceSelector"], pods["namespaceSelector"], "{name}");
            assert!(
                review_timeout.as_secs() < w["timeoutSeconds"].as_u64().unwrap(),
                "{name}"
            );
            if path == "/mutate" {
                assert_eq!(w["reinvocationPolicy"], "IfNeeded", "{name}");
            }
        }
    }
    // kustomization.yaml lists every manifest of the directory.
    let kustomization = find_kustomization(&repo_root().join("istio/webhook"));
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut present: Vec<String> = std::fs::read_dir(repo_root().join("istio/webhook"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    present.sort();
    assert_eq!(listed, present);
}

fn find_kustomization(dir: &Path) -> Json {
    serde_yaml::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap()).unwrap()
}

/// The real webhook running the ConfigMap's configuration, with the paths the container has
/// (`/usr/share/meshgate/policies`, `/etc/meshgate/tls`) pointed at this checkout and `edit`
/// applied to the configuration's text.
fn configmap_webhook(edit: impl Fn(String) -> String) -> Webhook {
    let docs = documents(&repo_root().join("istio/webhook"));
    let configmap = find(&docs, "ConfigMap", "meshgate-webhook");
    let dir = tempfile::tempdir().unwrap();
    let certs = meshgate_admission::tls::dev_certificate(&dir.path().join("tls")).unwrap();
    let config = configmap["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .replace(
            "/usr/share/meshgate/policies",
            &repo_root().join("policies").display().to_string(),
        )
        .replace(
            "/etc/meshgate/tls",
            &dir.path().join("tls").display().to_string(),
        )
        // The Deployment's cache volume: the test's own directory, not the host's /var/cache.
        .replace(
            "/var/cache/meshgate",
            &dir.path().join("cache").display().to_string(),
        );
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, edit(config)).unwrap();
    let ca = certs.ca.clone();
    Webhook::start_file(&path, dir, &ca, free_port())
}

/// The ConfigMap's configuration runs in the real webhook.
#[test]
fn the_configmap_configuration_is_accepted_by_meshgate_serve() {
    let webhook = configmap_webhook(|c| c);
    let r = webhook.review(&sample_review("cm-1", true, Some("spin"))["request"]);
    assert_eq!(r["allowed"], false, "{r}");
    assert!(
        r["status"]["message"]
            .as_str()
            .unwrap()
            .contains("[privileged]"),
        "{r}"
    );
    // logging.format: json — each decision is one JSON object.
    let line = webhook
        .log()
        .lines()
        .find(|l| l.contains("cm-1"))
        .unwrap()
        .to_string();
    let entry: Json = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(entry["decision"], "denied", "{line}");
}

/// The filter manifests as `make istio` renders them (optionally pushing to `registry`).
fn rendered(registry: Option<&str>) -> (tempfile::TempDir, Vec<(PathBuf, Json)>) {
    let out = tempfile::tempdir().unwrap();
    // Test registries are plain HTTP on loopback.
    meshgate_integration::istio::render(
        &repo_root().join("istio/filters"),
        out.path(),
        registry,
        registry.is_some(),
    )
    .unwrap();
    let docs = documents(out.path());
    (out, docs)
}

/// The three WasmPlugins of `istio/filters/`.
fn wasm_plugins(docs: &[(PathBuf, Json)]) -> Vec<&Json> {
    let plugins: Vec<&Json> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "WasmPlugin")
        .collect();
    assert_eq!(plugins.len(), 3);
    plugins
}

/// A JWKS endpoint for a fresh key, standing in for `auth.example.com` of the manifests.
fn jwks_server() -> (
    meshgate_jwt::mint::SigningKey,
    meshgate_integration::JwksServer,
) {
    let key = meshgate_jwt::mint::SigningKey::es256("k");
    let jwks = meshgate_integration::JwksServer::start(&meshgate_jwt::mint::jwks(&[&key]));
    (key, jwks)
}

fn filter_manifests() -> Vec<(PathBuf, Json)> {
    rendered(None).1
}

/// The CRD file of `../shared/crds` that defines an `apiVersion`'s group.
fn crd_file(api_version: &str) -> PathBuf {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let file = match group {
        "gateway.envoyproxy.io" => "gateway.envoyproxy.io_envoyextensionpolicies.yaml",
        g if g.ends_with(".istio.io") => "istio-crds.yaml",
        other => panic!("no CRD file for group {other}"),
    };
    shared().join("crds").join(file)
}

/// The CRD's own validation rules (`x-kubernetes-validations`) of the object's `spec`, each
/// evaluated with `self` bound to the spec; the messages of the rules that fail.
fn crd_rule_failures(crd_file: &Path, doc: &Json) -> Vec<String> {
    let text = std::fs::read_to_string(crd_file).unwrap();
    let crd = serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Json as serde::Deserialize>::deserialize(d).unwrap())
        .find(|d| {
            d["kind"] == "CustomResourceDefinition" && d["spec"]["names"]["kind"] == doc["kind"]
        })
        .unwrap();
    let version = doc["apiVersion"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let schema = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap()["schema"]["openAPIV3Schema"]
        .clone();
    let rules = schema["properties"]["spec"]["x-kubernetes-validations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rules
        .iter()
        .filter(|rule| {
            let expression = rule["rule"].as_str().unwrap();
            cel_eval(expression, "self", &doc["spec"]) != Ok(true)
        })
        .map(|rule| rule["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A CEL expression evaluated with one variable; `Err` on a parse or evaluation error, or a
/// result that is not a bool.
fn cel_eval(expression: &str, variable: &str, value: &Json) -> Result<bool, String> {
    let program = cel::Program::compile(expression).map_err(|e| format!("{e}"))?;
    let mut context = cel::Context::default();
    context
        .add_variable(variable, value.clone())
        .map_err(|e| e.to_string())?;
    match program.execute(&context).map_err(|e| e.to_string())? {
        cel::Value::Bool(b) => Ok(b),
        other => Err(format!("not a bool: {other:?}")),
    }
}

#[test]
fn istio_objects_validate_against_their_crds() {
    let docs = filter_manifests();
    let mut kinds = std::collections::BTreeSet::new();
    for (path, doc) in &docs {
        let (kind, version) = (
            doc["kind"].as_str().unwrap(),
            doc["apiVersion"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap(),
        );
        let crds = crd_file(doc["apiVersion"].as_str().unwrap());
        let schema = crd_schema(&crds, kind, version);
        let errors = schema_errors(&schema, doc);
        let failed_rules = crd_rule_failures(&crds, doc);
        assert!(
            failed_rules.is_empty(),
            "{}: {kind}: {failed_rules:?}",
            path.display()
        );
        assert!(
            errors.is_empty(),
            "{}: {kind} {}: {errors:#?}",
            path.display(),
            doc["metadata"]["name"]
        );
        kinds.insert(kind.to_string());
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["EnvoyExtensionPolicy", "EnvoyFilter", "WasmPlugin"]
    );
    let crds = shared().join("crds/istio-crds.yaml");
    // Checksums were rendered and look like checksums.
    let envoyfilter = docs
        .iter()
        .find(|(_, d)| d["kind"] == "EnvoyFilter")
        .unwrap();
    assert!(!envoyfilter.1.to_string().contains("{{"));

    // The check can fail: an unknown phase is refused by the WasmPlugin schema.
    let mut plugin = docs
        .iter()
        .find(|(_, d)| d["kind"] == "WasmPlugin")
        .unwrap()
        .1
        .clone();
    plugin["spec"]["phase"] = json!("AUTHENTICATE");
    assert!(!schema_errors(&crd_schema(&crds, "WasmPlugin", "v1alpha1"), &plugin).is_empty());

    // ... a misspelt field and a policy with no target by the EnvoyExtensionPolicy's schema
    // and rules.
    let policy = &docs
        .iter()
        .find(|(_, d)| d["kind"] == "EnvoyExtensionPolicy")
        .unwrap()
        .1;
    let eep_crds = crd_file("gateway.envoyproxy.io/v1alpha1");
    let eep_schema = crd_schema(&eep_crds, "EnvoyExtensionPolicy", "v1alpha1");
    assert!(!policy.to_string().contains("{{"));
    let mut misspelt = policy.clone();
    misspelt["spec"]["wasm"][0]["code"]["http"]["sha265"] = json!("00");
    assert!(!schema_errors(&eep_schema, &misspelt).is_empty());
    let mut untargeted = policy.clone();
    untargeted["spec"]
        .as_object_mut()
        .unwrap()
        .remove("targetRefs");
    assert_eq!(
        crd_rule_failures(&eep_crds, &untargeted),
        ["either targetRef or targetRefs must be used"]
    );
}

/// What each webhook entry's `matchConditions` send (CEL, as the API server evaluates them on
/// the object): the shipped example objects, the forms an EnvoyFilter can give Wasm, and what
/// must not be sent.
#[test]
fn match_conditions_send_what_carries_wasm() {
    let docs = documents(&repo_root().join("istio/webhook"));
    let validating = find(&docs, "ValidatingWebhookConfiguration", "meshgate-webhook");
    let mutating = find(&docs, "MutatingWebhookConfiguration", "meshgate-webhook");
    let sends = |config: &Json, entry: &str, object: &Json| -> bool {
        let webhook = config["webhooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == entry)
            .unwrap();
        // The API server calls the webhook when every condition is true; an error fails the
        // request under failurePolicy Fail, so an expression must not err on these objects.
        webhook["matchConditions"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .all(|c| {
                cel_eval(c["expression"].as_str().unwrap(), "object", object)
                    .unwrap_or_else(|e| panic!("{entry} {}: {e} on {object}", c["name"]))
            })
    };
    let extensions = |object: &Json| sends(validating, "wasm-extensions.meshgate.dev", object);

    // The shipped examples are all sent.
    let examples = filter_manifests();
    assert_eq!(examples.len(), 5);
    for (path, doc) in &examples {
        assert!(extensions(doc), "{} is not sent", path.display());
    }
    for (path, doc) in examples.iter().filter(|(_, d)| d["kind"] == "WasmPlugin") {
        assert!(
            sends(mutating, "pin-wasmplugins.meshgate.dev", doc),
            "{}",
            path.display()
        );
    }

    let filter = |apply_to: &str, value: Json| {
        json!({"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
        "metadata": {"name": "f", "namespace": "apps"},
        "spec": {"configPatches": [
            {"applyTo": "HTTP_ROUTE", "patch": {"operation": "REMOVE"}},
            {"applyTo": apply_to, "patch": {"operation": "INSERT_BEFORE", "value": value}}
        ]}})
    };
    let wasm = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
    let lua = json!({"name": "lua", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua", "default_source_code": {"inline_string": "x"}}});
    for (what, object) in [
        (
            "a Wasm HTTP filter",
            filter(
                "HTTP_FILTER",
                json!({"name": "w", "typed_config": {"@type": wasm}}),
            ),
        ),
        (
            "camelCase typedConfig",
            filter(
                "HTTP_FILTER",
                json!({"name": "w", "typedConfig": {"@type": wasm}}),
            ),
        ),
        (
            "another type URL host",
            filter(
                "HTTP_FILTER",
                json!({"name": "w", "typed_config": {"@type": "example.com/envoy.extensions.filters.http.wasm.v3.Wasm"}}),
            ),
        ),
        (
            "a Wasm network filter",
            filter(
                "NETWORK_FILTER",
                json!({"name": "w", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"}}),
            ),
        ),
        (
            "a udpa TypedStruct",
            filter(
                "HTTP_FILTER",
                json!({"name": "w", "typed_config": {"@type": "type.googleapis.com/udpa.type.v1.TypedStruct", "type_url": wasm, "value": {}}}),
            ),
        ),
        (
            "an xds TypedStruct",
            filter(
                "HTTP_FILTER",
                json!({"name": "w", "typed_config": {"@type": "type.googleapis.com/xds.type.v3.TypedStruct", "type_url": wasm}}),
            ),
        ),
        (
            "ECDS",
            filter(
                "HTTP_FILTER",
                json!({"name": "w", "config_discovery": {"type_urls": [wasm]}}),
            ),
        ),
        (
            "an extension config",
            filter(
                "EXTENSION_CONFIG",
                json!({"name": "w", "typed_config": {"@type": wasm}}),
            ),
        ),
        (
            "a matcher wrapping Wasm",
            filter(
                "HTTP_FILTER",
                json!({"name": "w", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher", "extension_config": {"typed_config": {"@type": wasm}}}}),
            ),
        ),
        (
            "Lua beside an extra field",
            filter("HTTP_FILTER", {
                let mut v = lua.clone();
                v["config_discovery"] = json!({"type_urls": [wasm]});
                v
            }),
        ),
        (
            "a listener patch",
            filter(
                "LISTENER",
                json!({"filter_chains": [{"filters": [{"name": "w", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"}}]}]}),
            ),
        ),
        (
            "a connection manager merge",
            filter(
                "NETWORK_FILTER",
                json!({"typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "http_filters": []}}),
            ),
        ),
        (
            "a wasm-looking Lua type",
            filter(
                "HTTP_FILTER",
                json!({"name": "w", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua.wasm.v3.Wasm"}}),
            ),
        ),
    ] {
        assert!(extensions(&object), "{what} is not sent");
    }
    let eep = |spec: Json| json!({"apiVersion": "gateway.envoyproxy.io/v1alpha1", "kind": "EnvoyExtensionPolicy", "metadata": {"name": "p"}, "spec": spec});
    for (what, object) in [
        ("a Lua filter", filter("HTTP_FILTER", lua.clone())),
        (
            "a Lua filter, camelCase",
            filter(
                "HTTP_FILTER",
                json!({"name": "l", "typedConfig": lua["typed_config"].clone(), "isOptional": true}),
            ),
        ),
        (
            "an RBAC filter",
            filter(
                "HTTP_FILTER",
                json!({"name": "r", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}),
            ),
        ),
        (
            "only removals",
            json!({"kind": "EnvoyFilter", "spec": {"configPatches": [{"applyTo": "HTTP_FILTER", "patch": {"operation": "REMOVE"}}]}}),
        ),
        (
            "no patches",
            json!({"kind": "EnvoyFilter", "spec": {"workloadSelector": {"labels": {"app": "x"}}}}),
        ),
        (
            "an EnvoyExtensionPolicy without Wasm",
            eep(json!({"extProc": [{"backendRefs": []}]})),
        ),
        (
            "an EnvoyExtensionPolicy with an empty list",
            eep(json!({"wasm": []})),
        ),
    ] {
        assert!(!extensions(&object), "{what} is sent");
    }

    // Pods: the validating and mutating pods entries agree, on Wasm RuntimeClasses only.
    let pod = |class: Option<&str>| {
        let mut spec = json!({"containers": [{"name": "a", "image": "ghcr.io/acme/a:1"}]});
        if let Some(class) = class {
            spec["runtimeClassName"] = json!(class);
        }
        spec
    };
    for class in [Some("spin"), Some("wasmtime"), Some("runc"), None] {
        let expected = class.is_some_and(|c| c != "runc");
        for object in [
            json!({"kind": "Pod", "spec": pod(class)}),
            json!({"kind": "Deployment", "spec": {"template": {"spec": pod(class)}}}),
            json!({"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": {"spec": pod(class)}}}}}),
        ] {
            assert_eq!(
                sends(validating, "wasm-pods.meshgate.dev", &object),
                expected,
                "{object}"
            );
            assert_eq!(
                sends(mutating, "pin-wasm-pods.meshgate.dev", &object),
                expected,
                "{object}"
            );
        }
    }

    // The check can fail: an expression that does not parse is an error.
    assert!(cel_eval("object.kind ==", "object", &json!({})).is_err());
}

/// Serves files from `dist/` over HTTP, as a download server for `vm_config.code.remote`.
fn serve_dist() -> (u16, std::thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let handle = std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let name = request.url().rsplit('/').next().unwrap_or("").to_string();
            let path = meshgate_integration::paths::dist_dir().join(&name);
            let _ = match std::fs::read(&path) {
                Ok(bytes) => request.respond(tiny_http::Response::from_data(bytes)),
                Err(_) => request.respond(tiny_http::Response::empty(404)),
            };
        }
    });
    (port, handle)
}

/// A cluster named as Istio names outbound clusters, pointing at a local port.
fn outbound(name: &str, port: u16) -> Json {
    meshgate_integration::bootstrap::cluster(name, port)
}

#[test]
fn wasmplugin_configs_are_accepted_by_the_filters_in_envoy() {
    use meshgate_integration::bootstrap::{bootstrap_with_clusters, direct_listener, wasm_filter};
    let (_key, jwks) = jwks_server();
    let docs = filter_manifests();
    let plugins = wasm_plugins(&docs);
    let listeners = plugins
        .iter()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap();
            let module = module_of(p["spec"]["url"].as_str().unwrap());
            let config = p["spec"]["pluginConfig"].to_string();
            direct_listener(
                name,
                vec![wasm_filter(
                    &format!("{module}.wasm"),
                    p["spec"]["pluginName"].as_str().unwrap(),
                    &config,
                )],
            )
        })
        .collect();
    let envoy = meshgate_integration::Envoy::builder(bootstrap_with_clusters(
        listeners,
        vec![outbound("outbound|443||auth.example.com", jwks.port())],
    ))
    .start();
    let client = meshgate_integration::http_client();
    // jwt-auth with each WasmPlugin's config: no token → 401, /healthz exempt where configured.
    let r = client
        .get(format!("{}/api", envoy.url("meshgate-jwt-auth")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "{}", envoy.log_tail(20));
    let r = client
        .get(format!("{}/healthz", envoy.url("meshgate-jwt-auth")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!("{}/api", envoy.url("meshgate-jwt-auth-gateway")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    // rate-limit: requests without a subject have no descriptor and pass.
    let r = client.get(envoy.url("meshgate-rate-limit")).send().unwrap();
    assert_eq!(r.status(), 200, "{}", envoy.log_tail(20));
}

/// The EnvoyFilter's patches as a proxy applies them: both filters before the router, modules
/// downloaded over HTTP and checked against the rendered sha256.
#[test]
fn envoyfilter_patches_run_in_envoy_with_remote_modules() {
    use meshgate_integration::bootstrap::{bootstrap_with_clusters, direct_listener};
    let (key, jwks) = jwks_server();
    let (files, _server) = serve_dist();
    let docs = filter_manifests();
    let envoyfilter = &docs
        .iter()
        .find(|(_, d)| d["kind"] == "EnvoyFilter")
        .unwrap()
        .1;
    let filters: Vec<Json> = envoyfilter["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|patch| {
            assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
            assert_eq!(
                patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
                "envoy.filters.http.router"
            );
            let mut value = patch["patch"]["value"].clone();
            let remote =
                &mut value["typed_config"]["config"]["vm_config"]["code"]["remote"]["http_uri"];
            let module = remote["uri"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string();
            remote["uri"] = json!(format!("http://127.0.0.1:{files}/{module}"));
            value
        })
        .collect();
    let envoy = meshgate_integration::Envoy::builder(bootstrap_with_clusters(
        vec![direct_listener("gateway", filters)],
        vec![
            outbound("outbound|443||downloads.example.com", files),
            outbound("outbound|443||auth.example.com", jwks.port()),
        ],
    ))
    .start();
    let client = meshgate_integration::http_client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    // The modules arrive asynchronously; until then Envoy's listener is not serving.
    let status = loop {
        match client.get(envoy.url("gateway")).send() {
            Ok(r) => break r.status(),
            Err(e) if std::time::Instant::now() > deadline => panic!("{e}: {}", envoy.log_tail(30)),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    };
    assert_eq!(status, 401, "{}", envoy.log_tail(30));
    let token = key.sign(&json!({"iss": "https://auth.example.com", "sub": "alice", "exp": meshgate_jwt::mint::now() + 600}));
    let r = client
        .get(envoy.url("gateway"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", envoy.log_tail(30));
}

/// `make istio REGISTRY=...`: the filters pushed in Istio's OCI layout to a real registry, the
/// WasmPlugins pointed at them and pinned to the digests the registry serves.
#[test]
fn wasmplugins_are_pinned_to_the_pushed_artifacts() {
    let registry = meshgate_integration::Registry::start();
    let (_out, docs) = rendered(Some(&registry.host()));
    let crds = shared().join("crds/istio-crds.yaml");
    let schema = crd_schema(&crds, "WasmPlugin", "v1alpha1");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A client of its own: what Istio's agent would pull, not meshgate's reader.
    let client = oci_client::Client::new(oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![registry.host()]),
        ..Default::default()
    });
    let plugins = wasm_plugins(&docs);
    for plugin in plugins {
        let url = plugin["spec"]["url"].as_str().unwrap();
        let reference = url.strip_prefix("oci://").unwrap();
        assert!(reference.starts_with(&registry.host()), "{url}");
        let sha256 = plugin["spec"]["sha256"]
            .as_str()
            .unwrap_or_else(|| panic!("{url} is not pinned"));
        assert!(
            schema_errors(&schema, plugin).is_empty(),
            "{:?}",
            schema_errors(&schema, plugin)
        );
        let image = runtime
            .block_on(client.pull(
                &reference.parse().unwrap(),
                &oci_client::secrets::RegistryAuth::Anonymous,
                vec![meshgate_admission::artifact::ISTIO_LAYER],
            ))
            .unwrap();
        assert_eq!(image.digest.unwrap(), format!("sha256:{sha256}"));
        let module = module_of(reference);
        assert_eq!(
            image.layers[0].data.as_ref(),
            std::fs::read(meshgate_integration::paths::wasm(module))
                .unwrap()
                .as_slice()
        );
    }
}

/// The filter module an OCI reference names: `oci://ghcr.io/meshgate/jwt-auth:0.1.0` →
/// `jwt-auth`.
fn module_of(reference: &str) -> &str {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    name.split(':').next().unwrap_or(name)
}

/// The shipped EnvoyFilter and EnvoyExtensionPolicy through the real webhook running the
/// ConfigMap's configuration: their HTTP modules (the filters in `dist/`, served on loopback)
/// are fetched, held to the rendered `sha256` and read, and the starter policies judge the
/// facts: admitted where the ConfigMap places them, denied by `extension-phases` and
/// `wasm-capabilities` (the filters import `proxy_http_call`) in a namespace it does not.
#[test]
fn the_configmap_policies_judge_the_shipped_extensions_real_modules() {
    let (files, _server) = serve_dist();
    let webhook = configmap_webhook(|c| c.replace("httpHosts: []", "httpHosts: [\"127.0.0.1:*\"]"));
    let docs = filter_manifests();
    let loopback = |doc: &Json| -> Json {
        let text = doc.to_string().replace(
            "https://downloads.example.com/meshgate/0.1.0/",
            &format!("http://127.0.0.1:{files}/"),
        );
        serde_json::from_str(&text).unwrap()
    };
    let of_kind = |kind: &str| loopback(&docs.iter().find(|(_, d)| d["kind"] == kind).unwrap().1);
    let envoyfilter = of_kind("EnvoyFilter");
    let policy = of_kind("EnvoyExtensionPolicy");
    let review = |uid: &str, object: &Json| {
        webhook.review(&meshgate_admission::policy_test::admission_request(
            uid, "CREATE", object, None,
        ))
    };
    let in_namespace = |object: &Json, namespace: &str| {
        let mut moved = object.clone();
        moved["metadata"]["namespace"] = json!(namespace);
        moved
    };

    // Where the ConfigMap places them, both are admitted: their modules were fetched and read.
    for object in [&envoyfilter, &policy] {
        let r = review("ext-ok", object);
        assert_eq!(r["allowed"], true, "{r}\n{}", webhook.log());
    }

    // Elsewhere, the real modules' imports and the Wasm's phase are judged.
    let r = review("ext-eep", &in_namespace(&policy, "apps"));
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("[extension-phases] EnvoyExtensionPolicy apps/meshgate-filters: spec.wasm (Envoy Gateway runs Wasm after authentication) runs in phase AUTHZ, which namespace apps may not use (allowed: istio-system, gateways)"),
        "{message}"
    );
    // Each module named with the field that holds it; what it imports is the module's own
    // (the proxy-wasm SDK's calls out, whatever else this build links).
    for (i, module) in ["jwt-auth", "rate-limit"].iter().enumerate() {
        let head = format!(
            "[wasm-capabilities] module http://127.0.0.1:{files}/{module}.wasm (at /spec/wasm/{i}/code/http/url) imports network capabilities ("
        );
        let at = message
            .find(&head)
            .unwrap_or_else(|| panic!("{head}\nnot in {message}"));
        let rest = &message[at + head.len()..];
        let (imports, tail) = rest.split_once(')').unwrap();
        assert!(
            imports.split(", ").any(|i| i == "env/proxy_http_call"),
            "{imports}"
        );
        assert!(
            imports.split(", ").all(|i| i.starts_with("env/proxy_")),
            "{imports}"
        );
        assert!(
            tail.starts_with(
                ", which namespace apps may not use (allowed: istio-system, gateways)"
            ),
            "{tail}"
        );
    }

    // An EnvoyFilter placing its Wasm first is in the AUTHN phase.
    let mut first = in_namespace(&envoyfilter, "apps");
    first["spec"]["configPatches"][0]["patch"]["operation"] = json!("INSERT_FIRST");
    let r = review("ext-ef", &first);
    assert_eq!(r["allowed"], false, "{r}");
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("[extension-phases] EnvoyFilter apps/meshgate-filters: configPatches[0] (a Wasm filter, INSERT_FIRST envoy.filters.http.router) runs in phase AUTHN"),
        "{message}"
    );
    assert!(
        message.contains("[wasm-capabilities] module http://127.0.0.1:"),
        "{message}"
    );
}
