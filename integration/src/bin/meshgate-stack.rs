//! The compose stack's small services (`envoy/docker-compose.yaml`, image `meshgate-dev`): the
//! demo upstream, the JWKS endpoint and the global rate limit service are the integration
//! harness's own, on fixed loopback ports, each until SIGTERM or Ctrl-C. `tls` writes the
//! webhook's development certificate.
//!
//!   meshgate-stack upstream --port 10001        # or HTTP_PORT, as the compose file sets it
//!   meshgate-stack jwks --port 10002 --file /srv/.well-known/jwks.json
//!   meshgate-stack rls --config envoy/ratelimit-config.yaml --redis redis://127.0.0.1:6379
//!   meshgate-stack tls --dir dist/compose/tls

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use meshgate_integration::{Echo, JwksServer, RlsServer};
use serde::Deserialize;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// An HTTP upstream answering every request with the request it saw, as JSON.
    Upstream {
        /// Loopback port [default: $HTTP_PORT, else 10001].
        #[arg(long)]
        port: Option<u16>,
    },
    /// Serves a JWKS document (read once at start) at every path.
    Jwks {
        /// Loopback port.
        #[arg(long, default_value_t = 10002)]
        port: u16,
        /// The JWKS file (`make dev-keys` writes .state/dev/jwks/.well-known/jwks.json).
        #[arg(long)]
        file: PathBuf,
    },
    /// Envoy's rate limit service (gRPC), counting with Limitador in Redis, limits from an
    /// envoyproxy/ratelimit configuration: its domain and first descriptor, per minute.
    Rls {
        /// Loopback port [default: $GRPC_PORT, else 10003].
        #[arg(long)]
        port: Option<u16>,
        /// Where the counters live.
        #[arg(long, default_value = "redis://127.0.0.1:6379")]
        redis: String,
        /// The limits (envoy/ratelimit-config.yaml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Writes a development CA (`ca.crt`) and a serving certificate for localhost/127.0.0.1
    /// (`tls.crt`, `tls.key`) into `dir`, as a cert-manager Secret holds them, unless present.
    Tls {
        /// The directory (mounted into the webhook container at /etc/meshgate/tls).
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Upstream { port } => {
            let upstream = Echo::start_on(port_or_env(port, "HTTP_PORT", 10001)?);
            println!("upstream on 127.0.0.1:{}", upstream.port());
            wait_for_stop()?;
        }
        Command::Jwks { port, file } => {
            let jwks = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {} (run make dev-keys)", file.display()))?;
            let server = JwksServer::start_on(port, &jwks);
            println!("JWKS on {}", server.url());
            wait_for_stop()?;
        }
        Command::Rls {
            port,
            redis,
            config,
        } => {
            let port = port_or_env(port, "GRPC_PORT", 10003)?;
            let limit = RateLimitConfig::read(&config)?;
            let service = RlsServer::start_at(
                &redis,
                &format!("127.0.0.1:{port}"),
                &limit.domain,
                &limit.key,
                limit.per_minute,
            );
            println!(
                "rate limit service on 127.0.0.1:{} (domain {}: {} a minute per {}, {redis})",
                service.port(),
                limit.domain,
                limit.per_minute,
                limit.key
            );
            wait_for_stop()?;
        }
        Command::Tls { dir } => {
            let files = meshgate_admission::tls::dev_certificate(&dir)?;
            // The webhook container runs as another user (65532) and reads the key through a
            // bind mount, as it reads a Secret volume (mode 0644 by default).
            std::fs::set_permissions(&files.key, std::fs::Permissions::from_mode(0o644))?;
            println!("{}", files.cert.display());
        }
    }
    Ok(())
}

/// Blocks until SIGTERM (what `docker stop` and `podman stop` send) or SIGINT. As a container's
/// PID 1 the process gets no default handling of either, so it installs its own.
fn wait_for_stop() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    })
}

/// `--port`, else the port in environment variable `var` (the name the service this one stands
/// in for reads), else `default`.
fn port_or_env(port: Option<u16>, var: &str, default: u16) -> Result<u16> {
    match (port, std::env::var(var)) {
        (Some(port), _) => Ok(port),
        (None, Ok(value)) => value
            .parse()
            .with_context(|| format!("{var}={value} is not a port")),
        (None, Err(_)) => Ok(default),
    }
}

/// The part of an envoyproxy/ratelimit configuration this service reads: the domain and its
/// first descriptor's key and limit (envoy/ratelimit-config.yaml).
#[derive(Deserialize)]
struct RawConfig {
    domain: String,
    descriptors: Vec<RawDescriptor>,
}

#[derive(Deserialize)]
struct RawDescriptor {
    key: String,
    rate_limit: RawLimit,
}

#[derive(Deserialize)]
struct RawLimit {
    unit: String,
    requests_per_unit: u64,
}

/// One limit: `per_minute` hits for each value of descriptor entry `key` in `domain`.
struct RateLimitConfig {
    domain: String,
    key: String,
    per_minute: u64,
}

impl RateLimitConfig {
    fn read(path: &std::path::Path) -> Result<RateLimitConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let raw: RawConfig =
            serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let Some(first) = raw.descriptors.into_iter().next() else {
            bail!("{}: no descriptors", path.display());
        };
        // The harness's service counts in one-minute windows.
        if first.rate_limit.unit != "minute" {
            bail!(
                "{}: unit {} (only minute is served)",
                path.display(),
                first.rate_limit.unit
            );
        }
        Ok(RateLimitConfig {
            domain: raw.domain,
            key: first.key,
            per_minute: first.rate_limit.requests_per_unit,
        })
    }
}
