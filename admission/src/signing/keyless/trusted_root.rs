//! The trusted root: which Fulcio CAs, Rekor logs, CT logs and timestamp authorities to trust,
//! and when — Sigstore's `trusted_root.json` (`application/vnd.dev.sigstore.trustedroot+json`),
//! read from a file or from text, never fetched.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::crypto::PublicKey;
use super::{Error, Result};

/// Largest trusted root read (the public-good one is 7 KiB).
pub const MAX_TRUSTED_ROOT_BYTES: usize = 1024 * 1024;
/// Most entries of each kind (logs, authorities) and certificates per chain.
const MAX_ENTRIES: usize = 64;
const MAX_CHAIN: usize = 8;

/// A time window, both ends included (Sigstore's `TimeRange` is a closed interval); an open
/// end is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validity {
    /// First instant of validity.
    pub start: Option<DateTime<Utc>>,
    /// Last instant of validity.
    pub end: Option<DateTime<Utc>>,
}

impl Validity {
    /// Whether `t` falls in the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start.is_none_or(|s| s <= t) && self.end.is_none_or(|e| t <= e)
    }
}

/// A transparency log (Rekor) or certificate transparency log and its key.
#[derive(Debug, Clone)]
pub struct Log {
    /// The log's id as bundles and SCTs name it (usually SHA-256 of the key's SPKI).
    pub key_id: Vec<u8>,
    /// Its signing key.
    pub key: PublicKey,
    /// When the key may be trusted.
    pub valid: Validity,
}

/// A certificate authority (Fulcio) or timestamp authority: its chain, leaf or intermediate
/// first and root last, all DER.
#[derive(Debug, Clone)]
pub struct Authority {
    /// DER certificates, root last.
    pub chain: Vec<Vec<u8>>,
    /// When the authority may be trusted.
    pub valid: Validity,
}

/// A compiled trusted root.
#[derive(Debug, Clone, Default)]
pub struct TrustedRoot {
    /// Rekor logs.
    pub tlogs: Vec<Log>,
    /// Fulcio certificate authorities.
    pub certificate_authorities: Vec<Authority>,
    /// Certificate transparency logs.
    pub ctlogs: Vec<Log>,
    /// RFC 3161 timestamp authorities.
    pub timestamp_authorities: Vec<Authority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRoot {
    media_type: String,
    #[serde(default)]
    tlogs: Vec<RawLog>,
    #[serde(default)]
    certificate_authorities: Vec<RawAuthority>,
    #[serde(default)]
    ctlogs: Vec<RawLog>,
    #[serde(default)]
    timestamp_authorities: Vec<RawAuthority>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLog {
    public_key: RawKey,
    log_id: RawLogId,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawKey {
    #[serde(default)]
    raw_bytes: Option<String>,
    #[serde(default)]
    valid_for: Option<RawRange>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAuthority {
    cert_chain: RawChain,
    #[serde(default)]
    valid_for: Option<RawRange>,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: String,
}

#[derive(Deserialize)]
struct RawRange {
    #[serde(default)]
    start: Option<String>,
    #[serde(default)]
    end: Option<String>,
}

fn root_error(field: &str, what: impl std::fmt::Display) -> Error {
    Error::TrustedRoot(format!("{field}: {what}"))
}

fn time(field: &str, text: &Option<String>) -> Result<Option<DateTime<Utc>>> {
    text.as_deref()
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| root_error(field, format!("{t:?}: {e}")))
        })
        .transpose()
}

fn validity(field: &str, range: &Option<RawRange>) -> Result<Validity> {
    Ok(match range {
        None => Validity::default(),
        Some(r) => Validity {
            start: time(&format!("{field}.validFor.start"), &r.start)?,
            end: time(&format!("{field}.validFor.end"), &r.end)?,
        },
    })
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>> {
    STANDARD.decode(text).map_err(|e| root_error(field, e))
}

fn logs(field: &str, raw: &[RawLog]) -> Result<Vec<Log>> {
    if raw.len() > MAX_ENTRIES {
        return Err(root_error(
            field,
            format!("more than {MAX_ENTRIES} entries"),
        ));
    }
    let mut out = Vec::new();
    for (i, log) in raw.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let Some(bytes) = &log.public_key.raw_bytes else {
            continue;
        };
        let spki = b64(&format!("{field}.publicKey.rawBytes"), bytes)?;
        // A key of a type this verifier does not know only trusts less, so it is skipped.
        let Ok(key) = PublicKey::from_spki(&spki) else {
            tracing::warn!(field, "trusted root key of an unsupported type skipped");
            continue;
        };
        out.push(Log {
            key_id: b64(&format!("{field}.logId.keyId"), &log.log_id.key_id)?,
            key,
            valid: validity(&format!("{field}.publicKey"), &log.public_key.valid_for)?,
        });
    }
    Ok(out)
}

fn authorities(field: &str, raw: &[RawAuthority]) -> Result<Vec<Authority>> {
    if raw.len() > MAX_ENTRIES {
        return Err(root_error(
            field,
            format!("more than {MAX_ENTRIES} entries"),
        ));
    }
    raw.iter()
        .enumerate()
        .map(|(i, a)| {
            let field = format!("{field}[{i}]");
            let certs = &a.cert_chain.certificates;
            if certs.is_empty() || certs.len() > MAX_CHAIN {
                return Err(root_error(
                    &format!("{field}.certChain"),
                    format!("needs 1 to {MAX_CHAIN} certificates"),
                ));
            }
            Ok(Authority {
                chain: certs
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        b64(
                            &format!("{field}.certChain.certificates[{j}]"),
                            &c.raw_bytes,
                        )
                    })
                    .collect::<Result<_>>()?,
                valid: validity(&field, &a.valid_for)?,
            })
        })
        .collect()
}

impl TrustedRoot {
    /// Reads a `trusted_root.json` document.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_TRUSTED_ROOT_BYTES {
            return Err(Error::TrustedRoot(format!(
                "larger than {MAX_TRUSTED_ROOT_BYTES} bytes"
            )));
        }
        let raw: RawRoot =
            serde_json::from_slice(bytes).map_err(|e| Error::TrustedRoot(e.to_string()))?;
        if !raw
            .media_type
            .starts_with("application/vnd.dev.sigstore.trustedroot")
        {
            return Err(root_error(
                "mediaType",
                format!("{:?} is not a trusted root", raw.media_type),
            ));
        }
        Ok(Self {
            tlogs: logs("tlogs", &raw.tlogs)?,
            certificate_authorities: authorities(
                "certificateAuthorities",
                &raw.certificate_authorities,
            )?,
            ctlogs: logs("ctlogs", &raw.ctlogs)?,
            timestamp_authorities: authorities("timestampAuthorities", &raw.timestamp_authorities)?,
        })
    }

    /// Reads a `trusted_root.json` file.
    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        let bytes = super::read_bounded(path, MAX_TRUSTED_ROOT_BYTES)
            .map_err(|e| Error::TrustedRoot(format!("{}: {e}", path.display())))?;
        Self::from_json(&bytes)
    }

    /// The Rekor log with this id whose key is valid at `t`.
    pub fn tlog(&self, key_id: &[u8], t: Option<DateTime<Utc>>) -> Option<&Log> {
        find_log(&self.tlogs, key_id, t)
    }

    /// The CT log with this id whose key is valid at `t`.
    pub fn ctlog(&self, key_id: &[u8], t: DateTime<Utc>) -> Option<&Log> {
        find_log(&self.ctlogs, key_id, Some(t))
    }
}

fn find_log<'a>(logs: &'a [Log], key_id: &[u8], t: Option<DateTime<Utc>>) -> Option<&'a Log> {
    logs.iter()
        .find(|l| l.key_id == key_id && t.is_none_or(|t| l.valid.contains(t)))
}
