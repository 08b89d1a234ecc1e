//! The `meshgate` command: `meshgate serve` runs the admission webhook, `meshgate policy test`
//! runs policy unit tests and case files, `meshgate policy verify` Gatekeeper suites, and
//! `push`, `generate-key-pair`, `sign` and `verify` publish signed Wasm artifacts.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshgate_admission::config::{Config, LogFormat};
use meshgate_admission::registry::Registries;

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "meshgate: Wasm admission gate for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// A registry (`host[:port]`) spoken to in plain HTTP, such as a local development
    /// registry; repeat for several. Every other registry, loopback ones included, is HTTPS.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "MESHGATE_INSECURE_REGISTRIES",
        value_delimiter = ',',
        global = true
    )]
    insecure_registries: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the validating admission webhook over HTTPS.
    Serve {
        /// The YAML configuration (see admission/README.md).
        #[arg(long)]
        config: PathBuf,
        /// Overrides the configuration's `listen` address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Push a Wasm module to an OCI registry; prints the manifest digest.
    Push {
        /// The `.wasm` file.
        file: PathBuf,
        /// Where to: `registry/repository:tag`.
        reference: String,
        /// Manifest layout: `oci` (CNCF TAG Runtime, for Wasm runtimes) or `istio` (WasmPlugin).
        #[arg(long, value_enum, default_value = "oci")]
        format: meshgate_admission::artifact::Format,
    },
    /// Generate a cosign-compatible key pair: `PREFIX.key` (encrypted with the password in
    /// `COSIGN_PASSWORD`) and `PREFIX.pub`.
    GenerateKeyPair {
        /// Path prefix of the two files.
        #[arg(long, default_value = "cosign")]
        output_prefix: PathBuf,
        /// Key type.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        algorithm: meshgate_admission::signing::Algorithm,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Sign an image or artifact in its registry, as cosign does (the private key's password
    /// comes from `COSIGN_PASSWORD`).
    Sign {
        /// The private key (`cosign.key`).
        #[arg(long)]
        key: PathBuf,
        /// Attach a sigstore bundle as an OCI referrer instead of the `.sig` tag.
        #[arg(long)]
        bundle: bool,
        /// `registry/repository:tag` or `@sha256:...`.
        reference: String,
    },
    /// Check that an image or artifact is signed by a key, or keyless by an identity: exit 0
    /// with a summary, or 1 with the reason.
    Verify {
        /// The public key (`cosign.pub`); repeat to accept any of several.
        #[arg(long, required_unless_present = "certificate_identity")]
        key: Vec<PathBuf>,
        /// Keyless: the certificate identity (subject alternative name) that must have signed.
        #[arg(long, requires = "certificate_oidc_issuer", conflicts_with = "key")]
        certificate_identity: Option<String>,
        /// Keyless: the OIDC issuer of that identity.
        #[arg(long, requires = "certificate_identity")]
        certificate_oidc_issuer: Option<String>,
        /// Keyless: the `trusted_root.json`; default: the Sigstore public-good root built in.
        #[arg(long, requires = "certificate_identity")]
        trusted_root: Option<PathBuf>,
        /// `registry/repository:tag` or `@sha256:...`.
        reference: String,
    },
    /// Verify a Sigstore bundle for a file or a `sha256:<hex>` digest, offline against a
    /// trusted root: exit 0 when it verifies, 1 with the reason otherwise.
    VerifyBundle {
        /// The bundle (`.sigstore.json`).
        #[arg(long)]
        bundle: PathBuf,
        /// The certificate's identity (subject alternative name) for keyless bundles.
        #[arg(long, requires = "certificate_oidc_issuer", conflicts_with = "key")]
        certificate_identity: Option<String>,
        /// The OIDC issuer of that identity.
        #[arg(long, requires = "certificate_identity")]
        certificate_oidc_issuer: Option<String>,
        /// A PEM public key, for bundles signed with a managed key.
        #[arg(long, required_unless_present = "certificate_identity")]
        key: Option<PathBuf>,
        /// The `trusted_root.json`; default: the Sigstore public-good root built in.
        #[arg(long)]
        trusted_root: Option<PathBuf>,
        /// The artifact's path, or `sha256:<hex>` for its digest.
        file_or_digest: String,
    },
    /// Work with policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run Rego unit tests (`test_*` rules in `*_test.rego`) and YAML case files
    /// (`cases.yaml`, `*.cases.yaml`) found under the given paths.
    Test {
        /// Directories (searched recursively) or files. Default: the current directory.
        paths: Vec<PathBuf>,
    },
    /// Run Gatekeeper `gator verify` suites (`kind: Suite`): each case's object against the
    /// test's ConstraintTemplate and Constraint, with the expected violations and messages.
    Verify {
        /// Suite files.
        #[arg(required = true)]
        suites: Vec<PathBuf>,
    },
    /// Time the configuration's policies on one AdmissionReview: load them as `serve` does,
    /// then review it repeatedly in this process and print the verdict, the latency of a
    /// review (selection, every policy; no HTTP) and that of the policies' evaluations alone
    /// (`evaluation_*`: on an input converted beforehand; `policies`: each policy's own).
    Bench {
        /// The webhook configuration.
        #[arg(long)]
        config: PathBuf,
        /// An AdmissionReview (JSON or YAML).
        #[arg(long)]
        review: PathBuf,
        /// Timed reviews (after a tenth as many untimed ones).
        #[arg(long, default_value_t = 5000)]
        iterations: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let insecure = cli.insecure_registries;
    match cli.command {
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Push {
            file,
            reference,
            format,
        } => push(&file, &reference, format, &insecure),
        Command::GenerateKeyPair {
            output_prefix,
            algorithm,
            force,
        } => generate_key_pair(&output_prefix, algorithm, force),
        Command::Sign {
            key,
            bundle,
            reference,
        } => sign(&key, bundle, &reference, &insecure),
        Command::Verify {
            key,
            certificate_identity,
            certificate_oidc_issuer,
            trusted_root,
            reference,
        } => match certificate_identity.zip(certificate_oidc_issuer) {
            Some((identity, issuer)) => verify_keyless(
                identity,
                issuer,
                trusted_root.as_deref(),
                &reference,
                &insecure,
            ),
            None => verify(&key, &reference, &insecure),
        },
        Command::VerifyBundle {
            bundle,
            certificate_identity,
            certificate_oidc_issuer,
            key,
            trusted_root,
            file_or_digest,
        } => verify_bundle(&meshgate_admission::signing::keyless::BundleCheck {
            bundle: &bundle,
            artifact: &file_or_digest,
            trusted_root: trusted_root.as_deref(),
            key: key.as_deref(),
            identity: certificate_identity
                .zip(certificate_oidc_issuer)
                .map(|(s, i)| {
                    use meshgate_admission::signing::keyless::Match;
                    (Match::Exact(s), Match::Exact(i))
                }),
        }),
        Command::Policy {
            command:
                PolicyCommand::Bench {
                    config,
                    review,
                    iterations,
                },
        } => bench(&config, &review, iterations),
        Command::Policy {
            command: PolicyCommand::Test { paths },
        } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                paths
            };
            report(&meshgate_admission::policy_test::run(&paths))
        }
        Command::Policy {
            command: PolicyCommand::Verify { suites },
        } => report(&meshgate_admission::policy_test::suite::run(&suites)),
    }
}

/// Prints a test report; success when every test of at least one ran and passed.
fn report(report: &meshgate_admission::policy_test::Report) -> ExitCode {
    print!("{}", report.render());
    if report.failed() == 0 && !report.results.is_empty() {
        ExitCode::SUCCESS
    } else {
        if report.results.is_empty() {
            eprintln!("no tests found");
        }
        ExitCode::FAILURE
    }
}

fn bench(config: &std::path::Path, review: &std::path::Path, iterations: usize) -> ExitCode {
    let config = match Config::load(config) {
        Ok(c) => c,
        Err(e) => return fail(&format!("invalid configuration: {e}")),
    };
    let request = match std::fs::read_to_string(review)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            serde_yaml::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string())
        }) {
        Ok(review) if review["request"].is_object() => review["request"].clone(),
        Ok(_) => return fail(&format!("{}: no `request` object", review.display())),
        Err(e) => return fail(&format!("{}: {e}", review.display())),
    };
    let metrics = std::sync::Arc::new(meshgate_admission::metrics::Metrics::new());
    let pipeline = match meshgate_admission::review::Pipeline::load(&config, metrics) {
        Ok(p) => p,
        Err(e) => return fail(&e.to_string()),
    };
    let iterations = iterations.max(1);
    for _ in 0..iterations / 10 {
        pipeline.review(request.clone());
    }
    let mut times = Vec::with_capacity(iterations);
    let mut verdict = None;
    for _ in 0..iterations {
        let request = request.clone();
        let started = std::time::Instant::now();
        let answer = pipeline.review(request);
        times.push(started.elapsed());
        verdict = Some(answer);
    }
    // Each policy alone, on an input built beforehand (its JSON text and Rego value too, as
    // the pipeline builds them once per review for every policy): the evaluation itself.
    let policies = pipeline.policies();
    let mut evaluations = Vec::with_capacity(iterations);
    let mut each = vec![Vec::with_capacity(iterations); policies.len()];
    for i in 0..iterations + iterations / 10 {
        let input = meshgate_admission::policy::Input::new(request.clone());
        let (_, _) = (input.text(), input.rego());
        let mut total = std::time::Duration::ZERO;
        for (policy, times) in policies.iter().zip(&mut each) {
            let started = std::time::Instant::now();
            let _ = std::hint::black_box(policy.evaluate(&input));
            let elapsed = started.elapsed();
            total += elapsed;
            if i >= iterations / 10 {
                times.push(elapsed);
            }
        }
        if i >= iterations / 10 {
            evaluations.push(total);
        }
    }
    let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
    let quantile = |times: &mut Vec<std::time::Duration>, q: f64| {
        times.sort();
        let at = ((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1));
        times.get(at).map_or(f64::NAN, |d| us(*d))
    };
    let mean = times.iter().sum::<std::time::Duration>() / times.len() as u32;
    let verdict = verdict.map(|v| (v.decision(), v.message.unwrap_or_default()));
    let per_policy: Vec<_> = policies
        .iter()
        .zip(&mut each)
        .map(|(policy, times)| {
            serde_json::json!({
                "name": policy.name(),
                "engine": policy.engine(),
                "evaluation_p50_us": quantile(times, 0.5),
            })
        })
        .collect();
    succeed(
        &serde_json::json!({
            "decision": verdict.as_ref().map(|v| v.0),
            "message": verdict.as_ref().map(|v| v.1.clone()),
            "iterations": iterations,
            "p50_us": quantile(&mut times, 0.5),
            "p99_us": quantile(&mut times, 0.99),
            "mean_us": us(mean),
            "evaluation_p50_us": quantile(&mut evaluations, 0.5),
            "evaluation_p99_us": quantile(&mut evaluations, 0.99),
            "policies": per_policy,
        })
        .to_string(),
    )
}

/// Module and layer downloads are large (up to tens of MiB) and short-lived, on whichever
/// worker thread runs them. glibc raises its mmap threshold after the first such buffer is
/// freed, so later ones land in per-thread arenas that keep their pages: resident memory then
/// grows with the number of threads, not with the downloads allowed at once. A fixed 1 MiB
/// threshold keeps every large buffer mmapped, returned to the system when freed.
#[allow(unsafe_code)]
fn large_buffers_go_back_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other thread
    // exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

fn serve(path: &std::path::Path, listen: Option<std::net::SocketAddr>) -> ExitCode {
    large_buffers_go_back_to_the_system();
    let mut config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meshgate: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(listen) = listen {
        config.listen = listen;
    }
    init_logging(&config);
    let Some(runtime) = runtime(tokio::runtime::Builder::new_multi_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(meshgate_admission::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "meshgate serve failed");
            eprintln!("meshgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn push(
    file: &std::path::Path,
    reference: &str,
    format: meshgate_admission::artifact::Format,
    insecure: &[String],
) -> ExitCode {
    let wasm = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => return fail(&format!("{}: {e}", file.display())),
    };
    with_registries("push failed", insecure, |registries| async move {
        meshgate_admission::artifact::push(wasm, reference, format, &registries).await
    })
    .map_or_else(|code| code, |digest| succeed(&digest))
}

/// Bound of each registry connection and read in CLI commands.
const REGISTRY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn fail(message: &str) -> ExitCode {
    eprintln!("meshgate: {message}");
    ExitCode::FAILURE
}

fn cosign_password() -> Result<String, ExitCode> {
    std::env::var("COSIGN_PASSWORD")
        .map_err(|_| fail("set COSIGN_PASSWORD to the private key's password (it may be empty)"))
}

fn generate_key_pair(
    prefix: &std::path::Path,
    algorithm: meshgate_admission::signing::Algorithm,
    force: bool,
) -> ExitCode {
    let password = match cosign_password() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let with_extension = |ext: &str| {
        let mut path = prefix.as_os_str().to_owned();
        path.push(ext);
        PathBuf::from(path)
    };
    let (private_path, public_path) = (with_extension(".key"), with_extension(".pub"));
    for path in [&private_path, &public_path] {
        if path.exists() && !force {
            return fail(&format!(
                "{} exists (use --force to overwrite)",
                path.display()
            ));
        }
    }
    let (private, public) =
        match meshgate_admission::signing::keys::generate(algorithm, password.as_bytes()) {
            Ok(pair) => pair,
            Err(e) => return fail(&e.to_string()),
        };
    if let Err(e) = write_private(&private_path, private.as_bytes())
        .and_then(|()| std::fs::write(&public_path, public))
    {
        return fail(&format!("writing the key pair: {e}"));
    }
    println!("Private key written to {}", private_path.display());
    println!("Public key written to {}", public_path.display());
    ExitCode::SUCCESS
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

fn sign(key: &std::path::Path, bundle: bool, reference: &str, insecure: &[String]) -> ExitCode {
    let password = match cosign_password() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let pem = match std::fs::read(key) {
        Ok(pem) => pem,
        Err(e) => return fail(&format!("{}: {e}", key.display())),
    };
    let signer = match meshgate_admission::signing::keys::signer(&pem, password.as_bytes()) {
        Ok(s) => s,
        Err(e) => return fail(&format!("{}: {e}", key.display())),
    };
    with_registries("sign failed", insecure, |registries| async move {
        meshgate_admission::signing::sign(&registries, reference, &signer, bundle).await
    })
    .map_or_else(
        |code| code,
        |(digest, location)| {
            succeed(&format!(
                "{reference}: signed {digest}, signature in {location}"
            ))
        },
    )
}

fn verify(keys: &[PathBuf], reference: &str, insecure: &[String]) -> ExitCode {
    let mut public = Vec::new();
    for path in keys {
        let name = path.display().to_string();
        let key = std::fs::read(path)
            .map_err(|e| e.to_string())
            .and_then(|pem| {
                meshgate_admission::signing::PublicKey::from_pem(&name, &pem)
                    .map_err(|e| e.to_string())
            });
        match key {
            Ok(k) => public.push(k),
            Err(e) => return fail(&format!("{name}: {e}")),
        }
    }
    with_registries("verification failed", insecure, |registries| async move {
        meshgate_admission::signing::verify(&registries, reference, &public).await
    })
    .map_or_else(|code| code, |summary| succeed(&summary))
}

/// `meshgate verify --certificate-identity …`: keyless signatures in the registry.
fn verify_keyless(
    identity: String,
    issuer: String,
    trusted_root: Option<&std::path::Path>,
    reference: &str,
    insecure: &[String],
) -> ExitCode {
    use meshgate_admission::signing::keyless::{self, Match, oci::Signer};
    let root = match keyless::load_trusted_root(trusted_root) {
        Ok(root) => root,
        Err(e) => return fail(&e.to_string()),
    };
    let signers = [Signer {
        name: identity.clone(),
        subject: Match::Exact(identity),
        issuer: Match::Exact(issuer),
    }];
    with_registries("verification failed", insecure, |registries| async move {
        meshgate_admission::signing::verify_keyless(&registries, reference, &signers, &root).await
    })
    .map_or_else(|code| code, |summary| succeed(&summary))
}

/// `meshgate verify-bundle`: the verdict on stdout (exit 0) or the reason on stderr (exit 1).
fn verify_bundle(check: &meshgate_admission::signing::keyless::BundleCheck<'_>) -> ExitCode {
    match meshgate_admission::signing::keyless::check_files(check) {
        Ok(verified) => {
            let who = match &verified.identity {
                Some(id) => format!(
                    "{} ({})",
                    id.subjects.join(", "),
                    id.issuer.as_deref().unwrap_or("no issuer")
                ),
                None => "the given key".to_string(),
            };
            succeed(&format!("OK: {} signed by {who}", check.artifact))
        }
        Err(e) => fail(&format!("{}: {e}", check.bundle.display())),
    }
}

/// Runs a registry task with the CLI's registry access (credentials for one host from the
/// environment, plain HTTP to `insecure` hosts) on a single-threaded runtime; a failure is
/// printed as `what: error`.
fn with_registries<T, E: std::fmt::Display, F: std::future::Future<Output = Result<T, E>>>(
    what: &str,
    insecure: &[String],
    task: impl FnOnce(Registries) -> F,
) -> Result<T, ExitCode> {
    let registries =
        Registries::from_env(insecure, REGISTRY_TIMEOUT).map_err(|e| fail(&e.to_string()))?;
    let runtime =
        runtime(tokio::runtime::Builder::new_current_thread()).ok_or(ExitCode::FAILURE)?;
    runtime
        .block_on(task(registries))
        .map_err(|e| fail(&format!("{what}: {e}")))
}

fn succeed(output: &str) -> ExitCode {
    println!("{output}");
    ExitCode::SUCCESS
}

/// Builds a runtime, saying why on stderr when it cannot.
fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    builder
        .enable_all()
        .build()
        .map_err(|e| eprintln!("meshgate: cannot start the runtime: {e}"))
        .ok()
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(config.logging.level.as_deref().unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
