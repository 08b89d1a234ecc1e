//! The development signing key of `make run` and the docker-compose setup: kept in
//! `.state/dev/` so tokens stay valid across runs, with its JWKS written where the compose
//! JWKS server serves it.

use std::path::{Path, PathBuf};

use meshgate_jwt::mint::{self, SigningKey};
use serde_json::json;

/// Issuer the demo configs (`envoy/*.yaml`) trust.
pub const ISSUER: &str = "https://meshgate.local/demo";
/// Audience the demo configs require.
pub const AUDIENCE: &str = "demo-api";
const KID: &str = "demo-key";

/// The key and where it lives.
pub struct DevKey {
    key: SigningKey,
    dir: PathBuf,
}

/// `.state/dev` in the repository.
pub fn default_dir() -> PathBuf {
    crate::paths::repo_root().join(".state/dev")
}

impl DevKey {
    /// Loads `dir/dev-key.pem`, creating it (and the directory) on first use; (re)writes
    /// `dir/jwks/.well-known/jwks.json`.
    pub fn load_or_create(dir: &Path) -> Result<DevKey, String> {
        let pem_path = dir.join("dev-key.pem");
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let key = match std::fs::read_to_string(&pem_path) {
            Ok(pem) => SigningKey::es256_from_pem(KID, &pem)
                .map_err(|e| format!("{}: {e}", pem_path.display()))?,
            Err(_) => {
                let (key, pem) = SigningKey::es256_pem(KID);
                write_private(&pem_path, &pem)?;
                key
            }
        };
        let jwks_dir = dir.join("jwks/.well-known");
        std::fs::create_dir_all(&jwks_dir).map_err(|e| format!("{}: {e}", jwks_dir.display()))?;
        std::fs::write(jwks_dir.join("jwks.json"), mint::jwks(&[&key]))
            .map_err(|e| e.to_string())?;
        Ok(DevKey {
            key,
            dir: dir.to_path_buf(),
        })
    }

    /// The JWKS document of the key.
    pub fn jwks(&self) -> String {
        mint::jwks(&[&self.key])
    }

    /// A token for `sub` valid for `ttl_seconds`, as the demo configs expect it.
    pub fn token(&self, sub: &str, ttl_seconds: u64) -> String {
        self.key.sign(&json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": sub,
            "groups": ["developers"],
            "iat": mint::now(),
            "exp": mint::now() + ttl_seconds,
        }))
    }

    /// Where the key lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}
