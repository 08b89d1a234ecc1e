//! Parsing a compact JWS into its header, claims and signature — before any trust is placed in it.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::{Status, UnixSeconds};

/// base64url that accepts tokens with or without `=` padding, as Envoy does.
pub(crate) const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A parsed, not yet verified, JWT.
#[derive(Debug, Clone)]
pub struct Jwt {
    raw: String,
    signing_input_len: usize,
    /// The signing algorithm from the header.
    pub alg: Algorithm,
    /// The key id from the header.
    pub kid: Option<String>,
    /// The decoded header.
    pub header: Map<String, Value>,
    /// The decoded claims.
    pub claims: Map<String, Value>,
    /// `iss`, empty when absent.
    pub iss: String,
    /// `sub`, empty when absent.
    pub sub: String,
    /// `aud`, as a list whether the token has a string or an array.
    pub aud: Vec<String>,
    /// `exp`.
    pub exp: Option<UnixSeconds>,
    /// `nbf`.
    pub nbf: Option<UnixSeconds>,
    /// `iat`.
    pub iat: Option<UnixSeconds>,
    /// The claims as compact JSON, written once when first asked for ([`Jwt::claims_json`]): a
    /// cached token publishes it on every request.
    claims_json: std::sync::OnceLock<String>,
}

/// Header parameters that would let a token name its own key. Trusting any of them is the
/// classic key-injection hole, so a token carrying one is refused outright.
const KEY_CARRYING_HEADERS: [&str; 5] = ["jwk", "jku", "x5u", "x5c", "crit"];

impl Jwt {
    /// Parses a compact JWS. Checks form, JSON, the algorithm and the types of registered claims;
    /// verifies nothing.
    pub fn parse(token: &str) -> Result<Jwt, Status> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Status::JwtBadFormat);
        };
        if header_b64.is_empty() || payload_b64.is_empty() {
            return Err(Status::JwtBadFormat);
        }
        let header = decode_object(header_b64).ok_or(Status::JwtHeaderParseError)?;
        let alg = match header.get("alg") {
            Some(Value::String(alg)) => parse_alg(alg).ok_or(Status::JwtHeaderNotImplementedAlg)?,
            _ => return Err(Status::JwtHeaderBadAlg),
        };
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(Status::JwtHeaderBadKid),
        };
        if KEY_CARRYING_HEADERS.iter().any(|k| header.contains_key(*k)) {
            return Err(Status::JwtHeaderEmbeddedKey);
        }
        let claims = decode_object(payload_b64).ok_or(Status::JwtPayloadParseError)?;
        if B64URL.decode(signature_b64).is_err() {
            return Err(Status::JwtSignatureParseError);
        }
        let string_claim = |name: &str| match claims.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Status::JwtPayloadBadClaim),
        };
        // As `jwt_verify_lib`'s `GetUInt64`: the JSON number as a double, refused when negative
        // or not below 2^64, truncated; 0 is how it stores an absent claim, so `exp: 0` is no
        // expiry, as in Envoy.
        let time_claim = |name: &str| match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if (0.0..U64_LIMIT).contains(&f) => Ok(Some(f as u64).filter(|t| *t > 0)),
                _ => Err(Status::JwtPayloadBadClaim),
            },
            Some(_) => Err(Status::JwtPayloadBadClaim),
        };
        let aud = match claims.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(Status::JwtPayloadBadClaim)?,
            Some(_) => return Err(Status::JwtPayloadBadClaim),
        };
        Ok(Jwt {
            iss: string_claim("iss")?,
            sub: string_claim("sub")?,
            exp: time_claim("exp")?,
            nbf: time_claim("nbf")?,
            iat: time_claim("iat")?,
            aud,
            signing_input_len: header_b64.len() + 1 + payload_b64.len(),
            raw: token.to_string(),
            alg,
            kid,
            header,
            claims,
            claims_json: std::sync::OnceLock::new(),
        })
    }

    /// The claims as compact JSON (`serde_json`'s form of [`Jwt::claims`]), computed once.
    pub fn claims_json(&self) -> &str {
        self.claims_json
            .get_or_init(|| Value::Object(self.claims.clone()).to_string())
    }

    /// The token as it came.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// `header.payload`, the bytes the signature covers.
    pub fn signing_input(&self) -> &[u8] {
        &self.raw.as_bytes()[..self.signing_input_len]
    }

    /// The signature section, base64url.
    pub fn signature_b64(&self) -> &str {
        &self.raw[self.signing_input_len + 1..]
    }

    /// The payload section, base64url as in the token.
    pub fn payload_b64(&self) -> &str {
        let start = self.raw.find('.').map_or(0, |i| i + 1);
        &self.raw[start..self.signing_input_len]
    }
}

/// 2^64 as a double: `jwt_verify_lib` refuses time claims at or above it.
pub(crate) const U64_LIMIT: f64 = 18_446_744_073_709_551_616.0;

fn decode_object(b64: &str) -> Option<Map<String, Value>> {
    let bytes = B64URL.decode(b64).ok()?;
    match serde_json::from_slice::<Strict>(&bytes).ok()?.0 {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A JSON value that refuses duplicate object members at any depth, as Envoy's protobuf JSON
/// parser does: with last-wins a signed token could show one reader `"sub":"alice"` and
/// another `"sub":"admin"`.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value without duplicate members")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let Strict(value) = map.next_value()?;
            if members.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("duplicate member"));
            }
        }
        Ok(Value::Object(members))
    }
}

/// The algorithms this filter verifies. `none` is not among them, by design.
pub fn parse_alg(alg: &str) -> Option<Algorithm> {
    Some(match alg {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(json: &str) -> String {
        B64URL.encode(json)
    }

    fn token(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    #[test]
    fn parses_registered_claims() {
        let jwt = Jwt::parse(&token(
            r#"{"alg":"RS256","kid":"k1"}"#,
            r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":10,"nbf":5,"iat":1.5}"#,
        ))
        .unwrap();
        assert_eq!(jwt.alg, Algorithm::RS256);
        assert_eq!(jwt.kid.as_deref(), Some("k1"));
        assert_eq!((jwt.iss.as_str(), jwt.sub.as_str()), ("i", "s"));
        assert_eq!(jwt.aud, ["a", "b"]);
        assert_eq!((jwt.exp, jwt.nbf, jwt.iat), (Some(10), Some(5), Some(1)));
        assert_eq!(jwt.signature_b64(), "c2ln");
        assert!(jwt.signing_input().ends_with(jwt.payload_b64().as_bytes()));
    }

    #[test]
    fn refuses_malformed_and_dangerous_tokens() {
        let cases = [
            ("a.b".to_string(), Status::JwtBadFormat),
            ("a.b.c.d".to_string(), Status::JwtBadFormat),
            (
                format!("{}.{}.x", b64("nope"), b64("{}")),
                Status::JwtHeaderParseError,
            ),
            (
                token(r#"{"alg":"none"}"#, "{}"),
                Status::JwtHeaderNotImplementedAlg,
            ),
            (
                token(r#"{"alg":"NONE"}"#, "{}"),
                Status::JwtHeaderNotImplementedAlg,
            ),
            (token(r#"{"typ":"JWT"}"#, "{}"), Status::JwtHeaderBadAlg),
            (
                token(r#"{"alg":"RS256","kid":1}"#, "{}"),
                Status::JwtHeaderBadKid,
            ),
            (
                token(r#"{"alg":"RS256","jku":"http://evil"}"#, "{}"),
                Status::JwtHeaderEmbeddedKey,
            ),
            (
                token(r#"{"alg":"RS256","jwk":{}}"#, "{}"),
                Status::JwtHeaderEmbeddedKey,
            ),
            (
                token(r#"{"alg":"RS256","x5u":"http://evil"}"#, "{}"),
                Status::JwtHeaderEmbeddedKey,
            ),
            (
                token(r#"{"alg":"RS256"}"#, "[]"),
                Status::JwtPayloadParseError,
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"exp":"soon"}"#),
                Status::JwtPayloadBadClaim,
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"aud":[1]}"#),
                Status::JwtPayloadBadClaim,
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"iss":7}"#),
                Status::JwtPayloadBadClaim,
            ),
            (
                format!("{}.{}.***", b64(r#"{"alg":"RS256"}"#), b64("{}")),
                Status::JwtSignatureParseError,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(Jwt::parse(&token).unwrap_err(), expected, "{token}");
        }
    }

    #[test]
    fn duplicate_members_are_invalid_json_as_in_envoy() {
        let header = r#"{"alg":"RS256"}"#;
        let cases = [
            (
                token(header, r#"{"sub":"alice","sub":"admin"}"#),
                Status::JwtPayloadParseError,
            ),
            (
                token(header, r#"{"x":{"a":1,"a":2}}"#),
                Status::JwtPayloadParseError,
            ),
            (
                token(header, r#"{"x":[{"a":1,"a":2}]}"#),
                Status::JwtPayloadParseError,
            ),
            (
                token(r#"{"alg":"RS256","kid":"a","kid":"b"}"#, "{}"),
                Status::JwtHeaderParseError,
            ),
        ];
        for (token, expected) in cases {
            assert_eq!(Jwt::parse(&token).unwrap_err(), expected, "{token}");
        }
        let nested = Jwt::parse(&token(header, r#"{"x":{"a":[1,{"b":null}]},"y":-1.5}"#)).unwrap();
        assert_eq!(nested.claims["x"]["a"][1]["b"], Value::Null);
    }

    #[test]
    fn time_claims_follow_jwt_verify_lib_integer_rules() {
        let header = r#"{"alg":"RS256"}"#;
        for out_of_range in [
            r#"{"exp":1e20}"#,
            r#"{"exp":99999999999999999999999}"#,
            r#"{"nbf":18446744073709551616}"#,
            r#"{"exp":-1}"#,
            r#"{"iat":-0.5}"#,
        ] {
            assert_eq!(
                Jwt::parse(&token(header, out_of_range)).unwrap_err(),
                Status::JwtPayloadBadClaim,
                "{out_of_range}"
            );
        }
        // 0 is an absent claim to jwt_verify_lib: no expiry.
        let zero = Jwt::parse(&token(header, r#"{"exp":0,"nbf":0}"#)).unwrap();
        assert_eq!((zero.exp, zero.nbf), (None, None));
        let big = Jwt::parse(&token(header, r#"{"exp":1e19}"#)).unwrap();
        assert_eq!(big.exp, Some(10_000_000_000_000_000_000));
    }
}
