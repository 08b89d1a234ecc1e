//! The CPU a cold signature verification costs, keyed against keyless: the webhook's keyed
//! check (a cosign ECDSA P-256 signature over its simple-signing payload) and the Sigstore
//! conformance suite's public-good bundles (a managed-key bundle, and a keyless one: Fulcio
//! chain, SCT, Rekor entry with its signed entry timestamp, inclusion proof and checkpoint,
//! identity), each parsed and verified from its bytes, in process on one thread. A warm review
//! costs the same for both: results are cached per (repository, digest, rule) alike.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use meshgate_admission::signing::keyless::{self, Artifact, Bundle, Match, Policy, TrustedRoot};
use meshgate_admission::signing::{Algorithm, PublicKey, keys, legacy};

use crate::Args;

const IDENTITY: &str = "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main";
const ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Verifications per round.
const ITERATIONS: u32 = 300;

/// Runs the rows and returns their Markdown section.
pub fn run(args: &Args) -> Result<String> {
    let sigstore = meshgate_integration::paths::shared("sigstore");
    let conformance = sigstore.join("conformance");
    let artifact = std::fs::read(conformance.join("a.txt"))?;
    let root = TrustedRoot::from_json(&std::fs::read(
        sigstore.join("trusted_root.public-good.json"),
    )?)
    .map_err(|e| anyhow!("trusted root: {e}"))?;
    let keyless_bundle = std::fs::read(conformance.join("happy-path-v0.3/bundle.sigstore.json"))?;
    let managed_bundle =
        std::fs::read(conformance.join("managed-key-happy-path/bundle.sigstore.json"))?;
    let managed_key = keyless::PublicKey::from_pem(&std::fs::read(
        conformance.join("managed-key-happy-path/key.pub"),
    )?)
    .map_err(|e| anyhow!("managed key: {e}"))?;
    let identity = Policy::Identity {
        subject: Match::Exact(IDENTITY.into()),
        issuer: Match::Exact(ISSUER.into()),
    };
    let managed = Policy::Key(managed_key);
    let verify_bundle = |bytes: &[u8], policy: &Policy| -> Result<()> {
        let bundle = Bundle::from_json(bytes).map_err(|e| anyhow!("{e}"))?;
        keyless::verify_now(&bundle, Artifact::Bytes(&artifact), policy, &root)
            .map(|_| ())
            .map_err(|e| anyhow!("{e}"))
    };

    // The keyed check: a cosign signature over a simple-signing payload.
    let (private, _) = keys::generate(Algorithm::EcdsaP256, b"").map_err(|e| anyhow!("{e:?}"))?;
    let signer = keys::signer(private.as_bytes(), b"").map_err(|e| anyhow!("{e:?}"))?;
    let key = PublicKey::of_signer("release", &signer).map_err(|e| anyhow!("{e:?}"))?;
    let digest = format!("sha256:{}", "ab".repeat(32));
    let payload = serde_json::to_vec(&serde_json::json!({
        "critical": {"identity": {"docker-reference": "registry.example/app"},
                     "image": {"docker-manifest-digest": digest},
                     "type": "cosign container image signature"},
        "optional": null,
    }))?;
    let signature = signer.sign(&payload).map_err(|e| anyhow!("{e}"))?;
    let verify_keyed = || -> Result<()> {
        anyhow::ensure!(
            key.verifies(&signature, &payload),
            "keyed signature refused"
        );
        anyhow::ensure!(legacy::parse_payload(&payload).map_err(|e| anyhow!(e))? == digest);
        Ok(())
    };

    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        (
            "keyed: cosign signature (ECDSA P-256) and its payload",
            Vec::new(),
        ),
        (
            "managed-key Sigstore bundle (Rekor entry: SET, inclusion proof, checkpoint)",
            Vec::new(),
        ),
        (
            "keyless Sigstore bundle (Fulcio chain, SCT, Rekor entry, identity)",
            Vec::new(),
        ),
    ];
    for _ in 0..args.rounds.max(1) {
        for (i, (_, runs)) in rows.iter_mut().enumerate() {
            let started = Instant::now();
            for _ in 0..ITERATIONS {
                match i {
                    0 => verify_keyed(),
                    1 => verify_bundle(&managed_bundle, &managed),
                    _ => verify_bundle(&keyless_bundle, &identity),
                }
                .context("verification failed")?;
            }
            runs.push(started.elapsed().as_secs_f64() * 1e3 / f64::from(ITERATIONS));
        }
    }
    let median = |runs: &mut Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let medians: Vec<(&str, f64)> = rows
        .iter_mut()
        .map(|(name, runs)| (*name, median(runs)))
        .collect();
    let keyed = medians[0].1;
    let mut out = String::new();
    writeln!(
        out,
        "\n## Keyless verification: CPU per cold verification\n"
    )?;
    writeln!(
        out,
        "One thread, in the bench process (its dev build: dependencies optimised, meshgate's own \
         code not), each verification from the bundle's bytes (parse and all \
         checks; registry reads excluded), {ITERATIONS} per round, median of {} rounds. The \
         bundles are the Sigstore conformance suite's (`happy-path-v0.3`, \
         `managed-key-happy-path`) under the public-good trusted root. A warm review costs the same for keyed and keyless \
         images: verified results are cached per (repository, digest, rule) alike.\n",
        args.rounds
    )?;
    writeln!(out, "| verification | ms each | over keyed |")?;
    writeln!(out, "|---|---:|---:|")?;
    for (name, ms) in &medians {
        writeln!(out, "| {name} | {ms:.3} | {:+.3} ms |", ms - keyed)?;
    }
    Ok(out)
}
