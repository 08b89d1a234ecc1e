//! RFC 3161 timestamps over the bundle's signature: the response is granted, the token's
//! SignedData is signed by a timestamp authority of the trusted root (chained to its root,
//! valid and trusted at the stamped time), and its message imprint is the signature's hash.

use chrono::{DateTime, NaiveDateTime, Utc};
use cms::content_info::ContentInfo;
use cms::signed_data::SignedData;
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5911::{ID_CONTENT_TYPE, ID_MESSAGE_DIGEST, ID_SIGNED_DATA};
use der::asn1::OctetString;
use der::{Any, Decode, Encode, Tagged};
use pki_types::{CertificateDer, SignatureVerificationAlgorithm};
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::AlgorithmIdentifierOwned;
use webpki::aws_lc_rs as algs;

use super::certificate::{TIME_STAMPING, chain_to};
use super::trusted_root::{Authority, TrustedRoot};
use super::{Error, Result};

const ID_CT_TST_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.1.4");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");

/// `MessageImprint` of RFC 3161.
#[derive(der::Sequence)]
struct MessageImprint {
    hash_algorithm: AlgorithmIdentifierOwned,
    hashed_message: OctetString,
}

fn ts_error(what: impl std::fmt::Display) -> Error {
    Error::Timestamp(what.to_string())
}

#[derive(Clone, Copy)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn from_oid(oid: ObjectIdentifier) -> Result<Self> {
        match oid {
            SHA256 => Ok(Hash::Sha256),
            SHA384 => Ok(Hash::Sha384),
            SHA512 => Ok(Hash::Sha512),
            other => Err(ts_error(format!("unsupported digest algorithm {other}"))),
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(data).to_vec(),
            Hash::Sha384 => Sha384::digest(data).to_vec(),
            Hash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// The signature algorithms a timestamp authority may sign with under this hash.
    fn algorithms(self) -> [&'static dyn SignatureVerificationAlgorithm; 5] {
        match self {
            Hash::Sha256 => [
                algs::ECDSA_P256_SHA256,
                algs::ECDSA_P384_SHA256,
                algs::RSA_PKCS1_2048_8192_SHA256,
                algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
                algs::ED25519,
            ],
            Hash::Sha384 => [
                algs::ECDSA_P256_SHA384,
                algs::ECDSA_P384_SHA384,
                algs::RSA_PKCS1_2048_8192_SHA384,
                algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
                algs::ED25519,
            ],
            Hash::Sha512 => [
                algs::ECDSA_P256_SHA512,
                algs::ECDSA_P384_SHA512,
                algs::RSA_PKCS1_2048_8192_SHA512,
                algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
                algs::ED25519,
            ],
        }
    }
}

/// GeneralizedTime text, `YYYYMMDDHHMMSS[.fff…]Z` (TSAs give fractions of a second).
fn generalized_time(any: &Any) -> Result<DateTime<Utc>> {
    if any.tag() != der::Tag::GeneralizedTime {
        return Err(ts_error("genTime is not a GeneralizedTime"));
    }
    let text = std::str::from_utf8(any.value()).map_err(ts_error)?;
    let text = text
        .strip_suffix('Z')
        .ok_or_else(|| ts_error("genTime not in UTC"))?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let base = NaiveDateTime::parse_from_str(whole, "%Y%m%d%H%M%S").map_err(ts_error)?;
    let mut nanos: u32 = 0;
    for (i, c) in fraction.chars().take(9).enumerate() {
        let d = c
            .to_digit(10)
            .ok_or_else(|| ts_error("genTime fraction unreadable"))?;
        nanos += d * 10u32.pow(8 - i as u32);
    }
    Ok(base.and_utc() + chrono::Duration::nanoseconds(i64::from(nanos)))
}

/// Verifies one DER `TimeStampResp` over `signature`; returns the stamped time.
pub fn verify(response: &[u8], signature: &[u8], root: &TrustedRoot) -> Result<DateTime<Utc>> {
    let fields = Vec::<Any>::from_der(response).map_err(ts_error)?;
    let [status, token] = fields.as_slice() else {
        return Err(ts_error("response carries no token"));
    };
    let status = status.decode_as::<Vec<Any>>().map_err(ts_error)?;
    let granted = status
        .first()
        .and_then(|s| s.decode_as::<u8>().ok())
        .is_some_and(|s| s <= 1);
    if !granted {
        return Err(ts_error("timestamp not granted"));
    }
    let info: ContentInfo = token.decode_as().map_err(ts_error)?;
    if info.content_type != ID_SIGNED_DATA {
        return Err(ts_error("token is not SignedData"));
    }
    let signed: SignedData = info.content.decode_as().map_err(ts_error)?;
    if signed.encap_content_info.econtent_type != ID_CT_TST_INFO {
        return Err(ts_error("token does not hold a TSTInfo"));
    }
    let tst_der = signed
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| ts_error("token has no TSTInfo"))?
        .decode_as::<OctetString>()
        .map_err(ts_error)?
        .into_bytes();
    let tst = Vec::<Any>::from_der(&tst_der).map_err(ts_error)?;
    let (Some(imprint), Some(gen_time)) = (tst.get(2), tst.get(4)) else {
        return Err(ts_error("TSTInfo too short"));
    };
    let imprint: MessageImprint = imprint.decode_as().map_err(ts_error)?;
    let imprint_hash = Hash::from_oid(imprint.hash_algorithm.oid)?;
    if imprint.hashed_message.as_bytes() != imprint_hash.digest(signature) {
        return Err(ts_error("timestamp is not over the bundle's signature"));
    }
    let time = generalized_time(gen_time)?;

    let [signer] = signed.signer_infos.0.as_slice() else {
        return Err(ts_error("token needs exactly one signer"));
    };
    let digest = Hash::from_oid(signer.digest_alg.oid)?;
    let attrs = signer
        .signed_attrs
        .as_ref()
        .ok_or_else(|| ts_error("signer has no signed attributes"))?;
    let attr = |oid: ObjectIdentifier| {
        attrs
            .iter()
            .find(|a| a.oid == oid)
            .and_then(|a| a.values.iter().next())
            .ok_or_else(|| ts_error(format!("signed attribute {oid} missing")))
    };
    if attr(ID_CONTENT_TYPE)?
        .decode_as::<ObjectIdentifier>()
        .map_err(ts_error)?
        != ID_CT_TST_INFO
    {
        return Err(ts_error("signed content type is not TSTInfo"));
    }
    if attr(ID_MESSAGE_DIGEST)?
        .decode_as::<OctetString>()
        .map_err(ts_error)?
        .as_bytes()
        != digest.digest(&tst_der)
    {
        return Err(ts_error("signed digest does not match the TSTInfo"));
    }
    let signed_attrs = attrs.to_der().map_err(ts_error)?;
    let sig = signer.signature.as_bytes();

    let mut last = ts_error("no trusted timestamp authority is valid at the stamped time");
    for tsa in root
        .timestamp_authorities
        .iter()
        .filter(|a| a.valid.contains(time))
    {
        match verify_by(tsa, time, digest, &signed_attrs, sig) {
            Ok(()) => return Ok(time),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Whether `tsa`'s leaf signed the attributes, and chains to its root at `time`.
fn verify_by(
    tsa: &Authority,
    time: DateTime<Utc>,
    hash: Hash,
    signed: &[u8],
    sig: &[u8],
) -> Result<()> {
    let Some((leaf, rest)) = tsa.chain.split_first() else {
        return Err(ts_error("empty authority chain"));
    };
    let leaf_der = CertificateDer::from(leaf.as_slice());
    let cert = webpki::EndEntityCert::try_from(&leaf_der).map_err(ts_error)?;
    if !hash
        .algorithms()
        .iter()
        .any(|alg| cert.verify_signature(*alg, signed, sig).is_ok())
    {
        return Err(ts_error("timestamp signature does not verify"));
    }
    if rest.is_empty() {
        // A self-signed authority: it is its own anchor; only its validity is left.
        return chain_to(leaf, tsa, time, TIME_STAMPING)
            .map(|_| ())
            .map_err(|e| ts_error(format!("authority {e}")));
    }
    let upper = Authority {
        chain: rest.to_vec(),
        valid: tsa.valid,
    };
    chain_to(leaf, &upper, time, TIME_STAMPING)
        .map(|_| ())
        .map_err(|e| ts_error(format!("authority {e}")))
}
