//! The on-disk cache of compiled policies, and why its files can be trusted.
//!
//! wasmtime loads a cached file as native code, as is: whoever can put bytes in the file runs
//! them in the webhook. A file's name (the component's sha256 and the engine's compatibility
//! hash) says nothing about its content, so each file carries an HMAC-SHA256 over its name and
//! its code, checked before anything is deserialized. A file copied over another component's,
//! edited, or written by anyone without the key is refused and the component compiled again.
//!
//! The key is not made by the server: a key the server writes somewhere can be rewritten by
//! whoever can write as the server's user, which is exactly who can write the cache directory
//! (it must be the server's own, below). It comes from `wasm.cacheKeyFile`, a file the server
//! can read but not write, such as a Secret volume (the webhook's TLS key will do). Without
//! one nothing is kept on disk: every start compiles. A random key per process would be as
//! safe, but a cache that does not survive a restart is no cache.
//!
//! The directory itself must be a real directory (not a symbolic link), owned by the server's
//! user and writable by nobody else; files are opened without following symbolic links, must
//! be regular files of the server's user, and are written under a fresh name, then renamed.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// What a cache file starts with: the format, then the 32-byte tag, then the code.
const MAGIC: &[u8; 8] = b"MGWASM\x01\x00";
const TAG_BYTES: usize = 32;
/// Largest cache file read (a compiled starter policy is about 2 MiB).
const MAX_FILE_BYTES: u64 = 256 << 20;
/// Fewest bytes of key material accepted (a 256-bit key).
const MIN_KEY_BYTES: usize = 32;
/// Most bytes read from the key file (a PEM private key is a few KiB).
const MAX_KEY_BYTES: u64 = 64 << 10;
/// Separates this use of the key from any other (the file may be a TLS key).
const KEY_CONTEXT: &[u8] = b"meshgate wasm policy cache v1";

/// A cache directory that passed its checks, and the MAC key.
pub(crate) struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
}

/// The outcome of a lookup.
pub(crate) enum Lookup {
    /// No file for this component.
    Miss,
    /// Code this server's key vouches for.
    Hit(Vec<u8>),
    /// A file that must not be loaded, and why.
    Refused(String),
}

impl DiskCache {
    /// Creates `dir` (mode 0700) if missing, checks it, and reads the key from `key_file`.
    pub(crate) fn open(dir: &Path, key_file: &Path) -> Result<Self, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        check_dir(dir)?;
        let key = read_key(key_file, dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            key,
        })
    }

    /// The file that holds `name`'s code.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.cwasm"))
    }

    /// The code stored under `name`, if its tag verifies.
    pub(crate) fn load(&self, name: &str) -> Lookup {
        let path = self.path(name);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Lookup::Refused("it is a symbolic link".into());
            }
            Err(e) => return Lookup::Refused(format!("opening it: {e}")),
        };
        match self.read_verified(name, file) {
            Ok(code) => Lookup::Hit(code),
            Err(reason) => Lookup::Refused(reason),
        }
    }

    fn read_verified(&self, name: &str, file: File) -> Result<Vec<u8>, String> {
        let metadata = file.metadata().map_err(|e| format!("reading it: {e}"))?;
        if !metadata.is_file() {
            return Err("it is not a regular file".into());
        }
        let uid = euid();
        if metadata.uid() != uid {
            return Err(format!(
                "it is owned by uid {}, not this server's uid {uid}",
                metadata.uid()
            ));
        }
        if metadata.len() > MAX_FILE_BYTES {
            return Err(format!("it is larger than {MAX_FILE_BYTES} bytes"));
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("reading it: {e}"))?;
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return Err("it is not a meshgate cache file".into());
        };
        if rest.len() < TAG_BYTES {
            return Err("it is truncated".into());
        }
        let (tag, code) = rest.split_at(TAG_BYTES);
        self.mac(name, code)?
            .verify_slice(tag)
            .map_err(|_| "its MAC does not match: it was not written by this server for this component (altered, or copied from another component's file)".to_string())?;
        Ok(bytes.split_off(MAGIC.len() + TAG_BYTES))
    }

    /// Writes `code` under `name`: a new file of its own, then renamed into place, so readers
    /// never see a partial file and nothing planted at the temporary name is followed.
    pub(crate) fn store(&self, name: &str, code: &[u8]) -> std::io::Result<()> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let tag = self
            .mac(name, code)
            .map_err(std::io::Error::other)?
            .finalize()
            .into_bytes();
        let tmp = self.dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&tag)?;
            file.write_all(code)?;
            std::fs::rename(&tmp, self.path(name))
        };
        let result = write();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// The MAC of `code` stored as `name` (the name binds the component's sha256 and the
    /// engine's compatibility hash).
    fn mac(&self, name: &str, code: &[u8]) -> Result<HmacSha256, String> {
        let mut mac = HmacSha256::new_from_slice(&self.key).map_err(|e| e.to_string())?;
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(code);
        Ok(mac)
    }
}

/// Where compiled policies go when `wasm.cacheDir` is not set: the user's cache directory
/// (`$XDG_CACHE_HOME/meshgate/wasm`, else `~/.cache/meshgate/wasm`), or a directory of this
/// uid's own in the temp directory.
pub(crate) fn default_dir() -> PathBuf {
    let absolute = |value: Option<OsString>| value.map(PathBuf::from).filter(|p| p.is_absolute());
    if let Some(base) = absolute(std::env::var_os("XDG_CACHE_HOME")) {
        return base.join("meshgate").join("wasm");
    }
    if let Some(home) = absolute(std::env::var_os("HOME")) {
        return home.join(".cache").join("meshgate").join("wasm");
    }
    std::env::temp_dir().join(format!("meshgate-wasm-cache-{}", euid()))
}

/// Refuses a directory that is a symbolic link, is not this user's, or that others may write.
fn check_dir(dir: &Path) -> Result<(), String> {
    let metadata = std::fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let refuse = |why: String| Err(format!("{} {why}", dir.display()));
    if metadata.file_type().is_symlink() {
        return refuse("is a symbolic link; name the directory itself".into());
    }
    if !metadata.is_dir() {
        return refuse("is not a directory".into());
    }
    let uid = euid();
    if metadata.uid() != uid {
        return refuse(format!(
            "is owned by uid {}, not this server's uid {uid}",
            metadata.uid()
        ));
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return refuse(format!(
            "is writable by group or others (mode {mode:o}); its files are loaded as machine code"
        ));
    }
    Ok(())
}

/// The MAC key, derived from the key file's bytes. The file may be a symbolic link (Secret
/// volumes are made of them) but must not be writable by anyone but root or this user, and must
/// not live in the cache directory.
fn read_key(path: &Path, dir: &Path) -> Result<[u8; 32], String> {
    let at = |e: std::io::Error| format!("key file {}: {e}", path.display());
    let file = File::open(path).map_err(at)?;
    let metadata = file.metadata().map_err(at)?;
    let refuse = |why: String| Err(format!("key file {} {why}", path.display()));
    if !metadata.is_file() {
        return refuse("is not a regular file".into());
    }
    if metadata.uid() != 0 && metadata.uid() != euid() {
        return refuse(format!("is owned by uid {}", metadata.uid()));
    }
    if metadata.mode() & 0o022 != 0 {
        return refuse(format!(
            "is writable by group or others (mode {:o})",
            metadata.mode() & 0o7777
        ));
    }
    if let (Ok(key), Ok(dir)) = (path.canonicalize(), dir.canonicalize())
        && key.starts_with(&dir)
    {
        return refuse(
            "is in the cache directory: whoever can write the cache could replace it".into(),
        );
    }
    let mut secret = Vec::new();
    file.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut secret)
        .map_err(at)?;
    if secret.len() as u64 > MAX_KEY_BYTES {
        return refuse(format!("is larger than {MAX_KEY_BYTES} bytes"));
    }
    if secret.len() < MIN_KEY_BYTES {
        return refuse(format!(
            "holds {} bytes; at least {MIN_KEY_BYTES} are needed",
            secret.len()
        ));
    }
    let mut mac = HmacSha256::new_from_slice(&secret).map_err(|e| e.to_string())?;
    mac.update(KEY_CONTEXT);
    let mut key = [0u8; 32];
    key.copy_from_slice(&mac.finalize().into_bytes());
    Ok(key)
}

/// This process's effective uid: the owner of what it creates.
#[allow(unsafe_code)]
fn euid() -> u32 {
    // SAFETY: geteuid takes nothing, touches no memory and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn key(dir: &Path) -> PathBuf {
        let path = dir.join("key");
        std::fs::write(&path, [7u8; 32]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn cache() -> (tempfile::TempDir, DiskCache) {
        let root = tempfile::tempdir().unwrap();
        let cache = DiskCache::open(&root.path().join("cache"), &key(root.path())).unwrap();
        (root, cache)
    }

    #[test]
    fn code_comes_back_only_under_its_own_name_and_key() {
        let (root, cache) = cache();
        assert!(matches!(cache.load("a"), Lookup::Miss));
        cache.store("a", b"code of a").unwrap();
        cache.store("b", b"code of b").unwrap();
        assert!(matches!(cache.load("a"), Lookup::Hit(code) if code == b"code of a"));

        // b's file copied over a's: the tag names b.
        std::fs::copy(cache.path("b"), cache.path("a")).unwrap();
        assert!(matches!(cache.load("a"), Lookup::Refused(r) if r.contains("MAC does not match")));

        // Another key (another server, or an attacker's) vouches for nothing here.
        std::fs::write(root.path().join("other"), [8u8; 32]).unwrap();
        std::fs::set_permissions(
            root.path().join("other"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let other = DiskCache::open(&cache.dir, &root.path().join("other")).unwrap();
        other.store("c", b"planted").unwrap();
        assert!(matches!(cache.load("c"), Lookup::Refused(_)));

        // Edited code, garbage, a truncated file.
        let mut edited = std::fs::read(cache.path("b")).unwrap();
        *edited.last_mut().unwrap() ^= 1;
        for bytes in [edited, b"not machine code".to_vec(), MAGIC.to_vec()] {
            std::fs::write(cache.path("b"), bytes).unwrap();
            assert!(matches!(cache.load("b"), Lookup::Refused(_)));
        }
        // Writing again replaces what was refused.
        cache.store("b", b"code of b").unwrap();
        assert!(matches!(cache.load("b"), Lookup::Hit(_)));
        let leftovers: Vec<_> = std::fs::read_dir(&cache.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn symbolic_links_are_never_followed() {
        let (root, cache) = cache();
        cache.store("a", b"code of a").unwrap();
        let elsewhere = root.path().join("elsewhere.cwasm");
        std::fs::rename(cache.path("a"), &elsewhere).unwrap();
        symlink(&elsewhere, cache.path("a")).unwrap();
        assert!(matches!(cache.load("a"), Lookup::Refused(r) if r.contains("symbolic link")));
        // Storing replaces the link itself, leaving its target alone.
        let target = std::fs::read(&elsewhere).unwrap();
        cache.store("a", b"new code").unwrap();
        assert!(
            !std::fs::symlink_metadata(cache.path("a"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&elsewhere).unwrap(), target);

        // A cache directory that is a link to a good directory is refused too.
        let link = root.path().join("link");
        symlink(&cache.dir, &link).unwrap();
        let err = DiskCache::open(&link, &key(root.path())).err().unwrap();
        assert!(err.contains("is a symbolic link"), "{err}");
    }

    #[test]
    fn directories_others_may_write_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let key = key(root.path());
        for mode in [0o770, 0o707, 0o777, 0o1777] {
            let dir = root.path().join(format!("d{mode:o}"));
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = DiskCache::open(&dir, &key).err().unwrap();
            assert!(
                err.contains("writable by group or others"),
                "{mode:o}: {err}"
            );
        }
        let private = root.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(DiskCache::open(&private, &key).is_ok());
        // A directory made by the cache is private.
        let made = root.path().join("a/b");
        DiskCache::open(&made, &key).unwrap();
        assert_eq!(std::fs::metadata(&made).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn keys_must_be_long_unwritable_by_others_and_outside_the_cache() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let short = root.path().join("short");
        std::fs::write(&short, [1u8; 31]).unwrap();
        let err = DiskCache::open(&dir, &short).err().unwrap();
        assert!(err.contains("at least 32"), "{err}");
        let open = key(root.path());
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).unwrap();
        let err = DiskCache::open(&dir, &open).err().unwrap();
        assert!(err.contains("writable by group or others"), "{err}");
        let inside = key(&dir);
        let err = DiskCache::open(&dir, &inside).err().unwrap();
        assert!(err.contains("is in the cache directory"), "{err}");
        let err = DiskCache::open(&dir, &root.path().join("missing"))
            .err()
            .unwrap();
        assert!(err.contains("No such file"), "{err}");
    }

    #[test]
    fn the_default_directory_is_the_users() {
        let dir = default_dir();
        assert!(dir.is_absolute(), "{}", dir.display());
        assert_ne!(dir, std::env::temp_dir().join("meshgate-wasm-cache"));
    }
}
