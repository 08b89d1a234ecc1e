//! The Sigstore bundle as it arrives (protobuf JSON: camelCase names, base64 bytes, 64-bit
//! integers as strings), read into plain types with every size bounded.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::{Deserialize, Deserializer};

use super::{Error, Result};

/// Largest bundle read. A bundle carries a certificate, a few log entries and, for DSSE, the
/// statement; SLSA provenance statements run to tens of KiB.
pub const MAX_BUNDLE_BYTES: usize = 2 * 1024 * 1024;
const MAX_TLOG_ENTRIES: usize = 8;
const MAX_TIMESTAMPS: usize = 8;
const MAX_CHAIN: usize = 8;
/// A Merkle tree of 2^64 leaves needs 64 hashes.
pub const MAX_PROOF_HASHES: usize = 64;

/// Bundle format versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// v0.1: inclusion promise (SET) required, inclusion proof optional.
    V0_1,
    /// v0.2: inclusion proof with checkpoint required.
    V0_2,
    /// v0.3: as v0.2, a single certificate instead of a chain.
    V0_3,
}

/// What the signer's key comes with.
#[derive(Debug, Clone)]
pub enum Material {
    /// A Fulcio leaf certificate (DER), and any further certificates the bundle carried.
    Certificate {
        /// The signing certificate.
        leaf: Vec<u8>,
        /// Certificates after the leaf in a v0.1/v0.2 chain.
        rest: Vec<Vec<u8>>,
    },
    /// A key the verifier must be given (the hint only names it).
    PublicKey,
}

/// What was signed.
#[derive(Debug, Clone)]
pub enum Content {
    /// A signature over the artifact.
    Message {
        /// The artifact's SHA-256 digest as the bundle states it, if it does.
        digest: Option<[u8; 32]>,
        /// The signature.
        signature: Vec<u8>,
    },
    /// A DSSE envelope with one signature.
    Dsse {
        /// `payloadType`.
        payload_type: String,
        /// The payload bytes.
        payload: Vec<u8>,
        /// The one signature over PAE(payload_type, payload).
        signature: Vec<u8>,
    },
}

impl Content {
    /// The signature bytes, which timestamps are taken over.
    pub fn signature(&self) -> &[u8] {
        match self {
            Content::Message { signature, .. } | Content::Dsse { signature, .. } => signature,
        }
    }
}

/// An inclusion proof and the checkpoint it ends in.
#[derive(Debug, Clone)]
pub struct InclusionProof {
    /// The leaf's index in the tree the proof is for.
    pub log_index: u64,
    /// Root hash of that tree.
    pub root_hash: Vec<u8>,
    /// Size of that tree.
    pub tree_size: u64,
    /// Sibling hashes, leaf to root.
    pub hashes: Vec<Vec<u8>>,
    /// The signed note committing to the root, if any.
    pub checkpoint: Option<String>,
}

/// One transparency log entry.
#[derive(Debug, Clone)]
pub struct TlogEntry {
    /// Index in the log (the one the SET signs).
    pub log_index: u64,
    /// The log's key id.
    pub log_id: Vec<u8>,
    /// Entry kind (`hashedrekord`, `dsse`, `intoto`).
    pub kind: String,
    /// Entry kind version (`0.0.1`, `0.0.2`).
    pub version: String,
    /// When the log says it integrated the entry (Rekor v1; 0 or absent in Rekor v2).
    pub integrated_time: Option<i64>,
    /// The signed entry timestamp.
    pub signed_entry_timestamp: Option<Vec<u8>>,
    /// The inclusion proof.
    pub inclusion_proof: Option<InclusionProof>,
    /// The entry body as the log hashed it.
    pub body: Vec<u8>,
}

/// A parsed bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Format version.
    pub version: Version,
    /// The signer's key material.
    pub material: Material,
    /// Transparency log entries.
    pub tlog_entries: Vec<TlogEntry>,
    /// RFC 3161 timestamp responses (DER).
    pub timestamps: Vec<Vec<u8>>,
    /// What was signed.
    pub content: Content,
}

/// Base64 bytes, standard or URL-safe alphabet (protobuf JSON allows both).
#[derive(Debug, Clone, Default)]
struct B64(Vec<u8>);

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let mut text = String::deserialize(d)?;
        // Some writers wrap long base64 lines; the whitespace carries nothing.
        text.retain(|c| !c.is_ascii_whitespace());
        STANDARD
            .decode(&text)
            .or_else(|_| URL_SAFE.decode(&text))
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// A protobuf JSON 64-bit integer: a string of digits or a number.
fn int64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Text(String),
        Number(i64),
    }
    match Either::deserialize(d)? {
        Either::Number(n) => Ok(n),
        Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

fn opt_int64<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<i64>, D::Error> {
    int64(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: RawMaterial,
    #[serde(default)]
    message_signature: Option<RawMessageSignature>,
    #[serde(default)]
    dsse_envelope: Option<RawEnvelope>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMaterial {
    #[serde(default)]
    certificate: Option<RawCert>,
    #[serde(default)]
    x509_certificate_chain: Option<RawChain>,
    #[serde(default)]
    public_key: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<RawTlogEntry>,
    #[serde(default)]
    timestamp_verification_data: Option<RawTimestamps>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCert {
    raw_bytes: B64,
}

#[derive(Deserialize)]
struct RawChain {
    certificates: Vec<RawCert>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimestamps {
    #[serde(default)]
    rfc3161_timestamps: Vec<RawTimestamp>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimestamp {
    signed_timestamp: B64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTlogEntry {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    log_id: RawLogId,
    kind_version: RawKindVersion,
    #[serde(default, deserialize_with = "opt_int64")]
    integrated_time: Option<i64>,
    #[serde(default)]
    inclusion_promise: Option<RawPromise>,
    #[serde(default)]
    inclusion_proof: Option<RawProof>,
    canonicalized_body: B64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawLogId {
    key_id: B64,
}

#[derive(Deserialize)]
struct RawKindVersion {
    kind: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPromise {
    signed_entry_timestamp: B64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProof {
    #[serde(deserialize_with = "int64")]
    log_index: i64,
    root_hash: B64,
    #[serde(deserialize_with = "int64")]
    tree_size: i64,
    #[serde(default)]
    hashes: Vec<B64>,
    #[serde(default)]
    checkpoint: Option<RawCheckpoint>,
}

#[derive(Deserialize)]
struct RawCheckpoint {
    envelope: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessageSignature {
    #[serde(default)]
    message_digest: Option<RawDigest>,
    signature: B64,
}

#[derive(Deserialize)]
struct RawDigest {
    algorithm: String,
    digest: B64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEnvelope {
    payload: B64,
    payload_type: String,
    signatures: Vec<RawSignature>,
}

#[derive(Deserialize)]
struct RawSignature {
    sig: B64,
}

fn bundle_error(what: impl Into<String>) -> Error {
    Error::Bundle(what.into())
}

fn version(media_type: &str) -> Result<Version> {
    match media_type {
        "application/vnd.dev.sigstore.bundle+json;version=0.1" => Ok(Version::V0_1),
        "application/vnd.dev.sigstore.bundle+json;version=0.2" => Ok(Version::V0_2),
        "application/vnd.dev.sigstore.bundle+json;version=0.3"
        | "application/vnd.dev.sigstore.bundle.v0.3+json" => Ok(Version::V0_3),
        other => Err(bundle_error(format!(
            "unsupported bundle media type {other:?}"
        ))),
    }
}

fn non_negative(field: &str, n: i64) -> Result<u64> {
    u64::try_from(n).map_err(|_| bundle_error(format!("{field} is negative")))
}

impl Bundle {
    /// Parses a bundle's JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_BUNDLE_BYTES {
            return Err(bundle_error(format!(
                "larger than {MAX_BUNDLE_BYTES} bytes"
            )));
        }
        let raw: RawBundle =
            serde_json::from_slice(bytes).map_err(|e| bundle_error(e.to_string()))?;
        let version = version(&raw.media_type)?;
        let m = raw.verification_material;

        let material = match (m.certificate, m.x509_certificate_chain, m.public_key) {
            (Some(cert), None, None) => Material::Certificate {
                leaf: cert.raw_bytes.0,
                rest: Vec::new(),
            },
            (None, Some(chain), None) => {
                if chain.certificates.is_empty() || chain.certificates.len() > MAX_CHAIN {
                    return Err(bundle_error(format!(
                        "x509CertificateChain needs 1 to {MAX_CHAIN} certificates"
                    )));
                }
                let mut certs = chain.certificates.into_iter().map(|c| c.raw_bytes.0);
                let leaf = certs.next().unwrap_or_default();
                Material::Certificate {
                    leaf,
                    rest: certs.collect(),
                }
            }
            (None, None, Some(_)) => Material::PublicKey,
            _ => {
                return Err(bundle_error(
                    "verificationMaterial needs exactly one of certificate, x509CertificateChain, publicKey",
                ));
            }
        };

        if m.tlog_entries.is_empty() || m.tlog_entries.len() > MAX_TLOG_ENTRIES {
            return Err(bundle_error(format!(
                "needs 1 to {MAX_TLOG_ENTRIES} transparency log entries"
            )));
        }
        let tlog_entries = m
            .tlog_entries
            .into_iter()
            .map(|e| {
                let inclusion_proof = e
                    .inclusion_proof
                    .map(|p| {
                        if p.hashes.len() > MAX_PROOF_HASHES {
                            return Err(bundle_error("inclusion proof too long"));
                        }
                        Ok(InclusionProof {
                            log_index: non_negative("inclusionProof.logIndex", p.log_index)?,
                            root_hash: p.root_hash.0,
                            tree_size: non_negative("inclusionProof.treeSize", p.tree_size)?,
                            hashes: p.hashes.into_iter().map(|h| h.0).collect(),
                            checkpoint: p.checkpoint.map(|c| c.envelope),
                        })
                    })
                    .transpose()?;
                Ok(TlogEntry {
                    log_index: non_negative("logIndex", e.log_index)?,
                    log_id: e.log_id.key_id.0,
                    kind: e.kind_version.kind,
                    version: e.kind_version.version,
                    integrated_time: e.integrated_time.filter(|t| *t != 0),
                    signed_entry_timestamp: e.inclusion_promise.map(|p| p.signed_entry_timestamp.0),
                    inclusion_proof,
                    body: e.canonicalized_body.0,
                })
            })
            .collect::<Result<Vec<_>>>()?;

        let timestamps: Vec<Vec<u8>> = m
            .timestamp_verification_data
            .map(|t| {
                t.rfc3161_timestamps
                    .into_iter()
                    .map(|t| t.signed_timestamp.0)
                    .collect()
            })
            .unwrap_or_default();
        if timestamps.len() > MAX_TIMESTAMPS {
            return Err(bundle_error(format!(
                "more than {MAX_TIMESTAMPS} timestamps"
            )));
        }

        let content = match (raw.message_signature, raw.dsse_envelope) {
            (Some(ms), None) => {
                let digest = ms
                    .message_digest
                    .map(|d| {
                        if d.algorithm != "SHA2_256" {
                            return Err(bundle_error(format!(
                                "message digest algorithm {} unsupported",
                                d.algorithm
                            )));
                        }
                        <[u8; 32]>::try_from(d.digest.0.as_slice())
                            .map_err(|_| bundle_error("message digest is not 32 bytes"))
                    })
                    .transpose()?;
                Content::Message {
                    digest,
                    signature: ms.signature.0,
                }
            }
            (None, Some(env)) => {
                let [sig] = <[RawSignature; 1]>::try_from(env.signatures)
                    .map_err(|_| bundle_error("DSSE envelope needs exactly one signature"))?;
                Content::Dsse {
                    payload_type: env.payload_type,
                    payload: env.payload.0,
                    signature: sig.sig.0,
                }
            }
            _ => {
                return Err(bundle_error(
                    "needs exactly one of messageSignature and dsseEnvelope",
                ));
            }
        };

        Ok(Self {
            version,
            material,
            tlog_entries,
            timestamps,
            content,
        })
    }
}
