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
    /// Whether a skipped entry is one `jwt_verify_lib` loads (an encryption key, a curve or
    /// algorithm this filter does not verify): Envoy then takes the document, so this does too.
    native_loads_skipped: bool,
}

/// Why a JWKS document was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// Not a JSON object with a `keys` array.
    #[error("JWKS is not a JSON object with a \"keys\" array: {0}")]
    NotJwks(String),
    /// No key can verify anything this filter supports.
    #[error("JWKS has no usable signing keys{0}")]
    NoValidKeys(String),
}

#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<serde_json::Value>,
}

/// The members of one JWK as `jwt_verify_lib` reads them: a member of the wrong JSON type is
/// as good as absent (a numeric `kid` makes a key without `kid`, tried for every token).
struct RawJwk {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    key_use: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
    k: Option<String>,
}

impl RawJwk {
    /// `None` for an entry `jwt_verify_lib` skips before looking at it (not an object, no
    /// string `kty`).
    fn read(value: &serde_json::Value) -> Option<RawJwk> {
        let object = value.as_object()?;
        let text = |name: &str| object.get(name).and_then(|v| v.as_str()).map(String::from);
        Some(RawJwk {
            kty: text("kty")?,
            kid: text("kid"),
            alg: text("alg"),
            key_use: text("use"),
            crv: text("crv"),
            n: text("n"),
            e: text("e"),
            x: text("x"),
            y: text("y"),
            k: text("k"),
        })
    }
}

/// Why an entry is not used, and whether Envoy would load it all the same.
struct Skip {
    reason: String,
    native_loads: bool,
}

impl From<String> for Skip {
    /// An entry `jwt_verify_lib` refuses too.
    fn from(reason: String) -> Skip {
        Skip {
            reason,
            native_loads: false,
        }
    }
}

/// A base64url member a key type requires, re-encoded without padding (Envoy's
/// `WebSafeBase64Unescape` accepts `=` padding; the key constructors below do not).
fn required(field: &Option<String>, name: &str, kty: &str) -> Result<String, String> {
    let value = field
        .as_deref()
        .ok_or_else(|| format!("kty {kty} needs \"{name}\""))?;
    let bytes = B64URL
        .decode(value)
        .map_err(|e| format!("\"{name}\" is not base64url: {e}"))?;
    Ok(B64URL.encode(bytes))
}

/// The largest JWKS document read (fetched, shared between workers, or in the configuration).
/// Issuers publish a few keys, a few KiB; this bounds what a hostile endpoint can make each
/// worker parse and hold.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

impl KeySet {
    /// Parses a JWKS document (fetched, shared or configured) as `jwt_verify_lib` does: an entry
    /// it cannot use (not an object, malformed) is skipped, never the whole document, and listed
    /// by [`KeySet::skipped`] with the keys this filter cannot verify (a type or curve it does
    /// not support, an encryption key). A document in which Envoy finds no valid key is refused
    /// (a configured one fails the configuration, a fetched one is not installed); one in which
    /// Envoy finds keys loads even if none is usable here, so a rotation that leaves only such
    /// keys still retires the old ones, and that provider's tokens are refused.
    pub fn parse(json: &str) -> Result<KeySet, JwksError> {
        let set = Self::parse_entries(json)?;
        if set.keys.is_empty() && !set.native_loads_skipped {
            let detail = if set.skipped.is_empty() {
                String::new()
            } else {
                format!(" (skipped: {})", set.skipped.join("; "))
            };
            return Err(JwksError::NoValidKeys(detail));
        }
        Ok(set)
    }

    /// [`KeySet::parse`], for a JWKS from the configuration.
    pub fn parse_local(json: &str) -> Result<KeySet, JwksError> {
        Self::parse(json)
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
        // As `jwt_verify_lib`'s `createFromJwksCore`: an entry it cannot use is skipped, never
        // the whole document, so a rotated set that also carries an odd entry still replaces
        // the old keys.
        for (index, value) in raw.keys.iter().enumerate() {
            let Some(jwk) = RawJwk::read(value) else {
                set.skipped.push(format!(
                    "keys[{index}]: not an object with a string \"kty\""
                ));
                continue;
            };
            match Self::parse_key(&jwk) {
                Ok(key) => set.keys.push(key),
                Err(Skip {
                    reason,
                    native_loads,
                }) => {
                    set.native_loads_skipped |= native_loads;
                    set.skipped.push(format!("keys[{index}]: {reason}"));
                }
            }
        }
        Ok(set)
    }

    /// One key; `Err` says why it is skipped.
    fn parse_key(jwk: &RawJwk) -> Result<Key, Skip> {
        let loaded_by_envoy = |reason: String| Skip {
            reason,
            native_loads: true,
        };
        if jwk.key_use.as_deref() == Some("enc") {
            return Err(loaded_by_envoy("use=enc".into()));
        }
        let alg = match jwk.alg.as_deref() {
            None => None,
            Some("ES512") => return Err(loaded_by_envoy("alg ES512 not supported".into())),
            Some(name) => Some(parse_alg(name).ok_or_else(|| format!("alg {name} not supported"))?),
        };
        let need = |field: &Option<String>, name: &str| required(field, name, &jwk.kty);
        let (kty, key, spki) = match jwk.kty.as_str() {
            "RSA" => {
                let (n, e) = (need(&jwk.n, "n")?, need(&jwk.e, "e")?);
                let key = DecodingKey::from_rsa_components(&n, &e).map_err(|e| e.to_string())?;
                (KeyType::Rsa, key, spki_rsa(&n, &e))
            }
            "EC" => {
                // As `jwt_verify_lib`: no `crv` takes the curve from `alg`, neither means P-256.
                let crv = match (jwk.crv.as_deref(), alg) {
                    (Some(crv), _) => crv,
                    (None, Some(Algorithm::ES384)) => "P-384",
                    (None, _) => "P-256",
                };
                let kty = match crv {
                    "P-256" => KeyType::EcP256,
                    "P-384" => KeyType::EcP384,
                    "P-521" => {
                        return Err(loaded_by_envoy("kty EC crv P-521 not supported".into()));
                    }
                    other => return Err(format!("kty EC crv {other} not supported").into()),
                };
                let (x, y) = (need(&jwk.x, "x")?, need(&jwk.y, "y")?);
                let key = DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?;
                (kty, key, spki_ec(&x, &y, kty))
            }
            "OKP" => {
                if jwk.crv.as_deref() != Some("Ed25519") {
                    return Err(format!(
                        "kty OKP crv {} not supported",
                        jwk.crv.as_deref().unwrap_or("(none)")
                    )
                    .into());
                }
                let x = need(&jwk.x, "x")?;
                // The verifier slices 32 bytes out of the key; a shorter one must not get there.
                if B64URL.decode(&x).map(|b| b.len()).unwrap_or(0) != 32 {
                    return Err(String::from("Ed25519 \"x\" must be 32 bytes").into());
                }
                let key = DecodingKey::from_ed_components(&x).map_err(|e| e.to_string())?;
                (KeyType::Ed25519, key, None)
            }
            "oct" => {
                let secret = B64URL
                    .decode(need(&jwk.k, "k")?.as_str())
                    .map_err(|e| e.to_string())?;
                if secret.is_empty() {
                    return Err(String::from("empty \"k\"").into());
                }
                (KeyType::Oct, DecodingKey::from_secret(&secret), None)
            }
            other => return Err(format!("unknown kty {other:?}").into()),
        };
        if let Some(alg) = alg
            && !kty.accepts(alg)
        {
            return Err(format!("alg {alg:?} does not fit kty {kty:?}").into());
        }
        Ok(Key {
            kid: jwk.kid.clone(),
            alg,
            kty,
            key,
            spki_der: spki,
        })
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

/// An RSA key as DER SubjectPublicKeyInfo, from unpadded base64url `n` and `e`.
fn spki_rsa(n: &str, e: &str) -> Option<Vec<u8>> {
    let n = rsa::BigUint::from_bytes_be(&B64URL.decode(n).ok()?);
    let e = rsa::BigUint::from_bytes_be(&B64URL.decode(e).ok()?);
    let key = rsa::RsaPublicKey::new(n, e).ok()?;
    let der = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key).ok()?;
    Some(der.as_bytes().to_vec())
}

/// An EC key as DER SubjectPublicKeyInfo, from unpadded base64url `x` and `y`.
fn spki_ec(x: &str, y: &str, kty: KeyType) -> Option<Vec<u8>> {
    use p256::pkcs8::EncodePublicKey as _;
    let mut point = vec![4u8];
    point.extend(B64URL.decode(x).ok()?);
    point.extend(B64URL.decode(y).ok()?);
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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use serde_json::{Value, json};

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
    fn entries_jwt_verify_lib_cannot_use_are_skipped_not_fatal() {
        let bad = [
            (r#"{"kty":"RSA","n":"AQAB"}"#, "needs \"e\""),
            (r#"{"kty":"OKP","crv":"Ed25519","x":"AQAB"}"#, "32 bytes"),
            (
                r#"{"kty":"EC","crv":"P-256","x":"!!","y":"AQAB"}"#,
                "base64url",
            ),
            (r#"{"kty":"XYZ"}"#, "unknown kty"),
            (
                r#"{"kty":"oct","k":"c2VjcmV0","alg":"RS256"}"#,
                "does not fit",
            ),
            (
                r#"{"kty":"EC","crv":"P-192","x":"AQAB","y":"AQAB"}"#,
                "P-192",
            ),
            (r#"{"kty":7}"#, "string \"kty\""),
            (r#""a string""#, "not an object"),
        ];
        let good = SigningKey::es256("good");
        for (entry, needle) in bad {
            // Alone, the entry leaves no usable key: the fetched document is refused.
            let alone = format!(r#"{{"keys":[{entry}]}}"#);
            assert!(KeySet::parse(&alone).is_err(), "{alone}");
            // Beside a good key, it is skipped and the good key serves.
            let jwks = json!({"keys": [serde_json::from_str::<Value>(entry).unwrap(), good.jwk()]});
            let set = KeySet::parse(&jwks.to_string()).unwrap();
            assert_eq!(set.keys().len(), 1, "{entry}");
            assert!(
                set.skipped()[0].contains(needle),
                "{entry}: {:?}",
                set.skipped()
            );
            let token = Jwt::parse(&good.sign(&json!({"sub": "x"}))).unwrap();
            assert_eq!(set.verify(&token), Ok(()));
        }
        for (jwks, needle) in [
            (r#"{"keys":[]}"#, "no usable"),
            (r#"[]"#, "not a JSON object"),
        ] {
            let err = KeySet::parse(jwks).unwrap_err().to_string();
            assert!(err.contains(needle), "{jwks}: {err}");
        }
    }

    #[test]
    fn padded_members_and_non_string_kid_load_as_in_envoy() {
        let key = SigningKey::es256("pad");
        let mut jwk = key.jwk().clone();
        for member in ["x", "y"] {
            let padded = format!("{}=", jwk[member].as_str().unwrap());
            jwk[member] = json!(padded);
        }
        let token = Jwt::parse(&key.sign(&json!({"sub": "x"}))).unwrap();
        let set = KeySet::parse(&json!({ "keys": [jwk.clone()] }).to_string()).unwrap();
        assert_eq!(set.verify(&token), Ok(()));
        assert_eq!(set.verify_with(&token, &DerHost::default()), Ok(()));
        // A numeric kid reads as no kid: the key is tried for any token.
        jwk["kid"] = json!(7);
        let set = KeySet::parse(&json!({ "keys": [jwk] }).to_string()).unwrap();
        assert_eq!(set.keys()[0].kid, None);
        assert_eq!(set.verify(&token), Ok(()));
        // An EC key with neither crv nor alg is P-256, as in jwt_verify_lib.
        let mut bare = key.jwk().clone();
        bare.as_object_mut().unwrap().remove("crv");
        bare.as_object_mut().unwrap().remove("alg");
        let set = KeySet::parse(&json!({ "keys": [bare] }).to_string()).unwrap();
        assert_eq!(set.verify(&token), Ok(()));
    }

    #[test]
    fn a_configured_set_without_usable_keys_loads_as_envoy_loads_it() {
        let rsa = SigningKey::rsa("e1", Algorithm::RS256);
        let mut jwk = rsa.jwk().clone();
        jwk["use"] = json!("enc");
        let only_enc = json!({ "keys": [jwk] }).to_string();
        // Fetched, it is installed too: it replaces the keys held before, as in Envoy.
        assert!(KeySet::parse(&only_enc).unwrap().keys().is_empty());
        let set = KeySet::parse_local(&only_enc).unwrap();
        assert!(set.keys().is_empty());
        assert_eq!(set.skipped(), ["keys[0]: use=enc"]);
        let token = Jwt::parse(&rsa.sign(&json!({"sub": "x"}))).unwrap();
        assert_eq!(set.verify(&token), Err(Status::JwksKidAlgMismatch));
        // No valid key at all is refused, as Envoy 1.40 refuses it.
        assert!(KeySet::parse_local(r#"{"keys":[]}"#).is_err());
        assert!(KeySet::parse_local(r#"{"keys":[7,{"kty":"RSA","n":"AQAB"}]}"#).is_err());
        let huge = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES));
        assert!(
            KeySet::parse_local(&huge)
                .unwrap_err()
                .to_string()
                .contains("allowed")
        );
    }
}
