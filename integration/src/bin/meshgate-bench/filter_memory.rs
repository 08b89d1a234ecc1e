//! The filters' memory per Envoy worker and their `.wasm` sizes (`--only filter-memory`).
//!
//! Every worker runs its own VM of each filter, so a filter's memory cost grows with the worker
//! count. For each filter, Envoy starts with 1 and with 4 workers and one listener running only
//! that filter; after a short load (so every worker's VM has served requests and filled its
//! caches) its resident set is read from `/proc`. What 3 more workers add, less what they add to
//! an Envoy without any filter, divided by 3, is the filter's memory per worker.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, Result};
use jsonwebtoken::Algorithm;
use meshgate_integration::bootstrap::{bootstrap, direct_listener, wasm_filter};
use meshgate_integration::{Envoy, paths};
use meshgate_jwt::mint::{self, SigningKey};
use serde_json::{Value, json};

/// Resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Envoy's resident set, in KiB, with `filters` on one listener and `workers` workers, after
/// one second of load with `header`.
fn measure(filters: Vec<Value>, workers: u32, header: Option<&str>) -> Result<u64> {
    let envoy = Envoy::builder(bootstrap(vec![direct_listener("l", filters)]))
        .component_log_level(None)
        .log_level("warn")
        .concurrency(workers)
        .start();
    let pid = super::child_pid("envoy").context("finding Envoy's pid")?;
    let mut wrk = Command::new("wrk");
    wrk.args(["-t1", "-c16", "-d1s"]);
    if let Some(h) = header {
        wrk.arg("-H").arg(h);
    }
    let status = wrk.arg(envoy.url("l")).output()?.status;
    anyhow::ensure!(status.success(), "wrk failed");
    let rss = rss_kib(pid).context("reading Envoy's VmRSS")?;
    drop(envoy);
    Ok(rss)
}

/// Runs the measurements and returns the Markdown section.
pub(crate) fn run() -> Result<String> {
    let key = SigningKey::es256("es256");
    let rsa = SigningKey::rsa("rs256", Algorithm::RS256);
    let token = format!(
        "Authorization: Bearer {}",
        key.sign(
            &json!({"iss": "https://bench.test", "aud": "bench", "sub": "user-0",
                         "exp": mint::now() + 3600, "iat": mint::now()})
        )
    );
    let jwt = super::jwt_config(&[&rsa, &key], false).to_string();
    let rl = json!({"token_bucket": super::never_empty()}).to_string();
    // (row, file in dist/, the listener's filters, a request header)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<Value>, Option<&'a str>);
    let cases: Vec<Case> = vec![
        ("no filter", None, vec![], None),
        (
            "Wasm pass-through",
            Some("test/passthrough.wasm"),
            vec![wasm_filter("test/passthrough.wasm", "passthrough", "")],
            None,
        ),
        (
            "jwt-auth (RS256 and ES256 keys, repeated token)",
            Some("jwt-auth.wasm"),
            vec![wasm_filter("jwt-auth.wasm", "jwt_auth", &jwt)],
            Some(&token),
        ),
        (
            "rate-limit (one bucket)",
            Some("rate-limit.wasm"),
            vec![wasm_filter("rate-limit.wasm", "rate_limit", &rl)],
            None,
        ),
    ];
    let mut added = Vec::new();
    for (name, _, filters, header) in &cases {
        eprintln!("bench: filter memory: {name}");
        let one = measure(filters.clone(), 1, *header)?;
        let four = measure(filters.clone(), 4, *header)?;
        added.push((one, four, four.saturating_sub(one)));
    }
    let base = added.first().map_or(0, |a| a.2);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Filter memory per worker and `.wasm` size\n\n\
         Envoy's resident set (`VmRSS`) with one listener running only the filter, 1 and 4 \
         workers, after 1 s of `wrk -t1 -c16`; per worker: what 3 more workers add, less what \
         they add without a filter, over 3 (each worker runs its own VM). Sizes are the files in \
         `dist/` (`make filters`, profile wasm-release).\n\n\
         | filter | `.wasm` bytes | RSS 1 worker MiB | RSS 4 workers MiB | filter MiB per worker |\n\
         |---|---:|---:|---:|---:|"
    );
    for ((name, file, _, _), (one, four, more)) in cases.iter().zip(&added) {
        let size = file
            .map(|f| paths::dist_dir().join(f))
            .and_then(|p: PathBuf| std::fs::metadata(p).ok())
            .map_or("—".to_string(), |m| m.len().to_string());
        let per_worker = if file.is_some() {
            format!("{:.1}", (*more as f64 - base as f64) / 3.0 / 1024.0)
        } else {
            "—".to_string()
        };
        let _ = writeln!(
            md,
            "| {name} | {size} | {:.1} | {:.1} | {per_worker} |",
            *one as f64 / 1024.0,
            *four as f64 / 1024.0
        );
    }
    md.push('\n');
    Ok(md)
}
