//! The `meshgate` command: `meshgate serve` runs the admission webhook, `meshgate policy test`
//! runs policy unit tests and case files.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshgate_admission::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "meshgate: Wasm admission gate for Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config, listen } => serve(&config, listen),
        Command::Push {
            file,
            reference,
            format,
        } => push(&file, &reference, format),
        Command::Policy {
            command: PolicyCommand::Test { paths },
        } => {
            let paths = if paths.is_empty() {
                vec![PathBuf::from(".")]
            } else {
                paths
            };
            let report = meshgate_admission::testing::run(&paths);
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
    }
}

fn serve(path: &std::path::Path, listen: Option<std::net::SocketAddr>) -> ExitCode {
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
) -> ExitCode {
    let wasm = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("meshgate: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    // Credentials for registries that need them; anonymous otherwise.
    let auth = match (
        std::env::var("MESHGATE_REGISTRY_USERNAME"),
        std::env::var("MESHGATE_REGISTRY_PASSWORD"),
    ) {
        (Ok(user), Ok(password)) => oci_client::secrets::RegistryAuth::Basic(user, password),
        _ => oci_client::secrets::RegistryAuth::Anonymous,
    };
    let Some(runtime) = runtime(tokio::runtime::Builder::new_current_thread()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(meshgate_admission::artifact::push(
        wasm, reference, format, &auth,
    )) {
        Ok(digest) => {
            println!("{digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("meshgate: push failed: {e}");
            ExitCode::FAILURE
        }
    }
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
