//! The admission webhook under load: the real `meshgate serve` with the dev configuration
//! (six starter Rego policies) over TLS.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use meshgate_integration::load::{LoadResult, fixed_rate};
use meshgate_integration::ports::free_port;
use meshgate_integration::webhook::{meshgate_binary, sample_review};
use meshgate_integration::{Webhook, paths};

use crate::{Args, post_script, wrk};

/// The latency rows: (review, by its index in the saturation rows; reviews per second). The
/// no-evaluation review at the first rate is the machine's own floor for that rate: the same
/// HTTP, TLS and scheduling, no policy.
const OPEN_LOOP: [(usize, u32); 3] = [(0, 1000), (2, 1000), (0, 3000)];

/// Runs every admission row and returns its Markdown section.
pub fn run(args: &Args) -> Result<String> {
    let repo = paths::repo_root();
    let config_path = repo.join("admission/examples/dev.yaml");
    let webhook = Webhook::start_file(
        &config_path,
        tempfile::tempdir()?,
        &repo.join(".state/admission-tls/ca.crt"),
        free_port(),
    );
    let work = tempfile::tempdir()?;
    let bodies = [
        (
            "Wasm pod, privileged → denied (6 policies run)",
            sample_review("bench", true, Some("wasmtime")),
        ),
        (
            "Wasm pod, clean → allowed (6 policies run)",
            sample_review("bench", false, Some("wasmtime")),
        ),
        (
            "non-Wasm pod → allowed without evaluation",
            sample_review("bench", true, None),
        ),
    ];
    let scripts = bodies
        .iter()
        .enumerate()
        .map(|(i, (_, review))| post_script(work.path(), &format!("review-{i}"), review))
        .collect::<Result<Vec<_>>>()?;
    let url = format!("{}/validate", webhook.url);

    let idle_rss = webhook.rss();
    // Saturation: wrk, keep-alive, as many reviews as the webhook answers; with the webhook's
    // own CPU time per review, since wrk shares the machine's cores with it.
    let mut saturation: Vec<Vec<(f64, f64, u64, f64)>> = vec![Vec::new(); bodies.len()];
    for round in 1..=args.rounds {
        for (i, (name, _)) in bodies.iter().enumerate() {
            eprintln!("bench: admission round {round}/{}: {name}", args.rounds);
            let (rps, p99, non_2xx, cpu_us) = wrk_cpu(&webhook, &url, args, &scripts[i])?;
            saturation[i].push((rps, p99, non_2xx, cpu_us));
        }
    }
    let loaded_rss = webhook.peak_rss();

    // Fixed rates: open-loop load, the denied review (every policy runs, the longest answer).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pem = std::fs::read(&webhook.ca)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem)?])
        .build()?;
    let mut runs: Vec<Vec<LoadResult>> = vec![Vec::new(); OPEN_LOOP.len()];
    for round in 1..=args.rounds {
        for (&(review, rate), runs) in OPEN_LOOP.iter().zip(&mut runs) {
            eprintln!(
                "bench: admission round {round}/{}: {rate} reviews/s, {}",
                args.rounds, bodies[review].0
            );
            let body = bytes::Bytes::from(bodies[review].1.to_string());
            // A short warm-up opens the connections the run then reuses.
            runtime.block_on(fixed_rate(
                client.clone(),
                &url,
                body.clone(),
                rate,
                Duration::from_secs(1),
            ));
            runs.push(runtime.block_on(fixed_rate(
                client.clone(),
                &url,
                body,
                rate,
                Duration::from_secs(u64::from(args.duration) * 2),
            )));
        }
    }
    // Each row: the round with the median p99.
    let fixed: Vec<(usize, u32, LoadResult)> = OPEN_LOOP
        .iter()
        .zip(runs)
        .map(|(&(review, rate), mut runs)| {
            runs.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
            (review, rate, runs.swap_remove(runs.len() / 2))
        })
        .collect();
    drop(webhook);

    // In process, no HTTP: what the pipeline and each policy cost per review, in the binary
    // under test (`meshgate policy bench`).
    let review_file = work.path().join("denied-review.json");
    std::fs::write(&review_file, bodies[0].1.to_string())?;
    let in_process = policy_bench(&config_path, &review_file, 3000, "denied")?;
    let us = |key: &str| in_process[key].as_f64().unwrap_or(f64::NAN);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Admission webhook\n\n`meshgate serve` with `admission/examples/dev.yaml` (six starter \
         Rego policies, regorus), TLS on 127.0.0.1, logging every decision. The load generator \
         shares the machine's {} cores with the webhook.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let _ = writeln!(
        md,
        "Saturation: `wrk -t1 -c{} -d{}s` posting one AdmissionReview over keep-alive TLS, median \
         of {} rounds (rounds interleaved). CPU is the webhook process's own (user + system, \
         `/proc/<pid>/stat`) over the run, per review answered; \"× no evaluation\" compares \
         reviews/s with the last row's, which answers before any policy runs.\n\n\
         | review | reviews/s | × no evaluation | p99 ms | CPU µs / review | non-2xx |\n\
         |---|---:|---:|---:|---:|---:|",
        args.connections, args.duration, args.rounds
    );
    let medians: Vec<(f64, f64, u64, f64)> = saturation
        .into_iter()
        .map(|mut runs| {
            runs.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (rps, p99, _, cpu_us) = runs[runs.len() / 2];
            (rps, p99, runs.iter().map(|r| r.2).sum(), cpu_us)
        })
        .collect();
    let baseline = medians.last().map_or(f64::NAN, |m| m.0);
    for ((name, _), (rps, p99, non_2xx, cpu_us)) in bodies.iter().zip(&medians) {
        let _ = writeln!(
            md,
            "| {name} | {rps:.0} | {:.2} | {p99:.2} | {cpu_us:.0} | {non_2xx} |",
            rps / baseline
        );
    }
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let _ = writeln!(
        md,
        "\nResident memory: {:.1} MiB idle (after start), {:.1} MiB at its peak (`VmHWM`) after \
         every saturation run.",
        mib(idle_rss),
        mib(loaded_rss)
    );
    let _ = writeln!(
        md,
        "\nFixed rate, open loop (requests leave on schedule whatever the answers; \
         `meshgate_integration::load`), {} s per row and round, rounds interleaved, the round \
         with the median p99 of {}. The review that no policy judges shows what the machine \
         itself adds at that rate (HTTP, TLS, the load generator and the webhook sharing 2 \
         cores):\n\n\
         | review | rate | answered/s | p50 ms | p99 ms | max ms | failed |\n\
         |---|---:|---:|---:|---:|---:|---:|",
        args.duration * 2,
        args.rounds
    );
    for (review, rate, r) in &fixed {
        let _ = writeln!(
            md,
            "| {} | {rate}/s | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            bodies[*review].0, r.achieved_rps, r.p50_ms, r.p99_ms, r.max_ms, r.failed
        );
    }
    let _ = writeln!(
        md,
        "\nIn process (no HTTP, no TLS; `meshgate policy bench --config admission/examples/dev.yaml \
         --iterations 3000`, the binary above): a review of the denied pod (selection and the six \
         policies) p50 {:.0} µs, p99 {:.0} µs; the six evaluations alone, on an input converted \
         beforehand, p50 {:.0} µs. Each policy alone:\n\n| policy | engine | evaluation p50 µs |\n\
         |---|---|---:|",
        us("p50_us"),
        us("p99_us"),
        us("evaluation_p50_us"),
    );
    for policy in in_process["policies"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} |",
            policy["name"].as_str().unwrap_or("?"),
            policy["engine"].as_str().unwrap_or("?"),
            policy["evaluation_p50_us"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let _ = writeln!(
        md,
        "\nWhere the time goes (`perf` on the webhook under this load): with six policies, \
         regorus' VM running them is most of a review; every policy runs for every review, and \
         the table above is each one's share. Per call of a Rego function the VM copies the \
         rule's metadata, so a policy made of small functions (`allowed-registries` normalises \
         image names) costs the most. Two changes to the starters were measured: \
         `regex.match` (regorus gives each call fresh matching caches: tens of µs) replaced by \
         string builtins, and `privileged` reading the lib's container set once (a rule of \
         another package is looked up again on every reference). The rest is the HTTP/TLS/JSON \
         path (the last saturation row's CPU per review), the hand-off of each evaluation to \
         a blocking thread (running it on the I/O threads instead was measured: 20% less CPU \
         per review but 25% fewer reviews/s, as the I/O waited), and one log line per review \
         (about 4%)."
    );
    Ok(md)
}

/// A `wrk` run against the webhook, with the webhook's CPU time per review answered (µs).
pub(crate) fn wrk_cpu(
    webhook: &Webhook,
    url: &str,
    args: &Args,
    script: &std::path::PathBuf,
) -> Result<(f64, f64, u64, f64)> {
    let before = webhook.cpu_time();
    let (rps, p99, non_2xx) = wrk(url, args, &[], Some(script))?;
    let cpu = webhook.cpu_time().saturating_sub(before);
    let answered = rps * f64::from(args.duration);
    Ok((rps, p99, non_2xx, cpu.as_secs_f64() * 1e6 / answered))
}

/// One run of `meshgate policy bench` (the binary under test, in process: no HTTP) with the
/// configuration at `config` on `review`: its JSON report, checked to reach `decision`.
pub fn policy_bench(
    config: &Path,
    review: &Path,
    iterations: usize,
    decision: &str,
) -> Result<serde_json::Value> {
    let out = std::process::Command::new(meshgate_binary())
        .args(["policy", "bench", "--config"])
        .arg(config)
        .arg("--review")
        .arg(review)
        .args(["--iterations", &iterations.to_string()])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}: meshgate policy bench failed: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    anyhow::ensure!(
        report["decision"] == decision,
        "{}: {report}",
        config.display()
    );
    Ok(report)
}
