//! The signing certificate: its chain to a trusted Fulcio CA (through webpki, at a given
//! time), its embedded SCTs checked against the trusted CT logs, and the identity it names.

use chrono::{DateTime, Utc};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode, Tag, TagNumber, Tagged};
use pki_types::{CertificateDer, UnixTime};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{SignedCertificateTimestampList, SubjectAltName};

use super::crypto::PublicKey;
use super::trusted_root::{Authority, TrustedRoot};
use super::{Error, Result};

/// id-kp-codeSigning (1.3.6.1.5.5.7.3.3), DER content octets as webpki takes them.
const CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];
/// id-kp-timeStamping (1.3.6.1.5.5.7.3.8).
pub(super) const TIME_STAMPING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08];
/// Fulcio's OIDC issuer extension, v1 (raw string) and v2 (DER UTF8String).
const FULCIO_ISSUER_V1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.1");
const FULCIO_ISSUER_V2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.57264.1.8");
/// The precertificate SCT list extension.
const CT_PRECERT_SCTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.11129.2.4.2");
/// Most SCTs looked at in one certificate.
const MAX_SCTS: usize = 8;

/// A signing certificate, parsed.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Its DER.
    pub der: Vec<u8>,
    cert: Certificate,
    /// Its public key.
    pub key: PublicKey,
}

/// The identity a Fulcio certificate was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Subject alternative names: URIs, e-mail addresses, Fulcio `otherName` usernames.
    pub subjects: Vec<String>,
    /// The OIDC issuer the identity was proven to.
    pub issuer: Option<String>,
}

fn cert_error(what: impl std::fmt::Display) -> Error {
    Error::Certificate(what.to_string())
}

/// Whether a certificate's subject and issuer are the same name (a root or self-issued CA).
pub fn is_self_issued(der: &[u8]) -> Result<bool> {
    let cert = Certificate::from_der(der).map_err(cert_error)?;
    Ok(cert.tbs_certificate().subject() == cert.tbs_certificate().issuer())
}

fn spki_der(cert: &Certificate) -> Result<Vec<u8>> {
    cert.tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(cert_error)
}

impl Leaf {
    /// Parses a DER certificate.
    pub fn parse(der: &[u8]) -> Result<Self> {
        let cert = Certificate::from_der(der).map_err(cert_error)?;
        let key = PublicKey::from_spki(&spki_der(&cert)?)?;
        Ok(Self {
            der: der.to_vec(),
            cert,
            key,
        })
    }

    /// Whether `t` is inside the certificate's own validity.
    pub fn valid_at(&self, t: DateTime<Utc>) -> bool {
        let v = self.cert.tbs_certificate().validity();
        let secs = |t: &x509_cert::time::Time| t.to_unix_duration().as_secs();
        let t = t.timestamp();
        u64::try_from(t).is_ok_and(|t| secs(&v.not_before) <= t && t <= secs(&v.not_after))
    }

    fn extensions(&self) -> impl Iterator<Item = &Extension> {
        self.cert
            .tbs_certificate()
            .extensions()
            .into_iter()
            .flatten()
    }

    /// The identity it names.
    pub fn identity(&self) -> Result<Identity> {
        let mut subjects = Vec::new();
        if let Some((_, san)) = self
            .cert
            .tbs_certificate()
            .get_extension::<SubjectAltName>()
            .map_err(cert_error)?
        {
            for name in san.0 {
                match name {
                    GeneralName::UniformResourceIdentifier(uri) => subjects.push(uri.to_string()),
                    GeneralName::Rfc822Name(mail) => subjects.push(mail.to_string()),
                    GeneralName::OtherName(other) => {
                        if let Ok(text) = other.value.decode_as::<der::asn1::Utf8StringRef<'_>>() {
                            subjects.push(text.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        let mut issuer = None;
        for ext in self.extensions() {
            let value = ext.extn_value.as_bytes();
            if ext.extn_id == FULCIO_ISSUER_V2 {
                let text = der::asn1::Utf8StringRef::from_der(value).map_err(cert_error)?;
                issuer = Some(text.to_string());
            } else if ext.extn_id == FULCIO_ISSUER_V1 && issuer.is_none() {
                issuer = Some(String::from_utf8_lossy(value).into_owned());
            }
        }
        Ok(Identity { subjects, issuer })
    }

    /// Verifies the chain to one of the trusted Fulcio CAs valid at `t`, as of `t`, and
    /// returns the DER SPKI of the certificate that issued the leaf.
    pub fn verify_chain(&self, root: &TrustedRoot, t: DateTime<Utc>) -> Result<Vec<u8>> {
        let mut last = cert_error("no trusted certificate authority is valid at the signing time");
        for ca in root
            .certificate_authorities
            .iter()
            .filter(|a| a.valid.contains(t))
        {
            match chain_to(&self.der, ca, t, CODE_SIGNING) {
                Ok(issuer) => return Ok(issuer),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Verifies the embedded SCTs: at least one must be signed by a trusted CT log whose
    /// key was valid at the SCT's time.
    pub fn verify_scts(&self, root: &TrustedRoot, issuer_spki: &[u8]) -> Result<()> {
        let Some((_, list)) = self
            .cert
            .tbs_certificate()
            .get_extension::<SignedCertificateTimestampList>()
            .map_err(cert_error)?
        else {
            return Err(Error::Sct("the certificate embeds no SCT".into()));
        };
        let scts = list
            .parse_timestamps()
            .map_err(|e| Error::Sct(format!("unreadable SCT list: {e:?}")))?;
        if scts.len() > MAX_SCTS {
            return Err(Error::Sct(format!("more than {MAX_SCTS} SCTs")));
        }
        let tbs = precert_tbs_der(&self.der).map_err(cert_error)?;
        let issuer_key_hash: [u8; 32] = Sha256::digest(issuer_spki).into();
        let mut last = Error::Sct("no SCT from a trusted CT log".into());
        for sct in &scts {
            let sct = sct
                .parse_timestamp()
                .map_err(|e| Error::Sct(format!("unreadable SCT: {e:?}")))?;
            let Some(at) = millis(sct.timestamp) else {
                continue;
            };
            let Some(log) = root.ctlog(&sct.log_id.key_id, at) else {
                continue;
            };
            // RFC 6962 3.2: the signed structure for a precertificate entry.
            let mut signed = Vec::with_capacity(tbs.len() + 64);
            signed.push(0); // v1
            signed.push(0); // certificate_timestamp
            signed.extend_from_slice(&sct.timestamp.to_be_bytes());
            signed.extend_from_slice(&1u16.to_be_bytes()); // precert_entry
            signed.extend_from_slice(&issuer_key_hash);
            let tbs_len = u32::try_from(tbs.len()).map_err(cert_error)?;
            signed.extend_from_slice(&tbs_len.to_be_bytes()[1..]);
            signed.extend_from_slice(&tbs);
            let ext = sct.extensions.as_slice();
            let ext_len = u16::try_from(ext.len()).map_err(cert_error)?;
            signed.extend_from_slice(&ext_len.to_be_bytes());
            signed.extend_from_slice(ext);
            match log.key.verify(&signed, sct.signature.signature.as_slice()) {
                Ok(()) => return Ok(()),
                Err(_) => last = Error::Sct("an SCT's signature does not verify".into()),
            }
        }
        Err(last)
    }
}

fn millis(ms: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

/// Verifies `leaf_der` up to the authority's root at time `t` for the extended key usage
/// `eku`; returns the DER SPKI of the leaf's issuer.
pub(super) fn chain_to(
    leaf_der: &[u8],
    ca: &Authority,
    t: DateTime<Utc>,
    eku: &'static [u8],
) -> Result<Vec<u8>> {
    let Some((anchor_der, intermediates)) = ca.chain.split_last() else {
        return Err(cert_error("empty authority chain"));
    };
    let anchor_der = CertificateDer::from(anchor_der.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&anchor_der).map_err(cert_error)?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf = CertificateDer::from(leaf_der);
    let end_entity = webpki::EndEntityCert::try_from(&leaf).map_err(cert_error)?;
    let secs = u64::try_from(t.timestamp()).map_err(|_| cert_error("time before 1970"))?;
    let anchors = [anchor];
    let path = end_entity
        .verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &intermediates,
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs)),
            webpki::KeyUsage::required(eku),
            None,
            None,
        )
        .map_err(|e| cert_error(format!("chain: {e:?}")))?;
    let issuer_der = match path.intermediate_certificates().next() {
        Some(issuer) => issuer.der().to_vec(),
        None => anchor_der.to_vec(),
    };
    spki_der(&Certificate::from_der(&issuer_der).map_err(cert_error)?)
}

/// The leaf's TBSCertificate without the SCT list extension, from the original DER: the
/// bytes an SCT over a precertificate signs (re-encoding a decoded certificate need not give
/// the same bytes back).
pub(super) fn precert_tbs_der(leaf_der: &[u8]) -> der::Result<Vec<u8>> {
    const EXTENSIONS: Tag = Tag::ContextSpecific {
        constructed: true,
        number: TagNumber(3),
    };
    let fields = Vec::<der::Any>::from_der(leaf_der)?;
    let tbs = fields.first().ok_or_else(|| Tag::Sequence.value_error())?;
    let mut tbs_fields: Vec<der::Any> = tbs.decode_as()?;
    if let Some(exts) = tbs_fields.iter_mut().find(|f| f.tag() == EXTENSIONS) {
        let mut kept = Vec::new();
        for ext in Vec::<der::Any>::from_der(exts.value())? {
            if ext.decode_as::<Extension>()?.extn_id != CT_PRECERT_SCTS {
                kept.push(ext);
            }
        }
        *exts = der::Any::new(EXTENSIONS, kept.to_der()?)?;
    }
    tbs_fields.to_der()
}
