//! `make bench`: load real Envoy listeners side by side with wrk and write BENCHMARKS.md.
//!
//! One Envoy process hosts every variant as its own listener answering a direct response, so each
//! row pays the same costs but its filters. Rows are run one after another with the same wrk
//! settings; ratios compare rows of the same run only. The whole table runs once per worker
//! count (`--workers`, 1 and 4 by default: sidecars and gateways run several, and shared data
//! is contended only then), and a last section reports the filters' memory per worker and
//! `.wasm` sizes.

mod admission;
mod filter_memory;
mod images;
mod keyless;
mod memory;
mod wasm_policies;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use jsonwebtoken::Algorithm;
use meshgate_integration::bootstrap::{bootstrap, direct_listener, filter, wasm_filter};
use meshgate_integration::{Envoy, paths, process};
use meshgate_jwt::mint::{self, SigningKey};
use serde_json::{Value, json};

#[derive(Parser)]
pub(crate) struct Args {
    /// Seconds of load per row and round.
    #[arg(long, default_value_t = 3)]
    duration: u32,
    /// Rounds: every row runs this many times, interleaved with the others, and the median
    /// counts (this machine's noise is ±15 % run to run).
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Distinct tokens cycled through in the "unique token" rows (more than any cache holds).
    #[arg(long, default_value_t = 2000)]
    unique_tokens: usize,
    /// Envoy worker counts (`--concurrency`): the Envoy rows run once per count.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    workers: Vec<u32>,
    /// Markdown file to write.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Run only the rows whose name contains this (the floor rows always run); `admission`
    /// runs only the webhook rows (with image verification, Wasm policies and memory),
    /// `images` only image verification, `wasm` only Wasm policies, `memory` only the
    /// webhook's memory under hostile reviews, `keyless` only keyed against keyless
    /// verification, `filter-memory` only the filters' memory per worker and `.wasm` sizes.
    #[arg(long)]
    only: Option<String>,
}

/// One measured row.
struct Row {
    group: &'static str,
    name: String,
    rps: f64,
    p99_ms: f64,
    /// Envoy's CPU time (every thread) per request, µs: less sensitive than req/s to what else
    /// runs on the machine.
    cpu_us: f64,
    non_2xx: u64,
    base: Option<String>,
}

/// Writes `body` as `dir/NAME.json` and a wrk script that POSTs it as JSON; returns the script.
pub(crate) fn post_script(dir: &Path, name: &str, body: &serde_json::Value) -> Result<PathBuf> {
    let body_path = dir.join(format!("{name}.json"));
    std::fs::write(&body_path, body.to_string())?;
    let script = dir.join(format!("{name}.lua"));
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             local f = io.open(\"{}\", \"r\")\nwrk.body = f:read(\"*a\")\nf:close()\n",
            body_path.display()
        ),
    )?;
    Ok(script)
}

pub(crate) fn wrk(
    url: &str,
    args: &Args,
    headers: &[String],
    script: Option<&PathBuf>,
) -> Result<(f64, f64, u64)> {
    let mut command = Command::new("wrk");
    command
        .arg("-t1")
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.duration))
        .arg("--latency");
    for h in headers {
        command.arg("-H").arg(h);
    }
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    let output = command
        .arg(url)
        .output()
        .context("running wrk (make setup installs it)")?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk output:\n{text}"))?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(|v| parse_latency_ms(v.trim()))
        .unwrap_or(f64::NAN);
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((rps, p99_ms, non_2xx))
}

fn parse_latency_ms(v: &str) -> f64 {
    let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        _ => f64::NAN,
    }
}

fn jwt_config(keys: &[&SigningKey], cache: bool) -> Value {
    let mut provider = json!({
        "issuer": "https://bench.test",
        "audiences": ["bench"],
        "local_jwks": {"inline_string": mint::jwks(keys)},
        "forward": true
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 100});
    }
    json!({
        "providers": {"bench": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]
    })
}

/// A bucket no benchmark empties: the rows measure the cost of checking, not of refusing.
fn never_empty() -> Value {
    json!({"max_tokens": 4_000_000_000u32, "tokens_per_fill": 4_000_000_000u32, "fill_interval": "1s"})
}

/// Envoy's `local_ratelimit` with a bucket no run empties; `headers` turns on its
/// `X-RateLimit-*` response headers (off by default, as in Envoy).
fn native_local_ratelimit(headers: bool) -> Value {
    let bucket = never_empty();
    let mut config = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
        "stat_prefix": "bench_rl",
        "token_bucket": bucket,
        "filter_enabled": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "rl_enabled"},
        "filter_enforced": {"default_value": {"numerator": 100, "denominator": "HUNDRED"}, "runtime_key": "rl_enforced"}
    });
    if headers {
        config["enable_x_ratelimit_headers"] = json!("DRAFT_VERSION_03");
    }
    filter("envoy.filters.http.local_ratelimit", config)
}

/// The bench provider publishing the payload for the rate limiter (`payload_in_metadata`).
fn jwt_chain_config(keys: &[&SigningKey]) -> Value {
    let mut config = jwt_config(keys, false);
    config["providers"]["bench"]["payload_in_metadata"] = json!("bench");
    config
}

/// The pid of this process's child called `name` (the Envoy it started), from `/proc`.
fn child_pid(name: &str) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (comm, rest) = stat.split_once(") ")?;
            let ppid: u32 = rest.split(' ').nth(1)?.parse().ok()?;
            (ppid == me && comm.ends_with(&format!("({name}"))).then_some(pid)
        })
}

fn native_jwt(config: &Value) -> Value {
    let mut typed = config.clone();
    typed["@type"] =
        json!("type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication");
    filter("envoy.filters.http.jwt_authn", typed)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rsa = SigningKey::rsa("rs256", Algorithm::RS256);
    let ec = SigningKey::es256("es256");
    let config = jwt_config(&[&rsa, &ec], false);
    let config_text = config.to_string();
    let listeners = vec![
        direct_listener("plain", vec![]),
        direct_listener(
            "passthrough",
            vec![wasm_filter("test/passthrough.wasm", "passthrough", "")],
        ),
        // The pass-through making host calls a filter needs, one kind more per listener: what
        // each costs alone, in the same Envoy.
        direct_listener(
            "probe_header",
            vec![wasm_filter("test/passthrough.wasm", "probe_header", "header")],
        ),
        direct_listener(
            "probe_headers",
            vec![wasm_filter("test/passthrough.wasm", "probe_headers", "headers")],
        ),
        direct_listener(
            "probe_headers_clock",
            vec![wasm_filter(
                "test/passthrough.wasm",
                "probe_headers_clock",
                "headers,clock",
            )],
        ),
        direct_listener(
            "probe_set_header",
            vec![wasm_filter("test/passthrough.wasm", "probe_set_header", "set-header")],
        ),
        direct_listener("native_jwt", vec![native_jwt(&config)]),
        direct_listener(
            "native_jwt_cache",
            vec![native_jwt(&jwt_config(&[&rsa, &ec], true))],
        ),
        direct_listener(
            "meshgate_jwt",
            vec![wasm_filter("jwt-auth.wasm", "jwt_auth", &config_text)],
        ),
        direct_listener("native_rl", vec![native_local_ratelimit(false)]),
        direct_listener("native_rl_headers", vec![native_local_ratelimit(true)]),
        direct_listener(
            "meshgate_rl",
            vec![wasm_filter(
                "rate-limit.wasm",
                "rate_limit",
                &json!({"token_bucket": never_empty()}).to_string(),
            )],
        ),
        // Without headers on allowed responses, as native `local_ratelimit` answers by default.
        direct_listener(
            "meshgate_rl_quiet",
            vec![wasm_filter(
                "rate-limit.wasm",
                "rate_limit_quiet",
                &json!({"token_bucket": never_empty(), "headers_on_allowed": false}).to_string(),
            )],
        ),
        direct_listener(
            "meshgate_rl_keys",
            vec![wasm_filter(
                "rate-limit.wasm",
                "rate_limit_keys",
                &json!({
                    "max_keys": 20000,
                    "descriptors": [{"name": "per_key",
                        "entries": [{"request_header": {"header_name": "x-key", "descriptor_key": "k"}}],
                        "token_bucket": never_empty()}]
                })
                .to_string(),
            )],
        ),
        // The demo chain: jwt-auth publishes the payload, rate-limit keys a bucket on its `sub`.
        direct_listener(
            "meshgate_chain",
            vec![
                wasm_filter(
                    "jwt-auth.wasm",
                    "jwt_auth_chain",
                    &jwt_chain_config(&[&rsa, &ec]).to_string(),
                ),
                wasm_filter(
                    "rate-limit.wasm",
                    "rate_limit_chain",
                    &json!({
                        "descriptors": [{"name": "per_subject",
                            "entries": [{"jwt_claim": {"claim": "sub", "payload": "bench", "descriptor_key": "sub"}}],
                            "token_bucket": never_empty()}]
                    })
                    .to_string(),
                ),
            ],
        ),
    ];
    paths::wasm("jwt-auth");

    let now = mint::now();
    let claims = |i: usize| {
        json!({"iss": "https://bench.test", "aud": "bench", "sub": format!("user-{i}"),
               "exp": now + 3600, "iat": now})
    };
    let dir = tempfile::tempdir()?;
    let unique_script = |key: &SigningKey, name: &str| -> Result<PathBuf> {
        let tokens: Vec<String> = (0..args.unique_tokens)
            .map(|i| key.sign(&claims(i)))
            .collect();
        let list = dir.path().join(format!("{name}.txt"));
        std::fs::write(&list, tokens.join("\n"))?;
        let script = dir.path().join(format!("{name}.lua"));
        std::fs::write(
            &script,
            format!(
                "local tokens = {{}}\n\
                 for line in io.lines(\"{}\") do tokens[#tokens + 1] = line end\n\
                 local i = 0\n\
                 request = function()\n  i = i + 1\n  \
                 return wrk.format(\"GET\", \"/\", {{[\"Authorization\"] = \"Bearer \" .. tokens[(i % #tokens) + 1]}})\n\
                 end\n",
                list.display()
            ),
        )?;
        Ok(script)
    };
    eprintln!(
        "bench: minting {} RS256 and ES256 tokens",
        args.unique_tokens
    );
    let rs_unique = unique_script(&rsa, "rs256")?;
    let es_unique = unique_script(&ec, "es256")?;
    let keys_script = dir.path().join("keys.lua");
    std::fs::write(
        &keys_script,
        "local i = 0\nrequest = function()\n  i = i + 1\n  \
         return wrk.format(\"GET\", \"/\", {[\"x-key\"] = \"k\" .. (i % 10000)})\nend\n",
    )?;
    let rs_token = format!("Authorization: Bearer {}", rsa.sign(&claims(0)));
    let es_token = format!("Authorization: Bearer {}", ec.sign(&claims(0)));

    let none: &[String] = &[];
    let rs = std::slice::from_ref(&rs_token);
    let es = std::slice::from_ref(&es_token);
    // (group, name, listener, headers, script, compared with)
    type Spec<'a> = (
        &'static str,
        &'static str,
        &'static str,
        &'a [String],
        Option<&'a PathBuf>,
        Option<&'static str>,
    );
    let specs: Vec<Spec> = vec![
        ("floor", "no filter", "plain", none, None, None),
        (
            "floor",
            "Wasm pass-through",
            "passthrough",
            none,
            None,
            Some("no filter"),
        ),
        (
            "host calls",
            "pass-through + one request header read (`get_header_map_value`)",
            "probe_header",
            rs,
            None,
            Some("Wasm pass-through"),
        ),
        (
            "host calls",
            "pass-through + the request header map read (`get_header_map_pairs`)",
            "probe_headers",
            rs,
            None,
            Some("Wasm pass-through"),
        ),
        (
            "host calls",
            "pass-through + the header map and the clock",
            "probe_headers_clock",
            rs,
            None,
            Some("Wasm pass-through"),
        ),
        (
            "host calls",
            "pass-through + one request header set (`replace_header_map_value`)",
            "probe_set_header",
            rs,
            None,
            Some("Wasm pass-through"),
        ),
        (
            "jwt",
            "native jwt_authn, RS256, repeated token",
            "native_jwt",
            rs,
            None,
            Some("no filter"),
        ),
        (
            "jwt",
            "native jwt_authn + jwt_cache, RS256, repeated token",
            "native_jwt_cache",
            rs,
            None,
            Some("no filter"),
        ),
        (
            "jwt",
            "meshgate jwt-auth, RS256, repeated token",
            "meshgate_jwt",
            rs,
            None,
            Some("native jwt_authn + jwt_cache, RS256, repeated token"),
        ),
        (
            "jwt",
            "meshgate jwt-auth, ES256, repeated token",
            "meshgate_jwt",
            es,
            None,
            Some("Wasm pass-through"),
        ),
        (
            "jwt",
            "native jwt_authn, RS256, unique tokens",
            "native_jwt",
            none,
            Some(&rs_unique),
            Some("no filter"),
        ),
        (
            "jwt",
            "meshgate jwt-auth, RS256, unique tokens",
            "meshgate_jwt",
            none,
            Some(&rs_unique),
            Some("native jwt_authn, RS256, unique tokens"),
        ),
        (
            "jwt",
            "native jwt_authn, ES256, unique tokens",
            "native_jwt",
            none,
            Some(&es_unique),
            Some("no filter"),
        ),
        (
            "jwt",
            "meshgate jwt-auth, ES256, unique tokens",
            "meshgate_jwt",
            none,
            Some(&es_unique),
            Some("native jwt_authn, ES256, unique tokens"),
        ),
        (
            "rate limit",
            "native local_ratelimit, bucket never empties",
            "native_rl",
            none,
            None,
            Some("no filter"),
        ),
        (
            "rate limit",
            "native local_ratelimit + X-RateLimit headers, bucket never empties",
            "native_rl_headers",
            none,
            None,
            Some("no filter"),
        ),
        (
            "rate limit",
            "meshgate rate-limit, bucket never empties",
            "meshgate_rl",
            none,
            None,
            Some("native local_ratelimit + X-RateLimit headers, bucket never empties"),
        ),
        (
            "rate limit",
            "meshgate rate-limit without headers on allowed responses, bucket never empties",
            "meshgate_rl_quiet",
            none,
            None,
            Some("native local_ratelimit, bucket never empties"),
        ),
        (
            "rate limit",
            "meshgate rate-limit, 10k distinct keys",
            "meshgate_rl_keys",
            none,
            Some(&keys_script),
            Some("native local_ratelimit, bucket never empties"),
        ),
        (
            "chain",
            "meshgate jwt-auth → rate-limit keyed by the token's sub, ES256, repeated token",
            "meshgate_chain",
            es,
            None,
            Some("Wasm pass-through"),
        ),
    ];
    let specs: Vec<Spec> = specs
        .into_iter()
        .filter(|s| s.0 == "floor" || args.only.as_deref().is_none_or(|o| s.1.contains(o)))
        .collect();
    let mut markdown = String::new();
    for (i, workers) in args.workers.iter().enumerate() {
        let envoy = Envoy::builder(bootstrap(listeners.clone()))
            .component_log_level(None)
            .log_level("warn")
            .concurrency(*workers)
            .start();
        let pid = child_pid("envoy");
        // (req/s, p99 ms, non-2xx, CPU µs per request) per round.
        let mut samples: Vec<Vec<(f64, f64, u64, f64)>> = vec![Vec::new(); specs.len()];
        for round in 1..=args.rounds {
            for (i, (_, name, listener, headers, script, _)) in specs.iter().enumerate() {
                eprintln!(
                    "bench: {workers} worker(s), round {round}/{}: {name}",
                    args.rounds
                );
                let before = pid.map(process::cpu_time);
                let (rps, p99, non_2xx) = wrk(&envoy.url(listener), &args, headers, *script)?;
                let cpu_us = match (before, pid.map(process::cpu_time)) {
                    (Some(b), Some(a)) => {
                        a.saturating_sub(b).as_secs_f64() * 1e6 / (rps * f64::from(args.duration))
                    }
                    _ => f64::NAN,
                };
                samples[i].push((rps, p99, non_2xx, cpu_us));
            }
        }
        drop(envoy);
        let rows: Vec<Row> = specs
            .iter()
            .zip(samples)
            .map(|((group, name, _, _, _, base), mut runs)| {
                let mut cpu: Vec<f64> = runs.iter().map(|r| r.3).collect();
                cpu.sort_by(f64::total_cmp);
                runs.sort_by(|a, b| a.0.total_cmp(&b.0));
                let (rps, p99_ms, _, _) = runs[runs.len() / 2];
                Row {
                    group,
                    name: name.to_string(),
                    rps,
                    p99_ms,
                    cpu_us: cpu[cpu.len() / 2],
                    non_2xx: runs.iter().map(|r| r.2).sum(),
                    base: base.map(str::to_string),
                }
            })
            .collect();
        markdown.push_str(&render(&args, *workers, i == 0, &rows));
    }
    if args.only.is_none() {
        markdown.push_str(WHERE_THE_TIME_GOES);
    }
    if args
        .only
        .as_deref()
        .is_none_or(|o| "filter-memory".contains(o))
    {
        markdown.push_str(&filter_memory::run()?);
    }
    if args.only.as_deref().is_none_or(|o| "admission".contains(o)) {
        markdown.push_str(&admission::run(&args)?);
    }
    if args
        .only
        .as_deref()
        .is_none_or(|o| "admission".contains(o) || "images".contains(o))
    {
        markdown.push_str(&images::run(&args)?);
    }
    if args
        .only
        .as_deref()
        .is_none_or(|o| "admission".contains(o) || "wasm".contains(o))
    {
        markdown.push_str(&wasm_policies::run(&args)?);
    }
    if args
        .only
        .as_deref()
        .is_none_or(|o| "admission".contains(o) || "memory".contains(o))
    {
        markdown.push_str(&memory::run(&args)?);
    }
    if args.only.as_deref().is_none_or(|o| "keyless".contains(o)) {
        markdown.push_str(&keyless::run(&args)?);
    }
    std::fs::write(&args.output, &markdown)?;
    println!("{markdown}");
    Ok(())
}

/// What profiles of the filters found (`perf` on Envoy, each hostcall removed in turn, and the
/// "host calls" rows of the table).
const WHERE_THE_TIME_GOES: &str = "\n### Where the filters' time goes\n\n\
Envoy's binary is stripped, so `perf` splits its time only by area: the filters' own code (in \
V8) is about 3% of a worker's samples, against 1% for the pass-through. The rest of each \
filter's cost is calls between the filter and Envoy. The \"host calls\" rows price them: the \
pass-through making one call more per request (reading one header, reading the header map, \
reading the clock, setting a header) runs at about 0.8–0.9× the pass-through; each call (and \
the call back into the module to allocate what the host returns) costs about as much as the \
pass-through's whole overhead over no filter. No filter that reads a token or a clock can run \
at 0.95× the pass-through on this Envoy. What each filter calls per request:\n\n\
- jwt-auth, repeated token: the header map and the clock, exactly the \"header map and the \
clock\" row; the token is then found in a per-worker cache (0.45 µs natively, 2.5 µs before \
this round), so the distance between the two rows is the filter's own work.\n\
- rate-limit, bucket never empties: the clock, and by default two `RateLimit` response \
headers (two header sets); without them (`headers_on_allowed: false`, as native \
`local_ratelimit` answers by default) only the clock. Shared data is not touched per request: \
a worker leases up to 32 tokens of a busy bucket in one compare-and-swap, never more than the \
bucket holds in an interval.\n\
- rate-limit, 10k distinct keys: the `x-key` header, the clock, and the key's bucket in shared \
data, since each key comes back about twice per 1 s interval, too rarely for a lease (a lease \
starts once a bucket has given 8 tokens since it was full): on average 1.2 reads (the key's \
record is at its first probe or its second) and one compare-and-swap, each a call and a call \
back to allocate (the compare-and-swap used to read the record again: 3.2 calls, now 2.2; \
`ratelimit-core` counts them in a test).\n\
- unique tokens: parsing in Wasm, and Envoy parsing the public key again on every \
`verify_signature` call.\n\
- the chain: the calls of both filters; rate-limit parses a repeated published payload once \
per worker.\n\n\
On this 2-core machine `wrk` shares the cores with Envoy and ratios of one row move by 20% \
and more between runs: the CPU µs/req column is the steadier measure.\n";

/// The table of one worker count; `first` adds the file's title and the setup.
fn render(args: &Args, workers: u32, first: bool, rows: &[Row]) -> String {
    let by_name = |n: &str| rows.iter().find(|r| r.name == n);
    let plain = by_name("no filter").map_or(f64::NAN, |r| r.rps);
    let floor = by_name("Wasm pass-through").map_or(f64::NAN, |r| r.rps);
    let envoy_version = Command::new(paths::envoy_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut md = String::new();
    if first {
        let workers: Vec<String> = args.workers.iter().map(u32::to_string).collect();
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Produced by `make bench` (`cargo run -p meshgate-integration --bin meshgate-bench -- \
             --duration {} --rounds {} --connections {} --unique-tokens {} --workers {}`): one \
             Envoy per worker count, every variant a listener answering a direct response, loaded \
             in turn by `wrk -t1 -c{} -d{}s`; each row is the median of {} interleaved rounds. \
             Ratios compare rows of one table only. \"CPU µs/req\" is Envoy's CPU time (all \
             threads, from `/proc`) over the requests served: it depends less than req/s on what \
             else runs on the machine. Machine: {} cores. Envoy: `{}`.\n",
            args.duration,
            args.rounds,
            args.connections,
            args.unique_tokens,
            workers.join(","),
            args.connections,
            args.duration,
            args.rounds,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            envoy_version
        );
    }
    let _ = writeln!(
        md,
        "## Envoy filters, {workers} worker{}\n\n\
         | row | req/s | p99 ms | CPU µs/req | × no filter | × Wasm floor | compared with | × that | non-2xx |\n\
         |---|---:|---:|---:|---:|---:|---|---:|---:|",
        if workers == 1 { "" } else { "s" }
    );
    for r in rows {
        let base = r.base.as_deref().and_then(by_name);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.2} | {:.1} | {:.2} | {:.2} | {} | {} | {} |",
            r.name,
            r.rps,
            r.p99_ms,
            r.cpu_us,
            r.rps / plain,
            r.rps / floor,
            r.base.as_deref().unwrap_or("—"),
            base.map_or("—".into(), |b| format!("{:.2}", r.rps / b.rps)),
            r.non_2xx
        );
    }
    let _ = writeln!(
        md,
        "\n\"Unique tokens\" cycle through {} distinct tokens, more than either filter's token \
         cache keeps, so every request pays a signature check. Rate-limit rows use a bucket no \
         run empties. Rate-limit answers allowed responses with its two `RateLimit` headers by \
         default, native `local_ratelimit` with none: each is compared with the other's \
         configuration that does the same (native with its three `X-RateLimit-*` headers, ours \
         with `headers_on_allowed: false`). \"10k distinct keys\" cycles an `x-key` header \
         through 10000 values, one bucket each. The chain row runs jwt-auth (payload published) then rate-limit with a \
         bucket per `sub` claim. Groups: {}.\n",
        args.unique_tokens,
        rows.iter()
            .map(|r| r.group)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(", ")
    );
    md
}
