//! Keys and tokens for tests, the demo and benchmarks (feature `mint`; never in the filter).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::token::B64URL;

/// A private key with its public JWK.
#[derive(Clone)]
pub struct SigningKey {
    /// Algorithm tokens are signed with.
    pub alg: Algorithm,
    /// Key id.
    pub kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

fn b64(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

fn alg_name(alg: Algorithm) -> String {
    serde_json::to_value(alg)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Mint-time failures are bugs in the caller's test, so they panic with the reason.
#[allow(clippy::expect_used)]
impl SigningKey {
    /// A fresh 2048-bit RSA key for `alg` (RS* or PS*).
    pub fn rsa(kid: &str, alg: Algorithm) -> Self {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::traits::PublicKeyParts as _;
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key");
        let der = key.to_pkcs1_der().expect("PKCS#1 DER");
        let jwk = json!({
            "kty": "RSA", "kid": kid, "alg": alg_name(alg), "use": "sig",
            "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
        });
        SigningKey {
            alg,
            kid: kid.into(),
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk,
        }
    }

    /// The same RSA key material under another algorithm and kid (e.g. PS256 beside RS256).
    pub fn with_alg(&self, kid: &str, alg: Algorithm) -> Self {
        let mut jwk = self.jwk.clone();
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg_name(alg));
        SigningKey {
            alg,
            kid: kid.into(),
            encoding: self.encoding.clone(),
            jwk,
        }
    }

    /// A fresh P-256 key (ES256).
    pub fn es256(kid: &str) -> Self {
        Self::es256_from(kid, p256::SecretKey::random(&mut rand::rngs::OsRng))
    }

    /// A P-256 key (ES256) from a PKCS#8 PEM, as [`SigningKey::es256_pem`] writes it.
    pub fn es256_from_pem(kid: &str, pem: &str) -> Result<Self, String> {
        use p256::pkcs8::DecodePrivateKey as _;
        let key = p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
        Ok(Self::es256_from(kid, key))
    }

    /// A fresh P-256 key and its PKCS#8 PEM, to keep a development key across runs.
    pub fn es256_pem(kid: &str) -> (Self, String) {
        use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
        let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 PEM")
            .to_string();
        (Self::es256_from(kid, key), pem)
    }

    fn es256_from(kid: &str, key: p256::SecretKey) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        use p256::pkcs8::EncodePrivateKey as _;
        let point = key.public_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256",
            "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
        });
        let der = key.to_pkcs8_der().expect("PKCS#8 DER");
        SigningKey {
            alg: Algorithm::ES256,
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk,
        }
    }

    /// A fresh P-384 key (ES384).
    pub fn es384(kid: &str) -> Self {
        use p384::elliptic_curve::sec1::ToEncodedPoint as _;
        use p384::pkcs8::EncodePrivateKey as _;
        let key = p384::SecretKey::random(&mut rand::rngs::OsRng);
        let point = key.public_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384",
            "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
        });
        let der = key.to_pkcs8_der().expect("PKCS#8 DER");
        SigningKey {
            alg: Algorithm::ES384,
            kid: kid.into(),
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk,
        }
    }

    /// A fresh Ed25519 key (EdDSA).
    pub fn ed25519(kid: &str) -> Self {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA",
            "x": b64(key.verifying_key().as_bytes()),
        });
        let der = key.to_pkcs8_der().expect("PKCS#8 DER");
        SigningKey {
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            jwk,
        }
    }

    /// A shared secret for `alg` (HS*).
    pub fn hmac(kid: &str, alg: Algorithm, secret: &[u8]) -> Self {
        let jwk = json!({"kty": "oct", "kid": kid, "alg": alg_name(alg), "k": b64(secret)});
        SigningKey {
            alg,
            kid: kid.into(),
            encoding: EncodingKey::from_secret(secret),
            jwk,
        }
    }

    /// The public JWK (for `oct`, the secret).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The JWK without `kid` and `alg`, as some issuers publish keys.
    pub fn bare_jwk(&self) -> Value {
        let mut jwk = self.jwk.clone();
        if let Some(map) = jwk.as_object_mut() {
            map.remove("kid");
            map.remove("alg");
        }
        jwk
    }

    /// Signs `claims` with a header of `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        self.sign_with(header, claims)
    }

    /// Signs `claims` with the given header (its `alg` must fit the key).
    pub fn sign_with(&self, header: Header, claims: &Value) -> String {
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing a token")
    }

    /// Signs header and claims given as JSON text, byte for byte (for JSON a `Value` cannot
    /// hold: duplicate members, numbers beyond 64 bits).
    pub fn sign_text(&self, header: &str, claims: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg)
            .expect("signing");
        format!("{input}.{signature}")
    }

    /// Signs an arbitrary header JSON (for tokens with unusual headers) with this key's `alg`.
    pub fn sign_raw(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &self.encoding, self.alg)
            .expect("signing");
        format!("{input}.{signature}")
    }
}

/// A JWKS document of these keys' public JWKs.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk().clone()).collect::<Vec<_>>()}).to_string()
}

/// An unsigned token with any header (e.g. `{"alg":"none"}`) and an empty signature.
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
