//! `make run`: the meshgate demo stack on 127.0.0.1, until Ctrl-C.
//!
//! Envoy (with `envoy/demo.yaml`: jwt-auth then rate-limit in front of an upstream), a demo upstream
//! that echoes what reaches it, a JWKS endpoint serving a development key generated now, and the
//! admission webhook (`meshgate serve` with `admission/examples/dev.yaml`) over TLS.
//! It checks the stack answers as it should, then prints the commands to try it.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use meshgate_integration::devkey::{self, DevKey};
use meshgate_integration::webhook::sample_review;
use meshgate_integration::{
    Echo, Envoy, JwksServer, Webhook, envoy::template_file, http_client, paths,
};

const LISTENER: &str = "http://127.0.0.1:10000";
const WEBHOOK_PORT: u16 = 8443;

fn main() -> Result<()> {
    let key = DevKey::load_or_create(&devkey::default_dir()).map_err(anyhow::Error::msg)?;
    let upstream = Echo::start_on(10001);
    let jwks = JwksServer::start_on(10002, &key.jwks());
    let envoy = Envoy::builder(template_file("envoy/demo.yaml"))
        .admin_port(9901)
        .component_log_level(None)
        .try_start()
        .map_err(anyhow::Error::msg)
        .context("starting Envoy with envoy/demo.yaml (ports 10000-10002 and 9901 must be free)")?;

    let repo = paths::repo_root();
    let webhook = Webhook::start_file(
        &repo.join("admission/examples/dev.yaml"),
        tempfile::tempdir()?,
        &repo.join(".state/admission-tls/ca.crt"),
        WEBHOOK_PORT,
    );
    let reviews = repo.join(".state/demo");
    std::fs::create_dir_all(&reviews)?;
    let privileged = reviews.join("privileged-pod.json");
    let allowed = reviews.join("wasm-pod.json");
    std::fs::write(
        &privileged,
        sample_review("demo-1", true, Some("wasmtime")).to_string(),
    )?;
    std::fs::write(
        &allowed,
        sample_review("demo-2", false, Some("wasmtime")).to_string(),
    )?;
    let denied_answer =
        webhook.review(&sample_review("self-check-1", true, Some("wasmtime"))["request"]);
    let allowed_answer =
        webhook.review(&sample_review("self-check-2", false, Some("wasmtime"))["request"]);
    if denied_answer["allowed"] != false || allowed_answer["allowed"] != true {
        bail!("the webhook does not answer as expected: {denied_answer} / {allowed_answer}");
    }

    // A self-check subject of its own per run, so the printed token starts with a full
    // rate-limit bucket.
    let token_for = |sub: &str| key.token(sub, 12 * 3600);
    let token = token_for("dev-user");
    let client = http_client();
    let without = client.get(format!("{LISTENER}/hello")).send()?;
    let with = client
        .get(format!("{LISTENER}/hello"))
        .bearer_auth(token_for("self-check"))
        .send()?;
    let (without_status, with_status) = (without.status().as_u16(), with.status().as_u16());
    if without_status != 401 || with_status != 200 {
        bail!(
            "the demo does not answer as expected (no token: {without_status}, token: \
             {with_status}); Envoy log:\n{}",
            envoy.log_tail(30)
        );
    }
    println!(
        "meshgate demo is running (Ctrl-C stops it):\n\
         \n  Envoy listener   {LISTENER}      jwt-auth in front of the demo upstream\
         \n  demo upstream    http://127.0.0.1:{}       echoes the request it receives\
         \n  JWKS             {}\
         \n  Envoy admin      http://127.0.0.1:9901\
         \n\nTry it:\n\
         \n  curl -i {LISTENER}/hello                       # 401 Jwt is missing\
         \n  curl -i {LISTENER}/healthz                     # 200, no token needed\
         \n  curl -i -H 'Authorization: Bearer {token}' {LISTENER}/hello\
         \n                                                 # 200; the upstream sees x-user, x-groups, x-jwt-payload\
         \n                                                 # the same 11 times in a minute: the 11th is 429\
         \n  target/debug/meshgate-dev token --sub alice      # more tokens for the same dev key (.state/dev)\
         \n  curl -s http://127.0.0.1:9901/stats | grep wasmcustom\n\
         \n  Admission webhook {webhook_url}   meshgate serve with admission/examples/dev.yaml\
         \n\n  curl --cacert {ca} \\\
         \n       -H 'Content-Type: application/json' --data @{privileged} {webhook_url}/validate\
         \n                                                 # allowed: false, [privileged] container \"app\" ... is privileged\
         \n  curl --cacert {ca} \\\
         \n       -H 'Content-Type: application/json' --data @{allowed} {webhook_url}/validate\
         \n                                                 # allowed: true\
         \n  curl --cacert {ca} {webhook_url}/metrics\n\
         \nSelf-check: no token → {without_status}, dev token → {with_status}; privileged Wasm pod denied, clean one allowed.",
        upstream.port(),
        jwks.url(),
        webhook_url = webhook.url,
        ca = webhook.ca.display(),
        privileged = privileged.display(),
        allowed = allowed.display(),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!("\nstopping: Envoy, upstream, JWKS, webhook");
    drop(envoy);
    drop(webhook);
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}
