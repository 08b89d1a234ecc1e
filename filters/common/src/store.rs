//! The host's shared key-value store (proxy-wasm shared data) as filter cores see it.
//!
//! Every Envoy worker runs its own VM; what workers share lives in this store. Each entry carries
//! a CAS token that changes on every write, so a core can read, compute and write back only if
//! nobody wrote in between. The filter crates implement [`SharedStore`] with hostcalls; tests use
//! `testing::MemoryStore` (feature `testing`), which has the host's semantics.
//!
//! Consumers: ratelimit-core's bucket table (`meshgate_ratelimit::table`) and jwt-core's JWKS
//! sharing and refresh lease (`meshgate_jwt::jwks_sync`).

/// Why a write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// Another writer got there first.
    #[error("CAS mismatch: another writer got there first")]
    CasMismatch,
    /// The store refused for another reason.
    #[error("the shared store refused the write")]
    Failed,
}

/// The host's shared key-value store, with Envoy's semantics: `cas` `None` (or `Some(0)`)
/// writes unconditionally; `Some(c)` writes only if the entry's CAS is `c` — or if there is no
/// entry at all. Entries cannot be deleted.
pub trait SharedStore {
    /// The value and its CAS, if the key exists.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value`.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError>;
}

/// An in-process [`SharedStore`] for tests: the one fake every core's tests share.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::{SetError, SharedStore};

    /// Entries (value, CAS) and the last CAS handed out.
    type Entries = (HashMap<String, (Vec<u8>, u32)>, u32);

    /// A store with the host's semantics (CAS values count up from 1, store-wide, as Envoy's
    /// do). Shareable between threads, so a test can play several workers.
    #[derive(Debug, Default)]
    pub struct MemoryStore {
        entries: Mutex<Entries>,
    }

    impl SharedStore for MemoryStore {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            guard.0.get(key).cloned()
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), SetError> {
            let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            let (map, next) = &mut *guard;
            *next += 1;
            let new_cas = *next;
            match map.get_mut(key) {
                Some((_, current)) if cas.is_some_and(|c| c != 0 && c != *current) => {
                    Err(SetError::CasMismatch)
                }
                Some(entry) => {
                    *entry = (value.to_vec(), new_cas);
                    Ok(())
                }
                None => {
                    map.insert(key.to_string(), (value.to_vec(), new_cas));
                    Ok(())
                }
            }
        }
    }

    impl MemoryStore {
        /// Entries held.
        pub fn len(&self) -> usize {
            self.entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .len()
        }

        /// Bytes of all the values held (what the entries cost beyond their names).
        pub fn value_bytes(&self) -> usize {
            self.entries
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .values()
                .map(|(v, _)| v.len())
                .sum()
        }

        /// Whether it holds nothing.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn cas_semantics_of_the_host() {
            let store = MemoryStore::default();
            assert_eq!(store.get("k"), None);
            // No entry: any CAS creates it.
            store.set("k", b"a", Some(77)).unwrap();
            let (value, cas) = store.get("k").unwrap();
            assert_eq!(value, b"a");
            assert_eq!(
                store.set("k", b"b", Some(cas + 1)),
                Err(SetError::CasMismatch)
            );
            assert_eq!(store.get("k").unwrap().0, b"a");
            store.set("k", b"b", Some(cas)).unwrap();
            let (value, newer) = store.get("k").unwrap();
            assert_eq!(value, b"b");
            assert_ne!(newer, cas, "every write changes the CAS");
            // None and 0 write unconditionally.
            store.set("k", b"c", None).unwrap();
            store.set("k", b"d", Some(0)).unwrap();
            assert_eq!(store.get("k").unwrap().0, b"d");
            assert_eq!((store.len(), store.value_bytes()), (1, 1));
        }
    }
}
