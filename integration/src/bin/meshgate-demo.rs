//! `make run`: the meshgate demo stack on 127.0.0.1, until Ctrl-C.
//!
//! Envoy (with `envoy/demo.yaml`: jwt-auth then rate-limit in front of an upstream), a demo upstream
//! that echoes what reaches it, and a JWKS endpoint serving a development key generated now.
//! It checks the stack answers as it should, then prints the commands to try it.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use meshgate_integration::{Echo, Envoy, JwksServer, envoy::template_file, http_client};
use meshgate_jwt::mint::{self, SigningKey};
use serde_json::json;

const LISTENER: &str = "http://127.0.0.1:10000";
const ISSUER: &str = "https://meshgate.local/demo";

fn main() -> Result<()> {
    let key = SigningKey::es256("demo-key");
    let upstream = Echo::start_on(10001);
    let jwks = JwksServer::start_on(10002, &mint::jwks(&[&key]));
    let envoy = Envoy::builder(template_file("envoy/demo.yaml"))
        .admin_port(9901)
        .component_log_level(None)
        .try_start()
        .map_err(anyhow::Error::msg)
        .context("starting Envoy with envoy/demo.yaml (ports 10000-10002 and 9901 must be free)")?;

    let token_for = |sub: &str| {
        key.sign(&json!({
            "iss": ISSUER,
            "aud": "demo-api",
            "sub": sub,
            "groups": ["developers"],
            "exp": mint::now() + 12 * 3600,
            "iat": mint::now(),
        }))
    };
    let token = token_for("dev-user");
    let client = http_client();
    let without = client.get(format!("{LISTENER}/hello")).send()?;
    let with = client
        .get(format!("{LISTENER}/hello"))
        // Its own subject, so the printed token starts with a full rate-limit bucket.
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
         \n  curl -s http://127.0.0.1:9901/stats | grep wasmcustom\n\
         \nSelf-check: no token → {without_status}, dev token → {with_status}.",
        upstream.port(),
        jwks.url(),
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    println!("\nstopping: Envoy, upstream, JWKS");
    drop(envoy);
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}
