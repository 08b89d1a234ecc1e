//! The webhook's memory under hostile reviews: the real `meshgate serve` with the dev
//! configuration, four maximum-size reviews at once, peak resident memory (`VmHWM`) read from
//! `/proc`. A fresh process per row, so each peak is that row's own.

use std::fmt::Write as _;

use anyhow::{Result, bail};
use meshgate_integration::ports::free_port;
use meshgate_integration::webhook::{Hostile, hostile_review, meshgate_binary};
use meshgate_integration::{Webhook, paths};

use crate::Args;

/// Reviews sent at once.
const CONCURRENT: usize = 4;
/// Rounds of `CONCURRENT` reviews per row.
const ROUNDS: usize = 3;

/// Runs the memory rows and returns their Markdown section.
pub fn run(_args: &Args) -> Result<String> {
    let repo = paths::repo_root();
    let config = repo.join("admission/examples/dev.yaml");
    let ca = repo.join(".state/admission-tls/ca.crt");
    let max_body = 3 * 1024 * 1024;
    let binary = meshgate_binary();
    let rows = [
        ("idle, after start", None),
        (
            "4 × 3 MiB review, one array of 1.5 M zeros (refused at the value budget)",
            Some(Hostile::Zeros),
        ),
        (
            "4 × 3 MiB review, 49 800 strings (within the budget: every policy judges it)",
            Some(Hostile::Strings),
        ),
        (
            "4 × 1.2 MB review, a Pod of 4 950 containers as the API server sends them (every policy judges each)",
            Some(Hostile::Containers),
        ),
    ];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Admission webhook memory\n\n`meshgate serve` with `admission/examples/dev.yaml` \
         (its six Rego starters; default limits: `maxBodyBytes` 3 MiB, `maxBytesInFlight` 12 MiB, \
         `maxJsonValues` 50 000), a fresh process per row; {CONCURRENT} reviews as large as the \
         limits allow posted at once over TLS, {ROUNDS} rounds. Peak RSS is the process's `VmHWM`. The Deployment's memory limit \
         is 256 Mi; the goal is at most 128 MiB. Binary: `{}`.\n\n\
         | load | peak RSS MiB | RSS after MiB | answers |\n|---|---:|---:|---|",
        binary.strip_prefix(&repo).unwrap_or(&binary).display()
    );
    for (name, shape) in rows {
        eprintln!("bench: memory: {name}");
        let webhook = Webhook::start_file(&config, tempfile::tempdir()?, &ca, free_port());
        let mut answers = std::collections::BTreeMap::<String, usize>::new();
        if let Some(shape) = shape {
            for round in 0..ROUNDS {
                let handles: Vec<_> = (0..CONCURRENT)
                    .map(|i| {
                        let client = webhook.client().clone();
                        let url = format!("{}/validate", webhook.url);
                        let body = hostile_review(&format!("m-{round}-{i}"), shape, max_body - 64);
                        std::thread::spawn(move || {
                            client
                                .post(url)
                                .header("content-type", "application/json")
                                .body(body)
                                .send()
                                .and_then(|r| {
                                    let status = r.status().as_u16();
                                    r.text().map(|t| (status, t))
                                })
                        })
                    })
                    .collect();
                for handle in handles {
                    let answer = match handle.join() {
                        Ok(Ok((status, text))) => {
                            let review: serde_json::Value =
                                serde_json::from_str(&text).unwrap_or_default();
                            let response = &review["response"];
                            let reason = response["status"]["reason"].as_str().unwrap_or("");
                            format!(
                                "{status} {}{}",
                                if response["allowed"] == true {
                                    "allowed"
                                } else {
                                    "denied"
                                },
                                if reason.is_empty() {
                                    String::new()
                                } else {
                                    format!(" ({reason})")
                                }
                            )
                        }
                        Ok(Err(e)) => format!("no answer: {e}"),
                        Err(_) => bail!("a client thread panicked"),
                    };
                    *answers.entry(answer).or_default() += 1;
                }
            }
        }
        let mib = |bytes: u64| bytes as f64 / 1048576.0;
        let answers = answers
            .iter()
            .map(|(a, n)| format!("{n} × {a}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {:.1} | {} |",
            mib(webhook.peak_rss()),
            mib(webhook.rss()),
            if answers.is_empty() {
                "—".into()
            } else {
                answers
            }
        );
    }
    Ok(md)
}
