//! Sigstore bundle verification, offline: keyless signatures (a Fulcio certificate naming an
//! OIDC identity) and managed-key signatures, with their transparency log and timestamp
//! evidence, checked against a [`TrustedRoot`] only — nothing is fetched.
//!
//! A bundle verifies when, in this order:
//! 1. it parses (v0.1, v0.2 or v0.3, either media type spelling) within the size bounds;
//! 2. what it signs is the artifact: a message signature's digest, or a DSSE envelope's
//!    in-toto statement naming the artifact's SHA-256 among its subjects;
//! 3. the signature verifies under the certificate's key or the given key;
//! 4. every RFC 3161 timestamp is over that signature and signed by a trusted TSA
//!    ([`timestamp`]);
//! 5. every transparency log entry matches the signature, signer and artifact, and is
//!    proven by a signed entry timestamp and/or an inclusion proof ending in a checkpoint
//!    signed by a trusted log ([`tlog`]);
//! 6. at least one verified time exists (integrated time or TSA time), and at every one of
//!    them the certificate was valid and chained to a Fulcio CA trusted then, with an SCT
//!    from a trusted CT log ([`certificate`]);
//! 7. the certificate names the required identity and issuer.
//!
//! Layout: [`model`] reads the bundle, [`trusted_root`] the trust root, [`crypto`] holds the
//! key type; a new kind of log entry goes in [`tlog`]'s `match_body`.

pub mod certificate;
pub mod crypto;
pub mod model;
pub mod oci;
#[cfg(any(test, feature = "test-sigstore"))]
pub mod test_instance;
pub mod timestamp;
pub mod tlog;
pub mod trusted_root;

use std::io::Read;
use std::path::Path;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

pub use certificate::Identity;
pub use crypto::PublicKey;
pub use model::Bundle;
pub use trusted_root::TrustedRoot;

use model::{Content, Material};
use tlog::{Expected, Signer, Subject};

/// Why a bundle did not verify.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle is malformed, of an unknown version, or too large.
    #[error("bundle: {0}")]
    Bundle(String),
    /// The trusted root is malformed (names the field).
    #[error("trusted root: {0}")]
    TrustedRoot(String),
    /// A key is malformed or of an unsupported type.
    #[error("key: {0}")]
    Key(String),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    Signature,
    /// What the bundle signs is not the artifact.
    #[error("the bundle is not for this artifact: {0}")]
    Artifact(String),
    /// The certificate is malformed, not valid when signed, or does not chain to a trusted CA.
    #[error("certificate: {0}")]
    Certificate(String),
    /// No valid SCT from a trusted CT log.
    #[error("certificate transparency: {0}")]
    Sct(String),
    /// A transparency log entry is missing, does not match, or its proofs do not verify.
    #[error("transparency log: {0}")]
    Tlog(String),
    /// An RFC 3161 timestamp does not verify.
    #[error("timestamp: {0}")]
    Timestamp(String),
    /// The certificate names another identity or issuer.
    #[error("identity: {0}")]
    Identity(String),
    /// The policy's key kind does not fit the bundle (a key for a certificate bundle or
    /// the reverse).
    #[error("{0}")]
    Policy(String),
}

/// Result with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Allowed clock skew for times the log claims to be in the future.
const MAX_FUTURE_SKEW_SECS: i64 = 60;
/// Most in-toto subjects looked at.
const MAX_SUBJECTS: usize = 4096;

/// What was signed: the artifact itself or only its SHA-256 digest.
#[derive(Debug, Clone, Copy)]
pub enum Artifact<'a> {
    /// The artifact's bytes.
    Bytes(&'a [u8]),
    /// Its SHA-256 digest.
    Digest([u8; 32]),
}

impl Artifact<'_> {
    fn sha256(&self) -> [u8; 32] {
        match self {
            Artifact::Bytes(b) => Sha256::digest(b).into(),
            Artifact::Digest(d) => *d,
        }
    }
}

/// How a text in a certificate must read.
#[derive(Debug, Clone)]
pub enum Match {
    /// Exactly this text.
    Exact(String),
    /// A regular expression matching the whole text.
    Regex(regex::Regex),
}

impl Match {
    /// A regular expression anchored at both ends.
    pub fn regex(pattern: &str) -> Result<Self, regex::Error> {
        regex::Regex::new(&format!("^(?:{pattern})$")).map(Match::Regex)
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Match::Exact(e) => e == text,
            Match::Regex(r) => r.is_match(text),
        }
    }
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Match::Exact(e) => write!(f, "{e:?}"),
            Match::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

/// Who must have signed.
#[derive(Debug, Clone)]
pub enum Policy {
    /// A Fulcio certificate for this subject (SAN) from this OIDC issuer.
    Identity {
        /// The certificate's subject alternative name.
        subject: Match,
        /// The OIDC issuer.
        issuer: Match,
    },
    /// A managed key.
    Key(PublicKey),
}

/// What a verified bundle showed.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The certificate's identity (keyless bundles).
    pub identity: Option<Identity>,
    /// The verified signing times (integrated times and TSA times).
    pub times: Vec<DateTime<Utc>>,
    /// The in-toto statement (DSSE bundles).
    pub statement: Option<serde_json::Value>,
}

/// Reads a file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(std::io::Error::other(format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

/// DSSE's pre-authentication encoding, which the signature signs (shared with keyed bundles).
pub use super::bundle::pae;

/// The in-toto statement, if it names the artifact digest among its subjects.
fn statement_for(payload: &[u8], digest: &[u8; 32]) -> Result<serde_json::Value> {
    let statement: serde_json::Value =
        serde_json::from_slice(payload).map_err(|e| Error::Artifact(format!("statement: {e}")))?;
    let kind = statement["_type"].as_str().unwrap_or_default();
    if !matches!(
        kind,
        "https://in-toto.io/Statement/v0.1" | "https://in-toto.io/Statement/v1"
    ) {
        return Err(Error::Artifact(format!(
            "not an in-toto statement: {kind:?}"
        )));
    }
    let subjects = statement["subject"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if subjects.len() > MAX_SUBJECTS {
        return Err(Error::Artifact(format!(
            "more than {MAX_SUBJECTS} subjects"
        )));
    }
    let want = hex::encode(digest);
    if !subjects.iter().any(|s| {
        s["digest"]["sha256"]
            .as_str()
            .is_some_and(|d| d.eq_ignore_ascii_case(&want))
    }) {
        return Err(Error::Artifact(
            "no statement subject has the artifact's digest".into(),
        ));
    }
    Ok(statement)
}

/// Verifies `bundle` for `artifact` under `policy` and `root`, as of `now`.
pub fn verify(
    bundle: &Bundle,
    artifact: Artifact<'_>,
    policy: &Policy,
    root: &TrustedRoot,
    now: DateTime<Utc>,
) -> Result<Verified> {
    let digest = artifact.sha256();

    // What was signed, and the bytes the signature is over.
    let mut statement = None;
    let pae_bytes;
    let subject = match &bundle.content {
        Content::Message { digest: stated, .. } => {
            if stated.is_some_and(|s| s != digest) {
                return Err(Error::Artifact("message digest differs".into()));
            }
            Subject::Message(digest)
        }
        Content::Dsse {
            payload_type,
            payload,
            ..
        } => {
            if payload_type != "application/vnd.in-toto+json" {
                return Err(Error::Artifact(format!(
                    "DSSE payload type {payload_type:?}"
                )));
            }
            statement = Some(statement_for(payload, &digest)?);
            pae_bytes = pae(payload_type, payload);
            Subject::Dsse {
                payload_type,
                payload,
                pae: &pae_bytes,
            }
        }
    };

    // The signer's key.
    let leaf = match (&bundle.material, policy) {
        (Material::Certificate { leaf, rest }, Policy::Identity { .. }) => {
            for cert in rest {
                if certificate::is_self_issued(cert)? {
                    return Err(Error::Certificate(
                        "the bundle carries a root certificate".into(),
                    ));
                }
            }
            Some(certificate::Leaf::parse(leaf)?)
        }
        (Material::PublicKey, Policy::Key(_)) => None,
        (Material::PublicKey, Policy::Identity { .. }) => {
            return Err(Error::Policy(
                "the bundle is signed with a key, not a certificate".into(),
            ));
        }
        (Material::Certificate { .. }, Policy::Key(_)) => {
            return Err(Error::Policy(
                "the bundle is signed with a certificate, not a key".into(),
            ));
        }
    };
    let key = match (&leaf, policy) {
        (Some(leaf), _) => &leaf.key,
        (None, Policy::Key(key)) => key,
        (None, Policy::Identity { .. }) => return Err(Error::Policy("no key".into())),
    };

    let signature = bundle.content.signature();
    match (&subject, artifact) {
        (Subject::Message(_), Artifact::Bytes(bytes)) => key.verify(bytes, signature)?,
        (Subject::Message(d), Artifact::Digest(_)) => key.verify_sha256_digest(d, signature)?,
        (Subject::Dsse { pae, .. }, _) => key.verify(pae, signature)?,
    }

    // Times: RFC 3161 stamps first, as Rekor v2 entries need one to pick the log key.
    let mut times = bundle
        .timestamps
        .iter()
        .map(|ts| timestamp::verify(ts, signature, root))
        .collect::<Result<Vec<_>>>()?;

    let signer = match &leaf {
        Some(leaf) => Signer::Certificate(&leaf.der),
        None => Signer::PublicKey(key.spki()),
    };
    let expected = Expected {
        signature,
        signer,
        subject,
    };
    let tsa_times = times.clone();
    for entry in &bundle.tlog_entries {
        if let Some(t) = tlog::verify_entry(entry, bundle.version, root, &expected, &tsa_times)? {
            if t.timestamp() > now.timestamp() + MAX_FUTURE_SKEW_SECS {
                return Err(Error::Tlog("integrated time is in the future".into()));
            }
            times.push(t);
        }
    }
    if times.is_empty() {
        return Err(Error::Timestamp(
            "no verified time: the bundle needs a signed entry timestamp or an RFC 3161 timestamp"
                .into(),
        ));
    }

    let identity = match (&leaf, policy) {
        (Some(leaf), Policy::Identity { subject, issuer }) => {
            let mut issuer_spki = None;
            for t in &times {
                if !leaf.valid_at(*t) {
                    return Err(Error::Certificate(format!(
                        "not valid at the signing time {}",
                        t.to_rfc3339()
                    )));
                }
                issuer_spki = Some(leaf.verify_chain(root, *t)?);
            }
            if let Some(spki) = issuer_spki {
                leaf.verify_scts(root, &spki)?;
            }
            let identity = leaf.identity()?;
            if !identity.subjects.iter().any(|s| subject.matches(s)) {
                return Err(Error::Identity(format!(
                    "the certificate is for {:?}, not {subject}",
                    identity.subjects
                )));
            }
            if !identity
                .issuer
                .as_deref()
                .is_some_and(|i| issuer.matches(i))
            {
                return Err(Error::Identity(format!(
                    "the certificate's issuer is {:?}, not {issuer}",
                    identity.issuer
                )));
            }
            Some(identity)
        }
        _ => None,
    };

    Ok(Verified {
        identity,
        times,
        statement,
    })
}

/// The Sigstore public-good trusted root (the one sigstore-python 4.5.1 ships), used when
/// no other is given on the command line.
pub const PUBLIC_GOOD_TRUSTED_ROOT: &str = include_str!("keyless/trusted_root.public-good.json");

/// The inputs of `meshgate verify-bundle` (the Sigstore conformance client protocol).
#[derive(Debug, Clone)]
pub struct BundleCheck<'a> {
    /// The bundle file.
    pub bundle: &'a Path,
    /// `sha256:<hex>` for a digest, anything else a path to the artifact.
    pub artifact: &'a str,
    /// The trusted root file; the public-good root when absent.
    pub trusted_root: Option<&'a Path>,
    /// A PEM public key file (managed-key bundles) …
    pub key: Option<&'a Path>,
    /// … or the certificate identity and issuer (keyless bundles).
    pub identity: Option<(Match, Match)>,
}

/// Largest artifact file hashed by [`check_files`] (a digest argument has no limit).
const MAX_ARTIFACT_BYTES: usize = 1 << 30;

/// The trusted root in `path`, or the built-in public-good root.
pub fn load_trusted_root(path: Option<&Path>) -> Result<TrustedRoot> {
    match path {
        Some(path) => TrustedRoot::from_file(path),
        None => TrustedRoot::from_json(PUBLIC_GOOD_TRUSTED_ROOT.as_bytes()),
    }
}

/// Reads the files named by `check` and verifies the bundle, as of now.
pub fn check_files(check: &BundleCheck<'_>) -> Result<Verified, String> {
    let root = load_trusted_root(check.trusted_root).map_err(|e| e.to_string())?;
    let policy = match (&check.identity, check.key) {
        (Some((subject, issuer)), None) => Policy::Identity {
            subject: subject.clone(),
            issuer: issuer.clone(),
        },
        (None, Some(path)) => {
            let pem =
                read_bounded(path, 64 * 1024).map_err(|e| format!("{}: {e}", path.display()))?;
            Policy::Key(PublicKey::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?)
        }
        _ => return Err("give either a certificate identity and issuer, or a key".into()),
    };
    let bundle_bytes = read_bounded(check.bundle, model::MAX_BUNDLE_BYTES)
        .map_err(|e| format!("{}: {e}", check.bundle.display()))?;
    let bundle = Bundle::from_json(&bundle_bytes).map_err(|e| e.to_string())?;
    let data;
    let artifact = match check.artifact.strip_prefix("sha256:") {
        Some(hex_digest) => {
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hex_digest, &mut digest)
                .map_err(|e| format!("{}: {e}", check.artifact))?;
            Artifact::Digest(digest)
        }
        None => {
            data = read_bounded(Path::new(check.artifact), MAX_ARTIFACT_BYTES)
                .map_err(|e| format!("{}: {e}", check.artifact))?;
            Artifact::Bytes(&data)
        }
    };
    verify_now(&bundle, artifact, &policy, &root).map_err(|e| e.to_string())
}

/// [`verify`] as of now: what the CLI and the webhook check.
pub fn verify_now(
    bundle: &Bundle,
    artifact: Artifact<'_>,
    policy: &Policy,
    root: &TrustedRoot,
) -> Result<Verified> {
    verify(bundle, artifact, policy, root, Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_regexes_match_whole_names_only() {
        let m =
            Match::regex("https://github.com/acme/[^/]+/.github/workflows/release.yml@.*").unwrap();
        assert!(
            m.matches("https://github.com/acme/filters/.github/workflows/release.yml@refs/tags/v1")
        );
        assert!(!m.matches(
            "https://evil.example/?https://github.com/acme/x/.github/workflows/release.yml@x"
        ));
        assert!(!m.matches("https://github.com/acme/a/b/.github/workflows/release.yml@x"));
        let exact = Match::Exact("a@example.com".into());
        assert!(exact.matches("a@example.com") && !exact.matches("a@example.com.evil"));
    }

    #[test]
    fn validity_windows_include_both_ends() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let v = trusted_root::Validity {
            start: Some(t("2025-01-01T00:00:00Z")),
            end: Some(t("2025-06-01T00:00:00Z")),
        };
        assert!(v.contains(t("2025-01-01T00:00:00Z")) && v.contains(t("2025-06-01T00:00:00Z")));
        assert!(
            !v.contains(t("2024-12-31T23:59:59Z")) && !v.contains(t("2025-06-01T00:00:00.001Z"))
        );
    }

    fn bundle_json(hashes: usize) -> String {
        let hash = "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"";
        let hashes = vec![hash; hashes].join(",");
        format!(
            r#"{{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial":{{"publicKey":{{"hint":"x"}},"tlogEntries":[{{
              "logIndex":"1","logId":{{"keyId":"AA=="}},
              "kindVersion":{{"kind":"hashedrekord","version":"0.0.1"}},
              "integratedTime":"1700000000",
              "inclusionProof":{{"logIndex":"1","rootHash":"AA==","treeSize":"2","hashes":[{hashes}],
                "checkpoint":{{"envelope":"x"}}}},
              "canonicalizedBody":"e30="}}]}},
            "messageSignature":{{"signature":"AA=="}}}}"#
        )
    }

    #[test]
    fn bundles_are_bounded() {
        assert!(Bundle::from_json(bundle_json(64).as_bytes()).is_ok());
        let long = Bundle::from_json(bundle_json(65).as_bytes());
        assert!(matches!(long, Err(Error::Bundle(m)) if m.contains("too long")));
        let mut big = bundle_json(1).into_bytes();
        big.resize(model::MAX_BUNDLE_BYTES + 1, b' ');
        assert!(matches!(Bundle::from_json(&big), Err(Error::Bundle(m)) if m.contains("larger")));
        let unknown = bundle_json(1).replace("bundle.v0.3+json", "bundle.v0.9+json");
        assert!(Bundle::from_json(unknown.as_bytes()).is_err());
    }

    #[test]
    fn the_built_in_public_good_root_reads() {
        let root = TrustedRoot::from_json(PUBLIC_GOOD_TRUSTED_ROOT.as_bytes()).unwrap();
        assert!(!root.tlogs.is_empty() && !root.certificate_authorities.is_empty());
        assert!(!root.ctlogs.is_empty() && !root.timestamp_authorities.is_empty());
        let broken =
            PUBLIC_GOOD_TRUSTED_ROOT.replacen("\"start\": \"2021", "\"start\": \"yesterday", 1);
        let err = TrustedRoot::from_json(broken.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("validFor.start"), "{err}");
    }
}
