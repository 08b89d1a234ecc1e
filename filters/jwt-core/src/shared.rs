//! Fetched JWKS documents as workers share them (proxy-wasm shared data), written and read back.
//!
//! Shared data is a store every plugin of the same `vm_id` may write to, so what is read back is
//! checked as strictly as a fetched document: a format version, the remote JWKS it was fetched
//! from (cluster and URI, so another configuration's keys are not installed), a fetch time that is
//! neither in the future nor older than `cache_duration`, a size bound, and the JWKS parsed with
//! the same rules as a fresh fetch.

use serde::{Deserialize, Serialize};

use crate::jwks::{JwksError, KeySet, MAX_JWKS_BYTES};
use crate::provider::RemoteJwks;

/// The format written; a document of any other format is ignored.
pub const FORMAT: u32 = 1;

/// How far ahead of this worker's clock a fetch time may lie (workers of one Envoy share a clock;
/// this only absorbs the time between reading the clock and writing).
pub const MAX_CLOCK_AHEAD_MS: u64 = 1_000;

/// The largest document read: the JWKS plus its envelope.
pub const MAX_DOCUMENT_BYTES: usize = MAX_JWKS_BYTES + 4 * 1024;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: u32,
    cluster: String,
    uri: String,
    fetched_at_ms: u64,
    jwks: String,
}

/// Why a shared document was not installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SharedError {
    /// Larger than [`MAX_DOCUMENT_BYTES`].
    #[error("{0} bytes, more than the {MAX_DOCUMENT_BYTES} allowed")]
    TooLarge(usize),
    /// Not a document of this format.
    #[error("not a meshgate JWKS document of format {FORMAT}")]
    Format,
    /// Fetched from another cluster or URI than this provider's.
    #[error("fetched for another remote JWKS ({0})")]
    Foreign(String),
    /// Fetched "later" than now.
    #[error("fetched_at_ms {0} lies in the future")]
    Future(u64),
    /// Older than `cache_duration`.
    #[error("expired (fetched at {0} ms)")]
    Expired(u64),
    /// The JWKS itself is refused.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// The shared-data key for `remote`'s keys: one per cluster and URI, and per format, so a
/// document of an older format is never read as this one.
pub fn key(remote: &RemoteJwks) -> String {
    format!(
        "meshgate.jwt_auth.jwks.v{FORMAT}|{}|{}",
        remote.cluster, remote.uri
    )
}

/// The document to share for a JWKS `jwks` fetched for `remote` at `fetched_at_ms`.
pub fn encode(remote: &RemoteJwks, fetched_at_ms: u64, jwks: &str) -> String {
    let document = Document {
        format: FORMAT,
        cluster: remote.cluster.clone(),
        uri: remote.uri.clone(),
        fetched_at_ms,
        jwks: jwks.to_string(),
    };
    serde_json::to_string(&document).unwrap_or_default()
}

/// Reads a shared document back for `remote` at `now_ms`: the key set and when it was fetched.
pub fn decode(
    remote: &RemoteJwks,
    bytes: &[u8],
    now_ms: u64,
) -> Result<(KeySet, u64), SharedError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(SharedError::TooLarge(bytes.len()));
    }
    let document: Document = serde_json::from_slice(bytes).map_err(|_| SharedError::Format)?;
    if document.format != FORMAT {
        return Err(SharedError::Format);
    }
    if document.cluster != remote.cluster || document.uri != remote.uri {
        return Err(SharedError::Foreign(format!(
            "cluster {:?}, uri {:?}",
            document.cluster, document.uri
        )));
    }
    let at = document.fetched_at_ms;
    if at > now_ms.saturating_add(MAX_CLOCK_AHEAD_MS) {
        return Err(SharedError::Future(at));
    }
    let max_age = u64::try_from(remote.cache_duration.as_millis()).unwrap_or(u64::MAX);
    if now_ms.saturating_sub(at) >= max_age {
        return Err(SharedError::Expired(at));
    }
    Ok((KeySet::parse(&document.jwks)?, at))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    const JWKS: &str = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;

    fn remote() -> RemoteJwks {
        RemoteJwks {
            uri: "https://issuer/keys".into(),
            cluster: "issuer".into(),
            authority: "issuer".into(),
            path: "/keys".into(),
            timeout: Duration::from_secs(1),
            cache_duration: Duration::from_secs(60),
            fetch_at_start: false,
            failed_refetch: Duration::from_secs(1),
            num_retries: 0,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(10),
        }
    }

    fn refusal(r: &RemoteJwks, bytes: &[u8], now: u64) -> SharedError {
        match decode(r, bytes, now) {
            Ok(_) => panic!("installed"),
            Err(e) => e,
        }
    }

    #[test]
    fn round_trip_and_every_check() {
        let r = remote();
        let now = 1_000_000;
        let doc = encode(&r, now, JWKS);
        let (keys, at) = decode(&r, doc.as_bytes(), now + 5).unwrap();
        assert_eq!((keys.keys().len(), at), (1, now));

        let mut other = remote();
        other.cluster = "attacker".into();
        let foreign = encode(&other, now, JWKS);
        assert!(matches!(
            decode(&r, foreign.as_bytes(), now),
            Err(SharedError::Foreign(_))
        ));
        assert_ne!(key(&r), key(&other), "another cluster has its own key");

        // A far-future fetch time would pin the keys forever.
        let pinned = encode(&r, u64::MAX, JWKS);
        assert_eq!(
            refusal(&r, pinned.as_bytes(), now),
            SharedError::Future(u64::MAX)
        );
        assert!(decode(&r, encode(&r, now + 1_000, JWKS).as_bytes(), now).is_ok());
        assert_eq!(
            refusal(&r, doc.as_bytes(), now + 60_000),
            SharedError::Expired(now)
        );
        // The document of the format before this one: no version, a raw fetch time.
        let old = format!(
            r#"{{"fetched_at_ms":{now},"jwks":{}}}"#,
            serde_json::json!(JWKS)
        );
        assert_eq!(refusal(&r, old.as_bytes(), now), SharedError::Format);
        let v2 = doc.replace("\"format\":1", "\"format\":2");
        assert_eq!(refusal(&r, v2.as_bytes(), now), SharedError::Format);
        // The JWKS is held to the rules of a fetch: no valid key, no install.
        let enc_only = encode(&r, now, r#"{"keys":[{"kty":"oct","use":"sig"}]}"#);
        assert!(matches!(
            decode(&r, enc_only.as_bytes(), now),
            Err(SharedError::Jwks(JwksError::NoValidKeys(_)))
        ));
        let huge = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert_eq!(
            refusal(&r, &huge, now),
            SharedError::TooLarge(MAX_DOCUMENT_BYTES + 1)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Any bytes: no panic, and nothing installed unless it is a well-formed document.
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512),
                                          now in any::<u64>()) {
            let _ = decode(&remote(), &bytes, now);
        }

        /// Documents with arbitrary field values: installed only when every check holds.
        #[test]
        fn arbitrary_documents(format in 0u32..3, at in any::<u64>(), now in any::<u64>(),
                               jwks in "\\PC{0,64}", same in any::<bool>()) {
            let r = remote();
            let cluster = if same { r.cluster.clone() } else { "x".to_string() };
            let doc = serde_json::json!({"format": format, "cluster": cluster, "uri": r.uri,
                                         "fetched_at_ms": at, "jwks": jwks}).to_string();
            if let Ok((keys, got)) = decode(&r, doc.as_bytes(), now) {
                prop_assert!(format == FORMAT && same);
                prop_assert!(got <= now.saturating_add(MAX_CLOCK_AHEAD_MS));
                prop_assert!(now.saturating_sub(got) < 60_000);
                prop_assert!(!keys.keys().is_empty());
            }
        }
    }
}
