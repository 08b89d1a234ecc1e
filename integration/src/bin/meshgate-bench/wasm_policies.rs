//! Wasm policies against Rego: the same "no privileged pods" rule per review in process
//! (`meshgate policy bench`; instantiate + validate for Wasm, with either instance allocator),
//! and the real `meshgate serve` over TLS running one or the other.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use meshgate_integration::webhook::sample_review;
use meshgate_integration::{Webhook, paths};

use crate::admission::{policy_bench, wrk_cpu};
use crate::{Args, post_script};

/// Reviews per in-process row (after a warm-up of a tenth of that).
const EVALUATIONS: usize = 5000;

/// The policy entries compared, as configuration text; Wasm code is compiled into `cache`.
fn variants(cache: &Path) -> Vec<(&'static str, String)> {
    let repo = paths::repo_root();
    let dist = paths::dist_dir();
    let rego = format!(
        "policies:\n  - name: privileged\n    rego: {{files: [\"{0}/policies/rego/privileged\", \"{0}/policies/rego/lib\"]}}\n",
        repo.display()
    );
    let wasm = |pooling: bool, file: &str, settings: &str| {
        format!(
            "wasm: {{poolingAllocator: {pooling}, cacheDir: \"{}\"}}\npolicies:\n  - name: privileged\n    wasm: {{file: \"{}\"}}\n{settings}",
            cache.display(),
            dist.join(file).display()
        )
    };
    vec![
        ("Rego `privileged` (regorus VM)", rego),
        (
            "Wasm `privileged`, pooling allocator (default)",
            wasm(true, "policies/privileged.wasm", ""),
        ),
        (
            "Wasm `privileged`, on-demand allocator",
            wasm(false, "policies/privileged.wasm", ""),
        ),
        (
            "Wasm floor: a component that admits at once, pooling allocator",
            wasm(
                true,
                "test/misbehaving-policy.wasm",
                "    settings: {behavior: accept}\n",
            ),
        ),
    ]
}

/// Runs the Wasm policy rows and returns their Markdown section.
pub fn run(args: &Args) -> Result<String> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Wasm policies\n\nThe same rule, \"no privileged containers on Wasm runtimes\", as the \
         Rego starter (`policies/rego/privileged`) and as a component built with the SDK \
         (`policies/wasm/privileged`, `make policies`). Both pass the same case file.\n\n\
         Per review, in process: `meshgate policy bench --config C --review privileged-pod.json \
         --iterations {EVALUATIONS}` (release build), {} rounds interleaved across the rows, \
         each row the round with the median evaluation time. A review is selection plus the one \
         policy; an evaluation is the policy alone on an input converted beforehand (as the \
         pipeline converts it once per review for every policy): for Wasm, instantiating the \
         component in a fresh store, calling `validate` and dropping the store.\n\n\
         | policy | review p50 µs | review p99 µs | evaluation p50 µs | evaluation p99 µs |\n\
         |---|---:|---:|---:|---:|",
        args.rounds
    );
    let work = tempfile::tempdir()?;
    let review = work.path().join("privileged-pod.json");
    std::fs::write(
        &review,
        sample_review("bench", true, Some("wasmtime")).to_string(),
    )?;
    let cache = work.path().join("cache");
    let configs = variants(&cache)
        .into_iter()
        .enumerate()
        .map(|(i, (name, config))| {
            let path = work.path().join(format!("config-{i}.yaml"));
            std::fs::write(&path, config)?;
            Ok((name, path))
        })
        .collect::<Result<Vec<_>>>()?;
    // Rounds interleaved across the variants, so a busy moment of the machine falls on all of
    // them alike; each row is its round with the median evaluation time.
    let mut runs = vec![Vec::new(); configs.len()];
    for round in 1..=args.rounds {
        for ((name, path), runs) in configs.iter().zip(&mut runs) {
            eprintln!(
                "bench: wasm policies in process, round {round}/{}: {name}",
                args.rounds
            );
            // The floor's component admits at once; the others deny the privileged pod.
            let decision = if name.starts_with("Wasm floor") {
                "allowed"
            } else {
                "denied"
            };
            runs.push(policy_bench(path, &review, EVALUATIONS, decision)?);
        }
    }
    for ((name, _), mut runs) in configs.iter().zip(runs) {
        let field = |run: &serde_json::Value, key: &str| run[key].as_f64().unwrap_or(f64::NAN);
        runs.sort_by(|a, b| {
            field(a, "evaluation_p50_us").total_cmp(&field(b, "evaluation_p50_us"))
        });
        let run = &runs[runs.len() / 2];
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {:.1} | {:.1} | {:.1} |",
            field(run, "p50_us"),
            field(run, "p99_us"),
            field(run, "evaluation_p50_us"),
            field(run, "evaluation_p99_us"),
        );
    }

    // The webhook with one or the other policy.
    let script = post_script(
        work.path(),
        "privileged",
        &sample_review("bench", true, Some("wasmtime")),
    )?;
    let mut rows = Vec::new();
    for (name, config) in variants(&cache).into_iter().take(3) {
        let webhook = Webhook::start(&config);
        let url = format!("{}/validate", webhook.url);
        let mut runs = Vec::new();
        for round in 1..=args.rounds {
            eprintln!("bench: wasm policies round {round}/{}: {name}", args.rounds);
            runs.push(wrk_cpu(&webhook, &url, args, &script)?);
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        rows.push((name, runs[runs.len() / 2]));
    }
    let rego = rows.first().map_or(f64::NAN, |(_, run)| run.0);
    let _ = writeln!(
        md,
        "\nWhere a Wasm evaluation's time goes (`perf` on `meshgate policy bench`, with \
         wasmtime's perf map for the policy's code): about half is the policy's own code, \
         mostly serde_json reading the review and the Pod into k8s-openapi types (the SDK reads \
         the Pod straight from the review's text, and builds no JSON tree unless the policy \
         asks); about a quarter is resetting the pooling slot when the store is dropped \
         (copying back the policy's data image, 88 KiB for `privileged`, and zeroing its \
         256 KiB stack and the heap it used); the rest is instantiating the component. The \
         floor row is everything but the policy's own code. This machine's speed varies with \
         its host's load: the same `privileged` evaluation measured 21–25 µs in quiet moments \
         of this round and 36–45 µs in busy ones."
    );
    let _ = writeln!(
        md,
        "\n`meshgate serve` (release) with only that policy, judging the privileged pod (denied): \
         `wrk -t1 -c{} -d{}s` over keep-alive TLS, median of {} rounds; CPU is the webhook \
         process's own per review answered.\n\n\
         | policy | reviews/s | × Rego | p99 ms | CPU µs / review | non-2xx |\n\
         |---|---:|---:|---:|---:|---:|",
        args.connections, args.duration, args.rounds
    );
    for (name, (rps, p99, non_2xx, cpu_us)) in &rows {
        let _ = writeln!(
            md,
            "| {name} | {rps:.0} | {:.2} | {p99:.2} | {cpu_us:.0} | {non_2xx} |",
            rps / rego
        );
    }
    let _ = writeln!(
        md,
        "\nKubewarden's policy-server is not installed here. Measured side by side with it earlier \
         on this machine (its release build, its Rust pod-privileged policy v1.0.8, the same \
         privileged Pod, TLS with P-256 certificates on both, `wrk -t1 -c16`): Kubewarden 4,020 \
         reviews/s (p99 5.77 ms), this webhook's Rego `privileged` 15,805 (3.9×). The Wasm row's \
         ratio to Rego above is therefore the in-run measure of the Wasm path against Kubewarden: \
         0.8× Rego is about 3× Kubewarden. A Wasm evaluation is a fresh instance every time: \
         slots of the pooling allocator are reset in place with `memset` (the policies are \
         built with a 256 KiB stack, so there is little to reset), where the on-demand \
         allocator maps and unmaps memory per evaluation."
    );
    Ok(md)
}
