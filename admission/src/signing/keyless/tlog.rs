//! Transparency log entries: the entry body matched to what the bundle signs, the signed
//! entry timestamp (Rekor v1), the RFC 6962 inclusion proof and the checkpoint (a signed
//! note, c2sp.org/signed-note, possibly co-signed by witnesses) that commits to its root.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::model::{InclusionProof, TlogEntry, Version};
use super::trusted_root::{Log, TrustedRoot};
use super::{Error, Result};

/// Largest checkpoint read, and most signature lines looked at.
const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;
const MAX_NOTE_SIGNATURES: usize = 32;

/// What the entry's body must record.
pub struct Expected<'a> {
    /// The signature in the bundle.
    pub signature: &'a [u8],
    /// The signer: a certificate (DER) or a public key (DER SPKI).
    pub signer: Signer<'a>,
    /// What was signed.
    pub subject: Subject<'a>,
}

/// The signer as the entry must name it.
pub enum Signer<'a> {
    /// A certificate, DER.
    Certificate(&'a [u8]),
    /// A public key, DER SPKI.
    PublicKey(&'a [u8]),
}

/// What was signed, as the entry must record it.
pub enum Subject<'a> {
    /// A message signature over an artifact with this SHA-256 digest.
    Message([u8; 32]),
    /// A DSSE envelope.
    Dsse {
        /// `payloadType`.
        payload_type: &'a str,
        /// The payload.
        payload: &'a [u8],
        /// PAE(payload_type, payload), which the signature signs.
        pae: &'a [u8],
    },
}

fn tlog_error(what: impl Into<String>) -> Error {
    Error::Tlog(what.into())
}

fn mismatch(what: &str) -> Error {
    Error::Tlog(format!("log entry does not match the bundle: {what}"))
}

/// Verifies one entry; returns the integrated time if a signed entry timestamp vouches for
/// it. The log key is chosen by a verified time only: the integrated time when a signed entry
/// timestamp is there to vouch for it (checked with that key below), else the RFC 3161 times
/// (`tsa_times`), at every one of which the key must be valid. An integrated time nothing
/// signs would let a bundle pick a retired log key.
pub fn verify_entry(
    entry: &TlogEntry,
    version: Version,
    root: &TrustedRoot,
    expected: &Expected<'_>,
    tsa_times: &[DateTime<Utc>],
) -> Result<Option<DateTime<Utc>>> {
    let integrated = entry
        .integrated_time
        .map(|t| {
            DateTime::from_timestamp(t, 0).ok_or_else(|| tlog_error("integrated time out of range"))
        })
        .transpose()?;
    let log = match (&entry.signed_entry_timestamp, integrated) {
        (Some(_), Some(t)) => root.tlog(&entry.log_id, Some(t)),
        _ => tsa_times
            .first()
            .and_then(|first| root.tlog(&entry.log_id, Some(*first)))
            .filter(|log| tsa_times.iter().all(|t| log.valid.contains(*t))),
    }
    .ok_or_else(|| {
        tlog_error("entry is from a transparency log the trusted root does not trust at its time")
    })?;

    match_body(entry, expected)?;

    let mut vouched = None;
    match (&entry.signed_entry_timestamp, integrated) {
        (Some(set), Some(t)) => {
            verify_set(entry, log, set)?;
            vouched = Some(t);
        }
        (Some(_), None) => {
            return Err(tlog_error("signed entry timestamp without integrated time"));
        }
        (None, _) if version == Version::V0_1 => {
            return Err(tlog_error("a v0.1 bundle needs a signed entry timestamp"));
        }
        (None, _) => {}
    }

    match &entry.inclusion_proof {
        Some(proof) => {
            verify_inclusion(&entry.body, proof)?;
            match &proof.checkpoint {
                Some(note) => verify_checkpoint(note, proof, log)?,
                None if version >= Version::V0_2 => {
                    return Err(tlog_error("inclusion proof without checkpoint"));
                }
                None => {}
            }
        }
        None if version >= Version::V0_2 || entry.signed_entry_timestamp.is_none() => {
            return Err(tlog_error("entry without inclusion proof"));
        }
        None => {}
    }
    Ok(vouched)
}

/// Rekor v1's signed entry timestamp: the log's signature over the canonical JSON of body,
/// integrated time, log id and index.
fn verify_set(entry: &TlogEntry, log: &Log, set: &[u8]) -> Result<()> {
    let payload = serde_json::json!({
        "body": STANDARD.encode(&entry.body),
        "integratedTime": entry.integrated_time.unwrap_or_default(),
        "logID": hex::encode(&entry.log_id),
        "logIndex": entry.log_index,
    });
    // serde_json sorts object keys (no preserve_order), which with these plain values is the
    // RFC 8785 canonical form Rekor signs.
    let canonical = serde_json::to_vec(&payload).map_err(|e| tlog_error(e.to_string()))?;
    log.key
        .verify(&canonical, set)
        .map_err(|_| tlog_error("signed entry timestamp does not verify"))
}

fn hash_children(left: &[u8], right: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// RFC 9162 2.1.3.2: the inclusion proof of `body`'s leaf against the proof's root hash.
fn verify_inclusion(body: &[u8], proof: &InclusionProof) -> Result<()> {
    let (index, size) = (proof.log_index, proof.tree_size);
    if index >= size {
        return Err(tlog_error("inclusion proof index outside the tree"));
    }
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(body);
    let mut r: [u8; 32] = h.finalize().into();
    let (mut f, mut s) = (index, size - 1);
    for p in &proof.hashes {
        if p.len() != 32 {
            return Err(tlog_error("inclusion proof hash is not 32 bytes"));
        }
        if s == 0 {
            return Err(tlog_error("inclusion proof too long"));
        }
        if f & 1 == 1 || f == s {
            r = hash_children(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = hash_children(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 || r.as_slice() != proof.root_hash.as_slice() {
        return Err(tlog_error("inclusion proof does not lead to the root hash"));
    }
    Ok(())
}

/// A checkpoint: the note's body (origin, tree size, root hash, optional extension lines)
/// must be signed by the log — found by its key hint, the first 4 bytes of its key id —
/// and commit to the proof's tree size and root. Witness co-signatures are ignored.
fn verify_checkpoint(note: &str, proof: &InclusionProof, log: &Log) -> Result<()> {
    if note.len() > MAX_CHECKPOINT_BYTES {
        return Err(tlog_error("checkpoint too large"));
    }
    let split = note
        .find("\n\n")
        .ok_or_else(|| tlog_error("checkpoint has no signature block"))?;
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let mut lines = text.lines();
    let origin = lines.next().unwrap_or_default();
    let size = lines.next().unwrap_or_default();
    let root = lines.next().unwrap_or_default();
    if origin.is_empty() {
        return Err(tlog_error("checkpoint without origin"));
    }
    let size: u64 = size
        .parse()
        .map_err(|_| tlog_error("checkpoint tree size unreadable"))?;
    let root = STANDARD
        .decode(root)
        .map_err(|_| tlog_error("checkpoint root hash unreadable"))?;

    let hint = log
        .key_id
        .get(..4)
        .ok_or_else(|| tlog_error("log key id too short"))?;
    let mut candidates = 0usize;
    let mut verified = false;
    for line in signatures
        .lines()
        .filter(|l| !l.is_empty())
        .take(MAX_NOTE_SIGNATURES)
    {
        let Some(rest) = line.strip_prefix("\u{2014} ") else {
            return Err(tlog_error("checkpoint signature line malformed"));
        };
        let Some((_name, sig)) = rest.rsplit_once(' ') else {
            return Err(tlog_error("checkpoint signature line malformed"));
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            return Err(tlog_error("checkpoint signature unreadable"));
        };
        if sig.len() < 5 || &sig[..4] != hint {
            continue;
        }
        candidates += 1;
        if log.key.verify(text.as_bytes(), &sig[4..]).is_ok() {
            verified = true;
        }
    }
    if candidates == 0 {
        return Err(tlog_error("checkpoint is not signed by the entry's log"));
    }
    if !verified {
        return Err(tlog_error("checkpoint signature does not verify"));
    }
    if size != proof.tree_size || root != proof.root_hash {
        return Err(tlog_error(
            "checkpoint does not commit to the inclusion proof's tree",
        ));
    }
    Ok(())
}

fn at<'v>(v: &'v Value, path: &[&str]) -> Result<&'v Value> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .ok_or_else(|| mismatch(&format!("no {}", path.join("."))))
}

fn text<'v>(v: &'v Value, path: &[&str]) -> Result<&'v str> {
    at(v, path)?
        .as_str()
        .ok_or_else(|| mismatch(&format!("{} is not a string", path.join("."))))
}

fn b64_at(v: &Value, path: &[&str]) -> Result<Vec<u8>> {
    STANDARD
        .decode(text(v, path)?)
        .map_err(|_| mismatch(&format!("{} is not base64", path.join("."))))
}

/// A PEM certificate or public key (as Rekor v1 records signers) to DER.
fn pem_der(pem_b64: &[u8]) -> Result<(String, Vec<u8>)> {
    let pem = STANDARD
        .decode(pem_b64)
        .map_err(|_| mismatch("signer is not base64"))?;
    // Rekor keeps the PEM its clients sent, not always in RFC 7468's strict line lengths.
    pem::parse(&pem)
        .map(|p| (p.tag().to_string(), p.into_contents()))
        .map_err(|_| mismatch("signer is not PEM"))
}

fn same_signer_pem(pem_b64: &str, signer: &Signer<'_>) -> Result<()> {
    let (label, der) = pem_der(pem_b64.as_bytes())?;
    let same = match signer {
        Signer::Certificate(cert) => label == "CERTIFICATE" && der == *cert,
        Signer::PublicKey(spki) => label == "PUBLIC KEY" && der == *spki,
    };
    if same {
        Ok(())
    } else {
        Err(mismatch("signer"))
    }
}

/// Rekor v2's verifier: `{x509Certificate: {rawBytes}}` or `{publicKey: {rawBytes}}`.
fn same_signer_v2(verifier: &Value, signer: &Signer<'_>) -> Result<()> {
    let same = match signer {
        Signer::Certificate(cert) => b64_at(verifier, &["x509Certificate", "rawBytes"])? == *cert,
        Signer::PublicKey(spki) => b64_at(verifier, &["publicKey", "rawBytes"])? == *spki,
    };
    if same {
        Ok(())
    } else {
        Err(mismatch("signer"))
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn match_body(entry: &TlogEntry, e: &Expected<'_>) -> Result<()> {
    let body: Value =
        serde_json::from_slice(&entry.body).map_err(|_| mismatch("body is not JSON"))?;
    if text(&body, &["kind"])? != entry.kind || text(&body, &["apiVersion"])? != entry.version {
        return Err(mismatch("kind or version"));
    }
    let spec = at(&body, &["spec"])?;
    match (entry.kind.as_str(), entry.version.as_str(), &e.subject) {
        ("hashedrekord", "0.0.1", Subject::Message(digest)) => {
            if text(spec, &["data", "hash", "algorithm"])? != "sha256"
                || text(spec, &["data", "hash", "value"])? != hex::encode(digest)
            {
                return Err(mismatch("artifact digest"));
            }
            if b64_at(spec, &["signature", "content"])? != e.signature {
                return Err(mismatch("signature"));
            }
            same_signer_pem(
                text(spec, &["signature", "publicKey", "content"])?,
                &e.signer,
            )
        }
        ("hashedrekord", "0.0.2", subject) => {
            let spec = at(spec, &["hashedRekordV002"])?;
            let digest = match subject {
                Subject::Message(d) => d.to_vec(),
                // Rekor v2 logs a DSSE signature as a hashedrekord over its PAE.
                Subject::Dsse { pae, .. } => Sha256::digest(pae).to_vec(),
            };
            if text(spec, &["data", "algorithm"])? != "SHA2_256"
                || b64_at(spec, &["data", "digest"])? != digest
            {
                return Err(mismatch("digest"));
            }
            if b64_at(spec, &["signature", "content"])? != e.signature {
                return Err(mismatch("signature"));
            }
            same_signer_v2(at(spec, &["signature", "verifier"])?, &e.signer)
        }
        ("dsse", "0.0.1", Subject::Dsse { payload, .. }) => {
            if text(spec, &["payloadHash", "algorithm"])? != "sha256"
                || text(spec, &["payloadHash", "value"])? != sha256_hex(payload)
            {
                return Err(mismatch("payload digest"));
            }
            let sig = only_signature(spec)?;
            if b64_at(sig, &["signature"])? != e.signature {
                return Err(mismatch("signature"));
            }
            same_signer_pem(text(sig, &["verifier"])?, &e.signer)
        }
        ("dsse", "0.0.2", Subject::Dsse { payload, .. }) => {
            let spec = at(spec, &["dsseV002"])?;
            if text(spec, &["payloadHash", "algorithm"])? != "SHA2_256"
                || b64_at(spec, &["payloadHash", "digest"])? != Sha256::digest(payload).to_vec()
            {
                return Err(mismatch("payload digest"));
            }
            let sig = only_signature(spec)?;
            if b64_at(sig, &["content"])? != e.signature {
                return Err(mismatch("signature"));
            }
            same_signer_v2(at(sig, &["verifier"])?, &e.signer)
        }
        (
            "intoto",
            "0.0.2",
            Subject::Dsse {
                payload_type,
                payload,
                ..
            },
        ) => {
            let content = at(spec, &["content"])?;
            if text(content, &["payloadHash", "algorithm"])? != "sha256"
                || text(content, &["payloadHash", "value"])? != sha256_hex(payload)
            {
                return Err(mismatch("payload digest"));
            }
            let envelope = at(content, &["envelope"])?;
            if text(envelope, &["payloadType"])? != *payload_type {
                return Err(mismatch("payload type"));
            }
            let [sig] = at(envelope, &["signatures"])?
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            else {
                return Err(mismatch("signatures"));
            };
            // intoto 0.0.2 stores the envelope's base64 fields base64-encoded once more.
            let sig_b64 = b64_at(sig, &["sig"])?;
            if STANDARD
                .decode(sig_b64)
                .map_err(|_| mismatch("signature"))?
                != e.signature
            {
                return Err(mismatch("signature"));
            }
            same_signer_pem(text(sig, &["publicKey"])?, &e.signer)
        }
        (kind, version, _) => Err(mismatch(&format!(
            "entry kind {kind} {version} does not record this kind of signature"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(data: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(data);
        h.finalize().into()
    }

    /// Every leaf of a 7-leaf tree proves against the root; a flipped hash or a wrong
    /// index never does.
    #[test]
    fn inclusion_proofs_of_a_small_tree() {
        let leaves: Vec<Vec<u8>> = (0u8..7).map(|i| vec![i]).collect();
        // MTH per RFC 6962, recursively, with audit paths.
        fn mth(l: &[Vec<u8>]) -> [u8; 32] {
            if l.len() == 1 {
                return leaf(&l[0]);
            }
            let k = l.len().next_power_of_two() / 2;
            hash_children(&mth(&l[..k]), &mth(&l[k..]))
        }
        fn path(m: usize, l: &[Vec<u8>]) -> Vec<Vec<u8>> {
            if l.len() == 1 {
                return vec![];
            }
            let k = l.len().next_power_of_two() / 2;
            if m < k {
                let mut p = path(m, &l[..k]);
                p.push(mth(&l[k..]).to_vec());
                p
            } else {
                let mut p = path(m - k, &l[k..]);
                p.push(mth(&l[..k]).to_vec());
                p
            }
        }
        let root = mth(&leaves).to_vec();
        for m in 0..leaves.len() {
            let mut proof = InclusionProof {
                log_index: m as u64,
                root_hash: root.clone(),
                tree_size: leaves.len() as u64,
                hashes: path(m, &leaves),
                checkpoint: None,
            };
            assert!(verify_inclusion(&leaves[m], &proof).is_ok(), "leaf {m}");
            assert!(verify_inclusion(&[99], &proof).is_err());
            proof.hashes[0][0] ^= 1;
            assert!(verify_inclusion(&leaves[m], &proof).is_err());
            proof.hashes[0][0] ^= 1;
            proof.log_index = (m as u64 + 1) % 7;
            assert!(verify_inclusion(&leaves[m], &proof).is_err());
        }
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;
    use crate::signing::keyless::crypto::PublicKey;
    use crate::signing::keyless::trusted_root::Validity;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};

    fn ed25519_log() -> (Ed25519KeyPair, Log) {
        let pair = Ed25519KeyPair::generate().unwrap();
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend_from_slice(pair.public_key().as_ref());
        let key = PublicKey::from_spki(&spki).unwrap();
        let log = Log {
            key_id: Sha256::digest(&spki).to_vec(),
            key,
            valid: Validity::default(),
        };
        (pair, log)
    }

    fn sig_line(name: &str, hint: &[u8], sig: &[u8]) -> String {
        let mut bytes = hint[..4].to_vec();
        bytes.extend_from_slice(sig);
        format!("\u{2014} {name} {}\n", STANDARD.encode(bytes))
    }

    fn proof(root: &[u8], size: u64) -> InclusionProof {
        InclusionProof {
            log_index: 0,
            root_hash: root.to_vec(),
            tree_size: size,
            hashes: vec![],
            checkpoint: None,
        }
    }

    #[test]
    fn signed_notes_with_witnesses_bad_hints_and_wrong_roots() {
        let (pair, log) = ed25519_log();
        let (witness, _) = ed25519_log();
        let root = [7u8; 32];
        let body = format!("example.log/1\n42\n{}\n", STANDARD.encode(root));
        let log_line = sig_line(
            "example.log/1",
            &log.key_id,
            pair.sign(body.as_bytes()).as_ref(),
        );
        let witness_line = sig_line(
            "witness",
            &[9, 9, 9, 9],
            witness.sign(body.as_bytes()).as_ref(),
        );

        // Signed by the log, with or without a witness co-signature before it.
        let note = format!("{body}\n{log_line}");
        assert!(verify_checkpoint(&note, &proof(&root, 42), &log).is_ok());
        let cosigned = format!("{body}\n{witness_line}{log_line}");
        assert!(verify_checkpoint(&cosigned, &proof(&root, 42), &log).is_ok());

        // Only a witness signed: not the log's checkpoint.
        let witness_only = format!("{body}\n{witness_line}");
        assert!(verify_checkpoint(&witness_only, &proof(&root, 42), &log).is_err());
        // The log's hint, another key's signature.
        let forged = sig_line(
            "example.log/1",
            &log.key_id,
            witness.sign(body.as_bytes()).as_ref(),
        );
        assert!(verify_checkpoint(&format!("{body}\n{forged}"), &proof(&root, 42), &log).is_err());
        // A good note about another tree.
        assert!(verify_checkpoint(&note, &proof(&[8u8; 32], 42), &log).is_err());
        assert!(verify_checkpoint(&note, &proof(&root, 43), &log).is_err());
        // No signature block.
        assert!(verify_checkpoint(&body, &proof(&root, 42), &log).is_err());
    }
}

/// A DSSE entry's one signature (`signatures`); the envelopes verified here carry exactly one.
fn only_signature(spec: &Value) -> Result<&Value> {
    match at(spec, &["signatures"])?
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        [sig] => Ok(sig),
        _ => Err(mismatch("signatures")),
    }
}
