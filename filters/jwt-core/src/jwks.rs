//! JSON Web Key Sets: parsing, key selection by `kid`/`alg`/key type, signature verification.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use crate::Status;
use crate::token::{B64URL, Jwt, parse_alg};

/// The type of a key, which fixes the algorithms it may verify. Matching on it is what stops
/// algorithm confusion (an HS256 token "signed" with an RSA public key finds no `oct` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `kty: RSA` — RS256/384/512, PS256/384/512.
    Rsa,
    /// `kty: EC, crv: P-256` — ES256.
    EcP256,
    /// `kty: EC, crv: P-384` — ES384.
    EcP384,
    /// `kty: OKP, crv: Ed25519` — EdDSA.
    Ed25519,
    /// `kty: oct` — HS256/384/512.
    Oct,
}

impl KeyType {
    /// Whether a key of this type may verify `alg`.
    pub fn accepts(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyType::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyType::EcP256, ES256)
                | (KeyType::EcP384, ES384)
                | (KeyType::Ed25519, EdDSA)
                | (KeyType::Oct, HS256 | HS384 | HS512)
        )
    }
}

/// Verifies signatures outside the Wasm sandbox when the host can (Envoy's `verify_signature`
/// foreign function runs BoringSSL natively, far faster than RSA in Wasm).
pub trait SignatureHost {
    /// Verifies `signature` over `message` with the key `spki_der` (DER SubjectPublicKeyInfo)
    /// and the digest `hash` (`sha256`, `sha384`, `sha512`). For ECDSA the signature is DER.
    /// `None` when the host cannot do it; the caller then verifies in Rust.
    fn verify(&self, hash: &str, spki_der: &[u8], signature: &[u8], message: &[u8])
    -> Option<bool>;
}

/// A host that verifies nothing: every signature is checked in Rust.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHost;

impl SignatureHost for NoHost {
    fn verify(&self, _: &str, _: &[u8], _: &[u8], _: &[u8]) -> Option<bool> {
        None
    }
}

/// One usable key.
#[derive(Clone)]
pub struct Key {
    /// `kid`.
    pub kid: Option<String>,
    /// `alg`, when the JWK pins one.
    pub alg: Option<Algorithm>,
    /// Key type.
    pub kty: KeyType,
    key: DecodingKey,
    /// The key as DER SubjectPublicKeyInfo, for a [`SignatureHost`] (RSA and EC keys).
    spki_der: Option<Vec<u8>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("kty", &self.kty)
            .finish_non_exhaustive()
    }
}

/// A parsed key set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    skipped: Vec<String>,
}

/// Why a JWKS document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array.
    #[error("JWKS is not a JSON object with a \"keys\" array: {0}")]
    NotJwks(String),
    /// A key is malformed.
    #[error("JWKS keys[{index}]: {reason}")]
    BadKey {
        /// Position in `keys`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// No key can verify anything this filter supports.
    #[error("JWKS has no usable signing keys{0}")]
    NoValidKeys(String),
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default, rename = "use")]
    key_use: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
    #[serde(default)]
    k: Option<String>,
}

/// A base64url member a key type requires.
fn required(
    field: &Option<String>,
    name: &str,
    kty: &str,
    index: usize,
) -> Result<String, JwksError> {
    let bad = |reason: String| JwksError::BadKey { index, reason };
    let value = field
        .clone()
        .ok_or_else(|| bad(format!("kty {kty} needs \"{name}\"")))?;
    B64URL
        .decode(&value)
        .map_err(|e| bad(format!("\"{name}\" is not base64url: {e}")))?;
    Ok(value)
}

/// The largest JWKS document read (fetched, shared between workers, or in the configuration).
/// Issuers publish a few keys, a few KiB; this bounds what a hostile endpoint can make each
/// worker parse and hold.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

impl KeySet {
    /// Parses a fetched JWKS document. Keys of a type or curve this filter cannot verify (e.g.
    /// P-521, encryption keys) are skipped and listed by [`KeySet::skipped`]; a malformed key
    /// refuses the whole document, since a half-read key set hides mistakes; a document with no
    /// usable key is refused, so the keys held before keep serving.
    pub fn parse(json: &str) -> Result<KeySet, JwksError> {
        let set = Self::parse_entries(json)?;
        if set.keys.is_empty() {
            let detail = if set.skipped.is_empty() {
                String::new()
            } else {
                format!(" (skipped: {})", set.skipped.join("; "))
            };
            return Err(JwksError::NoValidKeys(detail));
        }
        Ok(set)
    }

    /// Parses a JWKS from the configuration as Envoy's `jwt_authn` accepts it: a document whose
    /// keys this filter cannot use (only `use: enc` keys, say) loads, with no key, so its
    /// provider's tokens are refused; a document without any key is refused.
    pub fn parse_local(json: &str) -> Result<KeySet, JwksError> {
        let set = Self::parse_entries(json)?;
        if set.keys.is_empty() && set.skipped.is_empty() {
            return Err(JwksError::NoValidKeys(String::new()));
        }
        Ok(set)
    }

    fn parse_entries(json: &str) -> Result<KeySet, JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::NotJwks(format!(
                "{} bytes, more than the {MAX_JWKS_BYTES} allowed",
                json.len()
            )));
        }
        let raw: RawJwks =
            serde_json::from_str(json).map_err(|e| JwksError::NotJwks(e.to_string()))?;
        let mut set = KeySet::default();
        for (index, value) in raw.keys.into_iter().enumerate() {
            let bad = |reason: String| JwksError::BadKey { index, reason };
            let jwk: RawJwk = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
            if jwk.key_use.as_deref() == Some("enc") {
                set.skipped.push(format!("keys[{index}]: use=enc"));
                continue;
            }
            let alg = match jwk.alg.as_deref() {
                None => None,
                Some(name) => match parse_alg(name) {
                    Some(alg) => Some(alg),
                    None => {
                        set.skipped
                            .push(format!("keys[{index}]: alg {name} not supported"));
                        continue;
                    }
                },
            };
            let need = |field: &Option<String>, name: &str| required(field, name, &jwk.kty, index);
            let (kty, key) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
                ("RSA", _) => {
                    let (n, e) = (need(&jwk.n, "n")?, need(&jwk.e, "e")?);
                    let key =
                        DecodingKey::from_rsa_components(&n, &e).map_err(|e| bad(e.to_string()))?;
                    (KeyType::Rsa, key)
                }
                ("EC", Some(crv @ ("P-256" | "P-384"))) => {
                    let (x, y) = (need(&jwk.x, "x")?, need(&jwk.y, "y")?);
                    let key =
                        DecodingKey::from_ec_components(&x, &y).map_err(|e| bad(e.to_string()))?;
                    let kty = if crv == "P-256" {
                        KeyType::EcP256
                    } else {
                        KeyType::EcP384
                    };
                    (kty, key)
                }
                ("OKP", Some("Ed25519")) => {
                    let x = need(&jwk.x, "x")?;
                    // The verifier slices 32 bytes out of the key; a shorter one must not get there.
                    if B64URL.decode(&x).map(|b| b.len()).unwrap_or(0) != 32 {
                        return Err(bad("Ed25519 \"x\" must be 32 bytes".into()));
                    }
                    let key =
                        DecodingKey::from_ed_components(&x).map_err(|e| bad(e.to_string()))?;
                    (KeyType::Ed25519, key)
                }
                ("oct", _) => {
                    let secret = B64URL
                        .decode(need(&jwk.k, "k")?.as_str())
                        .map_err(|e| bad(e.to_string()))?;
                    (KeyType::Oct, DecodingKey::from_secret(&secret))
                }
                ("EC" | "OKP", crv) => {
                    set.skipped.push(format!(
                        "keys[{index}]: kty {} crv {} not supported",
                        jwk.kty,
                        crv.unwrap_or("(none)")
                    ));
                    continue;
                }
                (other, _) => return Err(bad(format!("unknown kty {other:?}"))),
            };
            if let Some(alg) = alg
                && !kty.accepts(alg)
            {
                return Err(bad(format!("alg {alg:?} does not fit kty {kty:?}")));
            }
            let spki_der = spki_der(&jwk, kty);
            set.keys.push(Key {
                kid: jwk.kid,
                alg,
                kty,
                key,
                spki_der,
            });
        }
        Ok(set)
    }

    /// The keys.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Keys that were present but cannot be used, with why.
    pub fn skipped(&self) -> &[String] {
        &self.skipped
    }

    /// Whether any key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }

    /// Verifies the token's signature with the keys that fit it, as Envoy selects them: a key
    /// whose `kid` differs from the token's is skipped (keys without `kid` are tried), a key whose
    /// pinned `alg` differs is skipped, a key whose type cannot verify the algorithm is skipped.
    pub fn verify(&self, jwt: &Jwt) -> Result<(), Status> {
        self.verify_with(jwt, &NoHost)
    }

    /// [`KeySet::verify`], letting `host` check RS256/384/512 and ES256/384 signatures natively.
    pub fn verify_with(&self, jwt: &Jwt, host: &dyn SignatureHost) -> Result<(), Status> {
        let mut matched = false;
        for key in &self.keys {
            if let (Some(want), Some(have)) = (&jwt.kid, &key.kid)
                && want != have
            {
                continue;
            }
            if key.alg.is_some_and(|alg| alg != jwt.alg) || !key.kty.accepts(jwt.alg) {
                continue;
            }
            matched = true;
            let native = key
                .spki_der
                .as_deref()
                .and_then(|spki| host_verify(host, jwt, spki));
            let ok = native.unwrap_or_else(|| {
                jsonwebtoken::crypto::verify(
                    jwt.signature_b64(),
                    jwt.signing_input(),
                    &key.key,
                    jwt.alg,
                )
                .unwrap_or(false)
            });
            if ok {
                return Ok(());
            }
        }
        Err(if matched {
            Status::JwtVerificationFail
        } else {
            Status::JwksKidAlgMismatch
        })
    }
}

/// Asks the host to verify, for the algorithms a plain digest-and-verify covers (PKCS#1 v1.5 and
/// ECDSA); PSS, EdDSA and HMAC stay in Rust.
fn host_verify(host: &dyn SignatureHost, jwt: &Jwt, spki: &[u8]) -> Option<bool> {
    let hash = match jwt.alg {
        Algorithm::RS256 | Algorithm::ES256 => "sha256",
        Algorithm::RS384 | Algorithm::ES384 => "sha384",
        Algorithm::RS512 => "sha512",
        _ => return None,
    };
    let raw = B64URL.decode(jwt.signature_b64()).ok()?;
    let signature = match jwt.alg {
        // JWS carries r||s; the host's ECDSA wants an ASN.1 DER signature.
        Algorithm::ES256 => match p256::ecdsa::Signature::from_slice(&raw) {
            Ok(sig) => sig.to_der().as_bytes().to_vec(),
            Err(_) => return Some(false),
        },
        Algorithm::ES384 => match p384::ecdsa::Signature::from_slice(&raw) {
            Ok(sig) => sig.to_der().as_bytes().to_vec(),
            Err(_) => return Some(false),
        },
        _ => raw,
    };
    host.verify(hash, spki, &signature, jwt.signing_input())
}

/// The key as DER SubjectPublicKeyInfo (RSA and EC keys only).
fn spki_der(jwk: &RawJwk, kty: KeyType) -> Option<Vec<u8>> {
    use p256::pkcs8::EncodePublicKey as _;
    let bytes = |field: &Option<String>| field.as_deref().and_then(|v| B64URL.decode(v).ok());
    match kty {
        KeyType::Rsa => {
            let n = rsa::BigUint::from_bytes_be(&bytes(&jwk.n)?);
            let e = rsa::BigUint::from_bytes_be(&bytes(&jwk.e)?);
            let key = rsa::RsaPublicKey::new(n, e).ok()?;
            let der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key).ok()?;
            Some(der.as_bytes().to_vec())
        }
        KeyType::EcP256 | KeyType::EcP384 => {
            let mut point = vec![4u8];
            point.extend(bytes(&jwk.x)?);
            point.extend(bytes(&jwk.y)?);
            let der = if kty == KeyType::EcP256 {
                p256::PublicKey::from_sec1_bytes(&point)
                    .ok()?
                    .to_public_key_der()
                    .ok()?
            } else {
                p384::PublicKey::from_sec1_bytes(&point)
                    .ok()?
                    .to_public_key_der()
                    .ok()?
            };
            Some(der.as_bytes().to_vec())
        }
        KeyType::Ed25519 | KeyType::Oct => None,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::json;

    use super::*;
    use crate::mint::{self, SigningKey};

    /// A host that verifies what it is handed with RustCrypto from the DER forms, proving the
    /// SubjectPublicKeyInfo and signature encodings a native verifier receives.
    #[derive(Default)]
    struct DerHost {
        calls: RefCell<Vec<String>>,
    }

    impl SignatureHost for DerHost {
        fn verify(&self, hash: &str, spki: &[u8], sig: &[u8], msg: &[u8]) -> Option<bool> {
            use p256::pkcs8::DecodePublicKey as _;
            use rsa::signature::Verifier as _;
            self.calls.borrow_mut().push(hash.to_string());
            if let Ok(key) = rsa::RsaPublicKey::from_public_key_der(spki) {
                let key = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key);
                let sig = rsa::pkcs1v15::Signature::try_from(sig).ok()?;
                return Some(key.verify(msg, &sig).is_ok());
            }
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(spki).ok()?;
            let sig = p256::ecdsa::Signature::from_der(sig).ok()?;
            Some(key.verify(msg, &sig).is_ok())
        }
    }

    #[test]
    fn host_gets_spki_and_der_signatures() {
        let rsa = SigningKey::rsa("r", Algorithm::RS256);
        let ec = SigningKey::es256("e");
        let ed = SigningKey::ed25519("d");
        let set = KeySet::parse(&mint::jwks(&[&rsa, &ec, &ed])).unwrap();
        let host = DerHost::default();
        let claims = json!({"sub": "x"});
        for key in [&rsa, &ec, &ed] {
            let good = Jwt::parse(&key.sign(&claims)).unwrap();
            assert_eq!(set.verify_with(&good, &host), Ok(()), "{:?}", key.alg);
            let mut bad = key.sign(&claims);
            let cut = bad.len() - 4;
            bad.replace_range(cut.., "AAAA");
            let bad = Jwt::parse(&bad).unwrap();
            assert_eq!(
                set.verify_with(&bad, &host),
                Err(Status::JwtVerificationFail)
            );
        }
        // RS256 and ES256 went to the host (twice each); EdDSA stayed in Rust.
        assert_eq!(*host.calls.borrow(), ["sha256"; 4]);
    }

    #[test]
    fn malformed_keys_are_refused_with_their_index() {
        let bad = [
            (r#"{"keys":[{"kty":"RSA","n":"AQAB"}]}"#, "keys[0]"),
            (
                r#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AQAB"}]}"#,
                "32 bytes",
            ),
            (
                r#"{"keys":[{"kty":"EC","crv":"P-256","x":"!!","y":"AQAB"}]}"#,
                "base64url",
            ),
            (r#"{"keys":[{"kty":"XYZ"}]}"#, "unknown kty"),
            (
                r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"RS256"}]}"#,
                "does not fit",
            ),
            (r#"{"keys":[]}"#, "no usable"),
            (r#"[]"#, "not a JSON object"),
        ];
        for (jwks, needle) in bad {
            let err = KeySet::parse(jwks).unwrap_err().to_string();
            assert!(err.contains(needle), "{jwks}: {err}");
        }
        let skipped = KeySet::parse(
            r#"{"keys":[{"kty":"EC","crv":"P-521","x":"AQAB","y":"AQAB"},{"kty":"oct","k":"c2VjcmV0"}]}"#,
        )
        .unwrap();
        assert_eq!(skipped.keys().len(), 1);
        assert_eq!(skipped.skipped().len(), 1);
    }

    #[test]
    fn a_configured_set_without_usable_keys_loads_as_envoy_loads_it() {
        let rsa = SigningKey::rsa("e1", Algorithm::RS256);
        let mut jwk = rsa.jwk().clone();
        jwk["use"] = json!("enc");
        let only_enc = json!({ "keys": [jwk] }).to_string();
        assert!(
            KeySet::parse(&only_enc).is_err(),
            "a fetched one is refused"
        );
        let set = KeySet::parse_local(&only_enc).unwrap();
        assert!(set.keys().is_empty());
        assert_eq!(set.skipped(), ["keys[0]: use=enc"]);
        let token = Jwt::parse(&rsa.sign(&json!({"sub": "x"}))).unwrap();
        assert_eq!(set.verify(&token), Err(Status::JwksKidAlgMismatch));
        // No key at all is refused, as Envoy refuses it.
        assert!(KeySet::parse_local(r#"{"keys":[]}"#).is_err());
        let huge = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES));
        assert!(
            KeySet::parse_local(&huge)
                .unwrap_err()
                .to_string()
                .contains("allowed")
        );
    }
}
