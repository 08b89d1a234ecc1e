//! Key pairs in cosign's format: the private key encrypted with a password (scrypt +
//! secretbox, PEM label `ENCRYPTED SIGSTORE PRIVATE KEY`), the public key as PEM SPKI.

use sigstore::crypto::signing_key::SigStoreKeyPair;
use sigstore::crypto::{CosignVerificationKey, SigStoreSigner, Signature, SigningScheme};

/// Key type of a new key pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    /// ECDSA on P-256 with SHA-256 (cosign's default).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
    /// RSA 3072 with PKCS#1 v1.5 and SHA-256.
    Rsa,
}

impl Algorithm {
    fn scheme(self) -> SigningScheme {
        match self {
            Algorithm::EcdsaP256 => SigningScheme::ECDSA_P256_SHA256_ASN1,
            Algorithm::Ed25519 => SigningScheme::ED25519,
            Algorithm::Rsa => SigningScheme::RSA_PKCS1_SHA256(3072),
        }
    }
}

/// A key problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(pub String);

fn key_error(context: &str) -> impl FnOnce(sigstore::errors::SigstoreError) -> KeyError + '_ {
    move |e| KeyError(format!("{context}: {e}"))
}

/// A new key pair: (encrypted private key PEM, public key PEM).
pub fn generate(algorithm: Algorithm, password: &[u8]) -> Result<(String, String), KeyError> {
    let signer = algorithm
        .scheme()
        .create_signer()
        .map_err(key_error("generating the key"))?;
    let pair = signer
        .to_sigstore_keypair()
        .map_err(key_error("exporting the key"))?;
    let private = pair
        .private_key_to_encrypted_pem(password)
        .map_err(key_error("encrypting the private key"))?;
    let public = pair
        .public_key_to_pem()
        .map_err(key_error("encoding the public key"))?;
    Ok((private.to_string(), public))
}

/// Loads a private key: cosign's encrypted PEM (with `password`) or an unencrypted PKCS#8 PEM.
pub fn signer(pem: &[u8], password: &[u8]) -> Result<SigStoreSigner, KeyError> {
    let pair = if std::str::from_utf8(pem).is_ok_and(|t| t.contains("ENCRYPTED")) {
        SigStoreKeyPair::from_encrypted_pem(pem, password).map_err(key_error(
            "decrypting the private key (wrong COSIGN_PASSWORD?)",
        ))?
    } else {
        SigStoreKeyPair::from_pem(pem).map_err(key_error("reading the private key"))?
    };
    // The pair does not say which scheme it signs with; the first that fits its type does.
    [
        SigningScheme::ECDSA_P256_SHA256_ASN1,
        SigningScheme::ECDSA_P384_SHA384_ASN1,
        SigningScheme::ED25519,
        SigningScheme::RSA_PKCS1_SHA256(0),
    ]
    .iter()
    .find_map(|scheme| pair.to_sigstore_signer(scheme).ok())
    .ok_or_else(|| KeyError(format!("unsupported private key type: {pair}")))
}

/// A named public key that may verify signatures.
#[derive(Clone)]
pub struct PublicKey {
    /// The name trust rules and reports use.
    pub name: String,
    key: CosignVerificationKey,
    /// The key material's identity (a digest of its PEM body): one key listed under two names
    /// is one signer.
    fingerprint: String,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.name)
    }
}

impl PublicKey {
    /// Reads a PEM public key (SPKI); its type decides the algorithm, so a key can never be
    /// used with another algorithm than its own.
    pub fn from_pem(name: &str, pem: &[u8]) -> Result<Self, KeyError> {
        let key = CosignVerificationKey::try_from_pem(pem)
            .map_err(|e| KeyError(format!("key {name}: {e}")))?;
        let fingerprint = match ::pem::parse(pem) {
            Ok(block) => crate::oci::sha256_digest(block.contents()),
            Err(_) => crate::oci::sha256_digest(pem),
        };
        Ok(Self {
            name: name.to_string(),
            key,
            fingerprint: format!("key {fingerprint}"),
        })
    }

    /// The key of a signer.
    pub fn of_signer(name: &str, signer: &SigStoreSigner) -> Result<Self, KeyError> {
        let key = signer
            .to_verification_key()
            .map_err(key_error("deriving the public key"))?;
        Ok(Self {
            name: name.to_string(),
            key,
            fingerprint: format!("signer {name}"),
        })
    }

    /// Who signs with this key, for counting distinct signers.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether `signature` (raw bytes) over `message` verifies with this key.
    pub fn verifies(&self, signature: &[u8], message: &[u8]) -> bool {
        self.key
            .verify_signature(Signature::Raw(signature), message)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_per_algorithm() {
        for algorithm in [Algorithm::EcdsaP256, Algorithm::Ed25519, Algorithm::Rsa] {
            let (private, public) = generate(algorithm, b"pw").unwrap_or_default();
            assert!(
                private.contains("ENCRYPTED SIGSTORE PRIVATE KEY"),
                "{algorithm:?}"
            );
            let signer = signer(private.as_bytes(), b"pw");
            assert!(signer.is_ok(), "{algorithm:?}");
            let Ok(signer) = signer else { return };
            let Ok(signature) = signer.sign(b"payload") else {
                panic!("{algorithm:?}: signing failed")
            };
            let Ok(key) = PublicKey::from_pem("k", public.as_bytes()) else {
                panic!("{algorithm:?}: public key unreadable")
            };
            assert!(key.verifies(&signature, b"payload"), "{algorithm:?}");
            assert!(!key.verifies(&signature, b"other payload"), "{algorithm:?}");
            assert!(
                super::signer(private.as_bytes(), b"wrong").is_err(),
                "{algorithm:?}: wrong password accepted"
            );
        }
    }

    #[test]
    fn keys_never_verify_across_types() {
        let (_, ed) = generate(Algorithm::Ed25519, b"").unwrap_or_default();
        let (ec_private, _) = generate(Algorithm::EcdsaP256, b"").unwrap_or_default();
        let Ok(ec) = signer(ec_private.as_bytes(), b"") else {
            panic!("ecdsa key")
        };
        let Ok(signature) = ec.sign(b"m") else {
            panic!("sign")
        };
        let Ok(ed) = PublicKey::from_pem("ed", ed.as_bytes()) else {
            panic!("ed key")
        };
        assert!(!ed.verifies(&signature, b"m"));
        assert!(PublicKey::from_pem("bad", b"not a pem").is_err());
    }
}
