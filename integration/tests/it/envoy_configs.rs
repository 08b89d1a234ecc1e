//! The Envoy configs shipped under `envoy/`, run as they are in real Envoy (only their fixed
//! ports pointed at this test's services), with the transcript a user sees: 401 without a
//! token, 200 with one, 429 over the limit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshgate_integration::envoy::template_file;
use meshgate_integration::{Echo, Envoy, JwksServer, Redis, RlsServer, http_client};
use meshgate_jwt::mint::{self, SigningKey};
use serde_json::json;

const ISSUER: &str = "https://meshgate.local/demo";

fn token(key: &SigningKey, sub: &str) -> String {
    key.sign(&json!({
        "iss": ISSUER, "aud": "demo-api", "sub": sub, "groups": ["developers"],
        "exp": mint::now() + 600, "iat": mint::now(),
    }))
}

/// Starts `envoy/<file>` with its listener (10000) on a free port, its upstream (10001) and
/// JWKS (10002) pointed at the given services, `extra` further fixed ports remapped.
fn start(file: &str, upstream: &Echo, jwks: &JwksServer, extra: &[(u16, u16)]) -> Envoy {
    let mut builder = Envoy::builder(template_file(&format!("envoy/{file}")))
        .admin_port(9901)
        .remap_port(9901, "admin")
        .remap_port(10000, "listener")
        .remap_port_to(10001, upstream.port())
        .remap_port_to(10002, jwks.port());
    for (fixed, actual) in extra {
        builder = builder.remap_port_to(*fixed, *actual);
    }
    builder.start()
}

/// 401 without a token, 10 × 200 with one (the upstream sees the subject), then 429 with the
/// RateLimit headers; another subject has a bucket of its own.
fn assert_transcript(envoy: &Envoy, token_for: impl Fn(&str) -> String) {
    let client = http_client();
    let url = format!("{}/hello", envoy.url("listener"));
    let anonymous = client.get(&url).send().unwrap();
    assert_eq!(anonymous.status(), 401, "{}", envoy.log_tail(20));
    assert_eq!(anonymous.text().unwrap(), "Jwt is missing");
    assert_eq!(
        client
            .get(format!("{}/healthz", envoy.url("listener")))
            .send()
            .unwrap()
            .status(),
        200
    );

    let alice = token_for("alice");
    for i in 0..10 {
        let ok = client.get(&url).bearer_auth(&alice).send().unwrap();
        assert_eq!(ok.status(), 200, "request {i}: {}", envoy.log_tail(20));
        let seen: serde_json::Value = ok.json().unwrap();
        assert_eq!(seen["headers"]["x-user"], "alice");
    }
    let limited = client.get(&url).bearer_auth(&alice).send().unwrap();
    assert_eq!(limited.status(), 429);
    assert!(
        limited.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per_user\";r=0;t=")
    );
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(token_for("bob"))
            .send()
            .unwrap()
            .status(),
        200
    );
}

#[test]
fn demo_yaml_answers_401_200_then_429() {
    let key = SigningKey::es256("demo-key");
    let upstream = Echo::start();
    let jwks = JwksServer::start(&mint::jwks(&[&key]));
    let envoy = start("demo.yaml", &upstream, &jwks, &[]);
    assert_transcript(&envoy, |sub| token(&key, sub));
}

/// local.yaml trusts the committed demonstration key inline; tokens come from that key as
/// `meshgate-dev --dir envoy/dev token` mints them.
#[test]
fn local_yaml_answers_401_200_then_429_with_the_inline_jwks() {
    let repo = meshgate_integration::paths::repo_root();
    let key =
        meshgate_integration::devkey::DevKey::load_or_create(&repo.join("envoy/dev")).unwrap();
    let config = std::fs::read_to_string(repo.join("envoy/local.yaml")).unwrap();
    assert!(
        config.contains(&serde_json::to_string(&key.jwks()).unwrap()),
        "local.yaml inlines envoy/dev's JWKS"
    );
    let upstream = Echo::start();
    let envoy = Envoy::builder(template_file("envoy/local.yaml"))
        .admin_port(9901)
        .remap_port(9901, "admin")
        .remap_port(10000, "listener")
        .remap_port_to(10001, upstream.port())
        .start();
    assert_transcript(&envoy, |sub| key.token(sub, 600));
}

#[test]
fn global_ratelimit_yaml_counts_in_the_rate_limit_service() {
    let key = SigningKey::es256("demo-key");
    let upstream = Echo::start();
    let jwks = JwksServer::start(&mint::jwks(&[&key]));
    let redis = Redis::start();
    let rls = RlsServer::start(&redis, "meshgate", "user", 3);
    let envoy = start(
        "global-ratelimit.yaml",
        &upstream,
        &jwks,
        &[(10003, rls.port())],
    );
    let client = http_client();
    let url = format!("{}/hello", envoy.url("listener"));

    assert_eq!(client.get(&url).send().unwrap().status(), 401);
    let alice = token(&key, "alice");
    for i in 0..3 {
        let ok = client.get(&url).bearer_auth(&alice).send().unwrap();
        assert_eq!(ok.status(), 200, "request {i}: {}", envoy.log_tail(20));
    }
    let limited = client.get(&url).bearer_auth(&alice).send().unwrap();
    assert_eq!(limited.status(), 429, "{}", envoy.log_tail(20));
    assert!(limited.headers().contains_key("retry-after"));
    assert!(
        rls.calls() >= 4,
        "the service counted: {} calls",
        rls.calls()
    );
}

/// `envoy/docker-compose.yaml` against the Compose Specification schema (what Docker Compose
/// reads, too) and against the configs it serves, whose behaviour the tests above assert; it runs
/// with podman-compose in `containers.rs`.
#[test]
fn docker_compose_is_valid_and_agrees_with_the_configs() {
    let repo = meshgate_integration::paths::repo_root();
    let envoy_dir = repo.join("envoy");
    let compose: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(envoy_dir.join("docker-compose.yaml")).unwrap(),
    )
    .unwrap();
    let schema_path = std::env::var_os("MESHGATE_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared"))
        .join("schemas/compose-spec.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&compose)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let mut typo = compose.clone();
    typo["services"]["envoy"]["imagee"] = json!("x");
    assert!(!validator.is_valid(&typo), "the schema check can fail");

    let services = &compose["services"];
    // Every image is one envoy/images/build.sh makes (Envoy's from the version the tests run),
    // by a local name that no registry's image shadows, and none is pulled.
    for (name, service) in services.as_object().unwrap() {
        let image = service["image"].as_str().unwrap();
        let local = image
            .strip_prefix("localhost/")
            .and_then(|i| i.strip_suffix(":${MESHGATE_TAG:-dev}"))
            .unwrap_or_else(|| panic!("{name}: {image} is not a local image"));
        // build.sh: meshgate-NAME from envoy/images/NAME.Containerfile, meshgate (the webhook)
        // from admission/Containerfile.
        let containerfile = match local.strip_prefix("meshgate-") {
            Some(built) => envoy_dir.join(format!("images/{built}.Containerfile")),
            None => repo.join("admission/Containerfile"),
        };
        assert!(containerfile.is_file(), "{name}: nothing builds {local}");
        assert_eq!(service["pull_policy"], "never", "{name}");
    }
    assert_eq!(
        services["envoy"]["image"],
        "localhost/meshgate-envoy:${MESHGATE_TAG:-dev}"
    );
    // The webhook as the Deployment runs it, and with nothing of envoy/ but its configuration:
    // envoy/dev/ holds the committed demo private key.
    let webhook = &services["webhook"];
    assert_eq!(webhook["user"], "65532:65532");
    assert_eq!(webhook["read_only"], true);
    assert_eq!(webhook["cap_drop"], json!(["ALL"]));
    assert_eq!(webhook["security_opt"], json!(["no-new-privileges"]));
    let demo_key = envoy_dir.join("dev/dev-key.pem");
    assert!(demo_key.is_file());
    for volume in webhook["volumes"].as_array().unwrap() {
        let host = volume.as_str().unwrap().split(':').next().unwrap();
        // Compared by components: `./` is envoy/ itself.
        let mounted = std::path::PathBuf::from(
            envoy_dir
                .join(host)
                .to_string_lossy()
                .replace("/envoy/../", "/"),
        );
        assert!(
            !demo_key.starts_with(&mounted),
            "the webhook mounts {host}, which holds envoy/dev/dev-key.pem"
        );
    }
    // Every bind-mounted host path exists or is what `make filters` / `make dev-keys` write.
    for (name, service) in services.as_object().unwrap() {
        for volume in service["volumes"].as_array().into_iter().flatten() {
            let host = volume.as_str().unwrap().split(':').next().unwrap();
            let path = envoy_dir.join(host);
            let made = [
                repo.join("dist"),
                meshgate_integration::devkey::default_dir().join("jwks"),
            ];
            let normalized =
                std::path::PathBuf::from(path.to_string_lossy().replace("/envoy/../", "/"));
            assert!(
                normalized.exists() || made.contains(&normalized),
                "{name}: {host} neither exists nor is produced by make"
            );
        }
        assert_eq!(
            service["network_mode"], "host",
            "{name}: the configs talk to 127.0.0.1"
        );
    }
    // The ports the services listen on are the ones the configs use.
    let demo = std::fs::read_to_string(envoy_dir.join("demo.yaml")).unwrap();
    let global = std::fs::read_to_string(envoy_dir.join("global-ratelimit.yaml")).unwrap();
    assert!(demo.contains(&format!(
            "port_value: {} ",
            services["upstream"]["environment"]["HTTP_PORT"]
                .as_str()
                .unwrap()
        )));
    assert!(
        services["jwks"]["command"]
            .to_string()
            .contains("\"10002\"")
    );
    assert!(demo.contains("http://127.0.0.1:10002/.well-known/jwks.json"));
    assert!(global.contains(&format!(
            "port_value: {} ",
            services["ratelimit"]["environment"]["GRPC_PORT"]
                .as_str()
                .unwrap()
        )));
    // The rate limit service's domain and key are the ones the filter sends.
    let rl: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(envoy_dir.join("ratelimit-config.yaml")).unwrap(),
    )
    .unwrap();
    assert!(global.contains(&format!(
        "\"domain\": \"{}\"",
        rl["domain"].as_str().unwrap()
    )));
    assert!(global.contains(&format!(
        "\"descriptor_key\": \"{}\"",
        rl["descriptors"][0]["key"].as_str().unwrap()
    )));
}
