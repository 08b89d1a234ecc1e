//! Public keys as Sigstore hands them out (DER SubjectPublicKeyInfo) and the signature checks
//! made with them, through aws-lc-rs (the backend rustls and webpki already use here).
//!
//! A key's type fixes its algorithm: ECDSA P-256 with SHA-256, P-384 with SHA-384, P-521 with
//! SHA-512, Ed25519, and RSA PKCS#1 v1.5 with SHA-256 — the pairs Sigstore's key details name.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{
    ID_EC_PUBLIC_KEY, RSA_ENCRYPTION, SECP_256_R_1, SECP_384_R_1, SECP_521_R_1,
};
use const_oid::db::rfc8410::ID_ED_25519;
use der::Decode;
use spki::SubjectPublicKeyInfoRef;

use super::{Error, Result};

/// The algorithm a key signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    P256,
    P384,
    P521,
    Ed25519,
    Rsa,
}

/// A verifying key read from DER SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kind: Kind,
    /// The subjectPublicKey bits (a point, an Ed25519 key or a PKCS#1 RSA key).
    raw: Vec<u8>,
    /// The whole SPKI, for comparing keys and hashing them into key ids.
    spki: Vec<u8>,
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo; unsupported algorithms and curves are an error.
    pub fn from_spki(der: &[u8]) -> Result<Self> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| Error::Key(format!("unreadable public key: {e}")))?;
        let kind = match spki.algorithm.oid {
            ID_EC_PUBLIC_KEY => {
                let curve: ObjectIdentifier = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .ok_or_else(|| Error::Key("EC key without a curve".into()))?
                    .decode_as()
                    .map_err(|e| Error::Key(format!("EC curve: {e}")))?;
                match curve {
                    SECP_256_R_1 => Kind::P256,
                    SECP_384_R_1 => Kind::P384,
                    SECP_521_R_1 => Kind::P521,
                    other => return Err(Error::Key(format!("unsupported EC curve {other}"))),
                }
            }
            ID_ED_25519 => Kind::Ed25519,
            RSA_ENCRYPTION => Kind::Rsa,
            other => return Err(Error::Key(format!("unsupported key algorithm {other}"))),
        };
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| Error::Key("public key bits not octet aligned".into()))?
            .to_vec();
        Ok(Self {
            kind,
            raw,
            spki: der.to_vec(),
        })
    }

    /// Reads a PEM `PUBLIC KEY`.
    pub fn from_pem(pem_text: &[u8]) -> Result<Self> {
        let block = pem::parse(pem_text).map_err(|e| Error::Key(format!("unreadable PEM: {e}")))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(Error::Key(format!(
                "PEM holds {}, not PUBLIC KEY",
                block.tag()
            )));
        }
        Self::from_spki(block.contents())
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }

    fn algorithm(&self) -> &'static dyn VerificationAlgorithm {
        match self.kind {
            Kind::P256 => &signature::ECDSA_P256_SHA256_ASN1,
            Kind::P384 => &signature::ECDSA_P384_SHA384_ASN1,
            Kind::P521 => &signature::ECDSA_P521_SHA512_ASN1,
            Kind::Ed25519 => &signature::ED25519,
            Kind::Rsa => &signature::RSA_PKCS1_2048_8192_SHA256,
        }
    }

    /// Whether `sig` signs `message` under this key.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<()> {
        UnparsedPublicKey::new(self.algorithm(), &self.raw)
            .verify(message, sig)
            .map_err(|_| Error::Signature)
    }

    /// Whether `sig` signs the message whose SHA-256 digest is `sha256` (ECDSA P-256 and RSA;
    /// Ed25519 and the other curves sign the message itself or another hash of it).
    pub fn verify_sha256_digest(&self, sha256: &[u8; 32], sig: &[u8]) -> Result<()> {
        if !matches!(self.kind, Kind::P256 | Kind::Rsa) {
            return Err(Error::Key(
                "this key type cannot verify a signature from a SHA-256 digest alone; give the artifact".into(),
            ));
        }
        let digest = digest::Digest::import_less_safe(sha256, &digest::SHA256)
            .map_err(|_| Error::Signature)?;
        UnparsedPublicKey::new(self.algorithm(), &self.raw)
            .verify_digest(&digest, sig)
            .map_err(|_| Error::Signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair};

    #[test]
    fn p256_verifies_message_and_digest_and_rejects_others() {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
                .unwrap();
        let spki = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            pair.public_key(),
        )
        .unwrap();
        let key = PublicKey::from_spki(spki.as_ref()).unwrap();
        let sig = pair.sign(&rng, b"hello").unwrap();
        assert!(key.verify(b"hello", sig.as_ref()).is_ok());
        assert!(key.verify(b"hellO", sig.as_ref()).is_err());
        let d: [u8; 32] = digest::digest(&digest::SHA256, b"hello")
            .as_ref()
            .try_into()
            .unwrap();
        assert!(key.verify_sha256_digest(&d, sig.as_ref()).is_ok());
        let other: [u8; 32] = digest::digest(&digest::SHA256, b"other")
            .as_ref()
            .try_into()
            .unwrap();
        assert!(key.verify_sha256_digest(&other, sig.as_ref()).is_err());
    }
}
