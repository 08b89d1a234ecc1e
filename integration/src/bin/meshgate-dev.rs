//! Development helpers: `meshgate-dev keys` creates the demo's signing key in `.state/dev/`
//! (and the JWKS the docker-compose JWKS server serves), `meshgate-dev token --sub alice`
//! prints a token for it, `meshgate-dev istio [--registry R]` renders the Istio filter
//! manifests (`make istio`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use meshgate_integration::devkey::{self, DevKey};

#[derive(Parser)]
struct Args {
    /// Where the key lives.
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the key if missing and write its JWKS; print where.
    Keys,
    /// Print a token signed by the key.
    Token {
        /// The token's subject.
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 12 * 3600)]
        ttl: u64,
    },
    /// Render istio/filters/ into dist/istio/ (checksums; with --registry, push the filters in
    /// Istio's OCI layout and pin the WasmPlugins to their digests).
    Istio {
        /// Registry to push to, e.g. 127.0.0.1:5000.
        #[arg(long)]
        registry: Option<String>,
        /// Speak plain HTTP to the registry (a local development registry).
        #[arg(long)]
        insecure_registry: bool,
    },
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Command::Istio {
        registry,
        insecure_registry,
    } = &args.command
    {
        let repo = meshgate_integration::paths::repo_root();
        let written = meshgate_integration::istio::render(
            &repo.join("istio/filters"),
            &repo.join("dist/istio"),
            registry.as_deref(),
            *insecure_registry,
        )
        .map_err(anyhow::Error::msg)?;
        for file in written {
            println!("istio: {}", file.display());
        }
        return Ok(());
    }
    let dir = args.dir.unwrap_or_else(devkey::default_dir);
    let key = DevKey::load_or_create(&dir).map_err(anyhow::Error::msg)?;
    match args.command {
        Command::Istio { .. } => {}
        Command::Keys => println!(
            "key:  {}\njwks: {}",
            key.dir().join("dev-key.pem").display(),
            key.dir().join("jwks/.well-known/jwks.json").display()
        ),
        Command::Token { sub, ttl } => println!("{}", key.token(&sub, ttl)),
    }
    Ok(())
}
