//! A private Sigstore instance for tests: a test CA as Fulcio, a CT log, a Rekor log (signed
//! entry timestamps, one-leaf inclusion proofs and checkpoints) and the trusted root naming
//! them. It signs as the real services do; the verifier is not told it is a test.
//!
//! Test support only: compiled for this crate's tests and, through the `test-sigstore`
//! feature, for the integration tests; it panics on the errors it does not expect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber,
    SigningKey,
};
use sha2::{Digest, Sha256};

use super::certificate::precert_tbs_der;

/// Fulcio's v2 issuer extension.
const FULCIO_ISSUER: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 8];
/// The embedded SCT list extension.
const SCT_LIST: &[u64] = &[1, 3, 6, 1, 4, 1, 11129, 2, 4, 2];

/// One Sigstore instance: CA, CT log and Rekor log keys.
pub struct Instance {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_der: Vec<u8>,
    ct_key: KeyPair,
    rekor_key: KeyPair,
    origin: String,
}

/// How to sign: who, when, and what to leave out or spoil.
pub struct Signing<'a> {
    /// The certificate's URI SAN.
    pub identity: &'a str,
    /// The Fulcio issuer extension.
    pub issuer: &'a str,
    /// The log's integrated time (Unix seconds).
    pub integrated_time: i64,
    /// The certificate's validity (Unix seconds).
    pub not_before: i64,
    /// End of validity.
    pub not_after: i64,
    /// Log the entry with this body instead of the matching one.
    pub body_override: Option<String>,
}

impl<'a> Signing<'a> {
    /// A certificate valid for ten minutes around `now`, logged at `now`.
    pub fn at(identity: &'a str, issuer: &'a str, now: i64) -> Self {
        Self {
            identity,
            issuer,
            integrated_time: now,
            not_before: now - 60,
            not_after: now + 540,
            body_override: None,
        }
    }
}

fn ts(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
}

fn der_utf8(text: &str) -> Vec<u8> {
    let mut out = vec![0x0c, u8::try_from(text.len()).unwrap()];
    out.extend_from_slice(text.as_bytes());
    out
}

fn der_octets(bytes: &[u8]) -> Vec<u8> {
    let len = bytes.len();
    let mut out = vec![0x04];
    if len < 128 {
        out.push(len as u8);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
    out.extend_from_slice(bytes);
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    pem::encode(&pem::Pem::new(label, der.to_vec()))
}

impl Instance {
    /// A fresh instance with new keys.
    pub fn new(origin: &str) -> Self {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{origin} CA"));
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = ts(1_600_000_000);
        ca_params.not_after = ts(2_500_000_000);
        let ca_der = ca_params.self_signed(&ca_key).unwrap().der().to_vec();
        Self {
            ca_key,
            ca_params,
            ca_der,
            ct_key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            rekor_key: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap(),
            origin: origin.to_string(),
        }
    }

    fn log_id(key: &KeyPair) -> Vec<u8> {
        Sha256::digest(key.subject_public_key_info()).to_vec()
    }

    /// The `trusted_root.json` of this instance.
    pub fn trusted_root(&self) -> String {
        let log = |key: &KeyPair| {
            serde_json::json!({
                "baseUrl": "https://log.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": STANDARD.encode(key.subject_public_key_info()),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"}
                },
                "logId": {"keyId": STANDARD.encode(Self::log_id(key))}
            })
        };
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [log(&self.rekor_key)],
            "certificateAuthorities": [{
                "subject": {"organization": "test", "commonName": "test"},
                "uri": "https://ca.test",
                "certChain": {"certificates": [{"rawBytes": STANDARD.encode(&self.ca_der)}]},
                "validFor": {"start": "2020-01-01T00:00:00Z"}
            }],
            "ctlogs": [log(&self.ct_key)],
            "timestampAuthorities": []
        })
        .to_string()
    }

    /// A leaf certificate with an embedded SCT, and its key.
    fn certificate(&self, s: &Signing<'_>) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![SanType::URI(s.identity.try_into().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = ts(s.not_before);
        params.not_after = ts(s.not_after);
        params.serial_number = Some(SerialNumber::from_slice(&[1, 2, 3, 4]));
        params.custom_extensions = vec![CustomExtension::from_oid_content(
            FULCIO_ISSUER,
            der_utf8(s.issuer),
        )];
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let precert = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        let tbs = precert_tbs_der(&precert).unwrap();

        // RFC 6962: the CT log signs the precertificate entry.
        let timestamp = u64::try_from(s.integrated_time).unwrap() * 1000;
        let issuer_key_hash = Sha256::digest(self.ca_key.subject_public_key_info());
        let mut signed = vec![0u8, 0];
        signed.extend_from_slice(&timestamp.to_be_bytes());
        signed.extend_from_slice(&1u16.to_be_bytes());
        signed.extend_from_slice(&issuer_key_hash);
        signed.extend_from_slice(&(tbs.len() as u32).to_be_bytes()[1..]);
        signed.extend_from_slice(&tbs);
        signed.extend_from_slice(&0u16.to_be_bytes());
        let sig = self.ct_key.sign(&signed).unwrap();
        let mut sct = vec![0u8];
        sct.extend_from_slice(&Self::log_id(&self.ct_key));
        sct.extend_from_slice(&timestamp.to_be_bytes());
        sct.extend_from_slice(&0u16.to_be_bytes());
        sct.extend_from_slice(&[4, 3]); // sha256, ecdsa
        sct.extend_from_slice(&(sig.len() as u16).to_be_bytes());
        sct.extend_from_slice(&sig);
        let mut list = ((sct.len() + 2) as u16).to_be_bytes().to_vec();
        list.extend_from_slice(&(sct.len() as u16).to_be_bytes());
        list.extend_from_slice(&sct);
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                SCT_LIST,
                der_octets(&list),
            ));
        (params.signed_by(&key, &issuer).unwrap().der().to_vec(), key)
    }

    /// A v0.3 bundle with a message signature over `artifact` (a hashedrekord entry).
    pub fn sign(&self, artifact: &[u8], s: &Signing<'_>) -> String {
        let (cert, key) = self.certificate(s);
        let signature = key.sign(artifact).unwrap();
        let digest = Sha256::digest(artifact);
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "hashedrekord",
            "spec": {
                "data": {"hash": {"algorithm": "sha256", "value": hex::encode(digest)}},
                "signature": {
                    "content": STANDARD.encode(&signature),
                    "publicKey": {"content": STANDARD.encode(pem("CERTIFICATE", &cert))}
                }
            }
        });
        let content = serde_json::json!({"messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": STANDARD.encode(digest)},
            "signature": STANDARD.encode(&signature)
        }});
        self.bundle(s, &cert, body, content)
    }

    /// A v0.3 bundle with a DSSE envelope over an in-toto `statement` (a dsse entry).
    pub fn sign_dsse(&self, statement: &[u8], s: &Signing<'_>) -> String {
        const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
        let (cert, key) = self.certificate(s);
        let signature = key.sign(&super::pae(PAYLOAD_TYPE, statement)).unwrap();
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(statement))},
                "signatures": [{
                    "signature": STANDARD.encode(&signature),
                    "verifier": STANDARD.encode(pem("CERTIFICATE", &cert))
                }]
            }
        });
        let content = serde_json::json!({"dsseEnvelope": {
            "payload": STANDARD.encode(statement),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": STANDARD.encode(&signature)}]
        }});
        self.bundle(s, &cert, body, content)
    }

    /// A keyless cosign `.sig` layer over a simple-signing `payload`: the base64 signature
    /// and the layer's certificate and Rekor bundle annotations.
    pub fn sign_cosign(&self, payload: &[u8], s: &Signing<'_>) -> (String, serde_json::Value) {
        let bundle: serde_json::Value = serde_json::from_str(&self.sign(payload, s)).unwrap();
        let material = &bundle["verificationMaterial"];
        let entry = &material["tlogEntries"][0];
        let cert = STANDARD
            .decode(material["certificate"]["rawBytes"].as_str().unwrap())
            .unwrap();
        let log_id = STANDARD
            .decode(entry["logId"]["keyId"].as_str().unwrap())
            .unwrap();
        let rekor = serde_json::json!({
            "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
            "Payload": {
                "body": entry["canonicalizedBody"],
                "integratedTime": s.integrated_time,
                "logIndex": 0,
                "logID": hex::encode(log_id),
            }
        });
        let annotations = serde_json::json!({
            super::oci::CERTIFICATE_ANNOTATION: pem("CERTIFICATE", &cert),
            super::oci::REKOR_BUNDLE_ANNOTATION: rekor.to_string(),
        });
        let signature = bundle["messageSignature"]["signature"]
            .as_str()
            .unwrap()
            .to_string();
        (signature, annotations)
    }

    /// Logs `body` (or the override) and wraps it with the certificate and content.
    fn bundle(
        &self,
        s: &Signing<'_>,
        cert: &[u8],
        body: serde_json::Value,
        content: serde_json::Value,
    ) -> String {
        let body = s.body_override.clone().unwrap_or_else(|| body.to_string());
        let log_id = Self::log_id(&self.rekor_key);
        let set_payload = serde_json::json!({
            "body": STANDARD.encode(&body),
            "integratedTime": s.integrated_time,
            "logID": hex::encode(&log_id),
            "logIndex": 0,
        });
        let set = self
            .rekor_key
            .sign(&serde_json::to_vec(&set_payload).unwrap())
            .unwrap();
        // A one-leaf tree: the leaf hash is the root.
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(body.as_bytes());
        let root = h.finalize();
        let note = format!("{}\n1\n{}\n", self.origin, STANDARD.encode(root));
        let mut note_sig = log_id[..4].to_vec();
        note_sig.extend_from_slice(&self.rekor_key.sign(note.as_bytes()).unwrap());
        let checkpoint = format!(
            "{note}\n\u{2014} {} {}\n",
            self.origin,
            STANDARD.encode(note_sig)
        );
        let kind = serde_json::from_str::<serde_json::Value>(&body)
            .map(|b| (b["kind"].clone(), b["apiVersion"].clone()))
            .unwrap_or_default();
        let mut bundle = serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": {"rawBytes": STANDARD.encode(cert)},
                "tlogEntries": [{
                    "logIndex": "0",
                    "logId": {"keyId": STANDARD.encode(&log_id)},
                    "kindVersion": {"kind": kind.0, "version": kind.1},
                    "integratedTime": s.integrated_time.to_string(),
                    "inclusionPromise": {"signedEntryTimestamp": STANDARD.encode(set)},
                    "inclusionProof": {
                        "logIndex": "0",
                        "rootHash": STANDARD.encode(root),
                        "treeSize": "1",
                        "hashes": [],
                        "checkpoint": {"envelope": checkpoint}
                    },
                    "canonicalizedBody": STANDARD.encode(&body)
                }]
            }
        });
        if let (Some(b), Some(c)) = (bundle.as_object_mut(), content.as_object()) {
            b.extend(c.clone());
        }
        bundle.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    const ID: &str = "https://ci.test/acme/filters/.github/workflows/release.yml@refs/heads/main";
    const ISSUER: &str = "https://token.ci.test";
    const ARTIFACT: &[u8] = b"\0asm\x01\0\0\0";

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    fn check(instance: &Instance, bundle: &str, subject: Match, issuer: &str) -> Result<Verified> {
        let root = TrustedRoot::from_json(instance.trusted_root().as_bytes())?;
        let bundle = Bundle::from_json(bundle.as_bytes())?;
        let policy = Policy::Identity {
            subject,
            issuer: Match::Exact(issuer.into()),
        };
        verify(
            &bundle,
            Artifact::Bytes(ARTIFACT),
            &policy,
            &root,
            Utc::now(),
        )
    }

    #[test]
    fn a_private_instance_signs_what_the_verifier_accepts() {
        let sigstore = Instance::new("log.test/1");
        let bundle = sigstore.sign(ARTIFACT, &Signing::at(ID, ISSUER, now()));
        let verified = check(&sigstore, &bundle, Match::Exact(ID.into()), ISSUER).unwrap();
        assert_eq!(verified.identity.unwrap().subjects, vec![ID.to_string()]);
        let pattern =
            Match::regex(r"https://ci\.test/acme/[^/]+/\.github/workflows/release\.yml@.*")
                .unwrap();
        assert!(check(&sigstore, &bundle, pattern, ISSUER).is_ok());
        // By digest too.
        let root = TrustedRoot::from_json(sigstore.trusted_root().as_bytes()).unwrap();
        let digest: [u8; 32] = Sha256::digest(ARTIFACT).into();
        let policy = Policy::Identity {
            subject: Match::Exact(ID.into()),
            issuer: Match::Exact(ISSUER.into()),
        };
        let parsed = Bundle::from_json(bundle.as_bytes()).unwrap();
        assert!(
            verify(
                &parsed,
                Artifact::Digest(digest),
                &policy,
                &root,
                Utc::now()
            )
            .is_ok()
        );
    }

    #[test]
    fn other_identities_issuers_and_artifacts_are_refused() {
        let sigstore = Instance::new("log.test/1");
        let bundle = sigstore.sign(ARTIFACT, &Signing::at(ID, ISSUER, now()));
        let other = Match::Exact(
            "https://ci.test/mallory/x/.github/workflows/release.yml@refs/heads/main".into(),
        );
        assert!(matches!(
            check(&sigstore, &bundle, other, ISSUER),
            Err(Error::Identity(_))
        ));
        assert!(matches!(
            check(
                &sigstore,
                &bundle,
                Match::Exact(ID.into()),
                "https://accounts.test"
            ),
            Err(Error::Identity(_))
        ));
        // A regex that only matches a prefix of the identity does not match it.
        let prefix = Match::regex("https://ci.test/acme").unwrap();
        assert!(matches!(
            check(&sigstore, &bundle, prefix, ISSUER),
            Err(Error::Identity(_))
        ));
    }

    #[test]
    fn expired_certificates_and_untrusted_instances_are_refused() {
        let sigstore = Instance::new("log.test/1");
        // Logged an hour after the certificate expired.
        let mut late = Signing::at(ID, ISSUER, now());
        late.not_before = now() - 7200;
        late.not_after = now() - 3600;
        let bundle = sigstore.sign(ARTIFACT, &late);
        assert!(matches!(
            check(&sigstore, &bundle, Match::Exact(ID.into()), ISSUER),
            Err(Error::Certificate(_))
        ));
        // Signed by another instance: its CA, CT log and Rekor log are not trusted here.
        let stranger = Instance::new("log.test/1");
        let bundle = stranger.sign(ARTIFACT, &Signing::at(ID, ISSUER, now()));
        assert!(check(&sigstore, &bundle, Match::Exact(ID.into()), ISSUER).is_err());
    }

    #[test]
    fn missing_or_tampered_log_entries_are_refused() {
        let sigstore = Instance::new("log.test/1");
        let good = sigstore.sign(ARTIFACT, &Signing::at(ID, ISSUER, now()));
        // No log entry at all.
        let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
        json["verificationMaterial"]["tlogEntries"] = serde_json::json!([]);
        assert!(matches!(
            check(
                &sigstore,
                &json.to_string(),
                Match::Exact(ID.into()),
                ISSUER
            ),
            Err(Error::Bundle(_))
        ));
        // The entry's body changed after the log signed it.
        let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
        let entry = &mut json["verificationMaterial"]["tlogEntries"][0];
        let body = STANDARD
            .decode(entry["canonicalizedBody"].as_str().unwrap())
            .unwrap();
        let tampered = String::from_utf8(body).unwrap().replacen('{', "{ ", 1);
        entry["canonicalizedBody"] = STANDARD.encode(tampered).into();
        let err = check(
            &sigstore,
            &json.to_string(),
            Match::Exact(ID.into()),
            ISSUER,
        )
        .unwrap_err();
        assert!(err.to_string().contains("signed entry timestamp"), "{err}");
        // A log entry, properly signed, for another artifact.
        let mut wrong = Signing::at(ID, ISSUER, now());
        let other = sigstore.sign(b"other", &Signing::at(ID, ISSUER, now()));
        let other: serde_json::Value = serde_json::from_str(&other).unwrap();
        let other_body = other["verificationMaterial"]["tlogEntries"][0]["canonicalizedBody"]
            .as_str()
            .unwrap();
        wrong.body_override =
            Some(String::from_utf8(STANDARD.decode(other_body).unwrap()).unwrap());
        let bundle = sigstore.sign(ARTIFACT, &wrong);
        assert!(matches!(
            check(&sigstore, &bundle, Match::Exact(ID.into()), ISSUER),
            Err(Error::Tlog(_))
        ));
    }

    const IMAGE: &str = "sha256:a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf";

    fn signers() -> Vec<oci::Signer> {
        vec![
            oci::Signer {
                name: "other".into(),
                subject: Match::Exact("https://ci.test/other".into()),
                issuer: Match::Exact(ISSUER.into()),
            },
            oci::Signer {
                name: "release".into(),
                subject: Match::Exact(ID.into()),
                issuer: Match::Exact(ISSUER.into()),
            },
        ]
    }

    #[test]
    fn keyless_image_signatures_in_both_oci_layouts() {
        let sigstore = Instance::new("log.test/1");
        let root = TrustedRoot::from_json(sigstore.trusted_root().as_bytes()).unwrap();
        let statement = |predicate: &str, digest: &str| {
            serde_json::to_vec(&serde_json::json!({
                "_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": "r/x", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
                "predicateType": predicate,
                "predicate": {}
            }))
            .unwrap()
        };
        // The referrer bundle: only the named identity counts.
        let sign = crate::signing::bundle::SIGN_PREDICATE_TYPE;
        let bundle = sigstore.sign_dsse(&statement(sign, IMAGE), &Signing::at(ID, ISSUER, now()));
        let mut report = crate::signing::SignatureCheck::default();
        oci::check_bundle(bundle.as_bytes(), IMAGE, &signers(), &root, &mut report);
        assert_eq!(
            report.keys(),
            vec!["release".to_string()],
            "{:?}",
            report.rejected
        );
        // Another predicate is an attestation, not a signature: kept as one, counted as none.
        let slsa = "https://slsa.dev/provenance/v1";
        let bundle = sigstore.sign_dsse(&statement(slsa, IMAGE), &Signing::at(ID, ISSUER, now()));
        let mut report = crate::signing::SignatureCheck::default();
        oci::check_bundle(bundle.as_bytes(), IMAGE, &signers(), &root, &mut report);
        assert!(report.verified.is_empty(), "{:?}", report.verified);
        assert_eq!(
            report.attestations.keys().collect::<Vec<_>>(),
            vec![slsa],
            "{:?}",
            report.rejected
        );
        // A statement about another digest is refused, as a signature or as an attestation.
        let other_image = format!("sha256:{}", "0".repeat(64));
        for predicate in [sign, slsa] {
            let bundle = sigstore.sign_dsse(
                &statement(predicate, &other_image),
                &Signing::at(ID, ISSUER, now()),
            );
            let mut report = crate::signing::SignatureCheck::default();
            oci::check_bundle(bundle.as_bytes(), IMAGE, &signers(), &root, &mut report);
            assert!(report.verified.is_empty() && !report.rejected.is_empty());
            assert!(report.attestations.is_empty());
        }

        // The .sig layer: a simple-signing payload naming the image.
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {"identity": {"docker-reference": "r/x"},
                         "image": {"docker-manifest-digest": IMAGE},
                         "type": "cosign container image signature"},
            "optional": null
        }))
        .unwrap();
        let (signature, annotations) =
            sigstore.sign_cosign(&payload, &Signing::at(ID, ISSUER, now()));
        let signature = STANDARD.decode(signature).unwrap();
        let bundle = oci::layer_bundle(&payload, &signature, &annotations).unwrap();
        let policy = Policy::Identity {
            subject: Match::Exact(ID.into()),
            issuer: Match::Exact(ISSUER.into()),
        };
        assert!(
            verify(
                &bundle,
                Artifact::Bytes(&payload),
                &policy,
                &root,
                Utc::now()
            )
            .is_ok()
        );
        let stranger = Instance::new("log.test/1");
        let elsewhere = TrustedRoot::from_json(stranger.trusted_root().as_bytes()).unwrap();
        assert!(
            verify(
                &bundle,
                Artifact::Bytes(&payload),
                &policy,
                &elsewhere,
                Utc::now()
            )
            .is_err()
        );
    }
}
