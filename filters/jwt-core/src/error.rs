//! What can go wrong: with a token ([`Status`]) or with the configuration ([`ConfigError`]).

/// Why a token (or the lack of one) failed a requirement. The messages are Envoy's `jwt_authn`
/// status strings where Envoy has one, so users see the same words in both filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// No token in any location the requirement accepts.
    JwtMissed,
    /// Not three base64url sections separated by dots.
    JwtBadFormat,
    /// The header is not a JSON object.
    JwtHeaderParseError,
    /// The header has no string `alg`.
    JwtHeaderBadAlg,
    /// `alg` is `none` or an algorithm this filter does not verify.
    JwtHeaderNotImplementedAlg,
    /// `kid` is present but not a string.
    JwtHeaderBadKid,
    /// The header carries a key or a key URL (`jwk`, `jku`, `x5u`, `x5c`) or `crit` extensions;
    /// trusting either would let the token choose its own key.
    JwtHeaderEmbeddedKey,
    /// The payload is not a JSON object.
    JwtPayloadParseError,
    /// A registered claim has the wrong type (e.g. `exp` not a number, `aud` not strings).
    JwtPayloadBadClaim,
    /// The signature section is not base64url.
    JwtSignatureParseError,
    /// `nbf` is in the future beyond the allowed clock skew.
    JwtNotYetValid,
    /// `exp` is in the past beyond the allowed clock skew.
    JwtExpired,
    /// `exp` is missing and the provider sets `require_expiration`.
    JwtMissingExpiration,
    /// `exp` lies further ahead than the provider's `max_lifetime`.
    JwtLifetimeTooLong,
    /// `iss` is not the provider's issuer.
    JwtUnknownIssuer,
    /// `sub` does not satisfy the provider's `subjects` matcher.
    JwtSubjectNotAllowed,
    /// None of the token's audiences is allowed (403, as Envoy).
    JwtAudienceNotAllowed,
    /// No key in the JWKS matches the token's `kid` and `alg`.
    JwksKidAlgMismatch,
    /// A key matched but the signature does not verify.
    JwtVerificationFail,
    /// The provider has no usable keys.
    JwksNoValidKeys,
    /// The remote JWKS could not be fetched (and no earlier keys are at hand).
    JwksFetchFail,
}

impl Status {
    /// The message sent to the client and logged.
    pub fn message(self) -> &'static str {
        match self {
            Status::JwtMissed => "Jwt is missing",
            Status::JwtBadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Status::JwtHeaderParseError => "Jwt header is an invalid JSON",
            Status::JwtHeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Status::JwtHeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            Status::JwtHeaderBadKid => "Jwt header [kid] field is not a string",
            Status::JwtHeaderEmbeddedKey => {
                "Jwt header must not carry keys or key URLs (jwk, jku, x5u, x5c) or crit"
            }
            Status::JwtPayloadParseError => "Jwt payload is an invalid JSON",
            Status::JwtPayloadBadClaim => "Jwt payload has a registered claim of the wrong type",
            Status::JwtSignatureParseError => "Jwt signature is an invalid Base64url encoded",
            Status::JwtNotYetValid => "Jwt not yet valid",
            Status::JwtExpired => "Jwt is expired",
            Status::JwtMissingExpiration => "Jwt is missing the required exp claim",
            Status::JwtLifetimeTooLong => "Jwt lifetime exceeds the provider's max_lifetime",
            Status::JwtUnknownIssuer => "Jwt issuer is not configured",
            Status::JwtSubjectNotAllowed => "Jwt subject is not allowed",
            Status::JwtAudienceNotAllowed => "Audiences in Jwt are not allowed",
            Status::JwksKidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Status::JwtVerificationFail => "Jwt verification fails",
            Status::JwksNoValidKeys => "Jwks doesn't have valid keys",
            Status::JwksFetchFail => "Jwks remote fetch is failed",
        }
    }

    /// A short stable name for stats (`denied.<reason>`).
    pub fn reason(self) -> &'static str {
        match self {
            Status::JwtMissed => "missing",
            Status::JwtBadFormat
            | Status::JwtHeaderParseError
            | Status::JwtHeaderBadAlg
            | Status::JwtHeaderBadKid
            | Status::JwtPayloadParseError
            | Status::JwtPayloadBadClaim
            | Status::JwtSignatureParseError => "malformed",
            Status::JwtHeaderNotImplementedAlg => "bad_alg",
            Status::JwtHeaderEmbeddedKey => "embedded_key",
            Status::JwtNotYetValid => "not_yet_valid",
            Status::JwtExpired | Status::JwtMissingExpiration | Status::JwtLifetimeTooLong => {
                "expired"
            }
            Status::JwtUnknownIssuer => "issuer",
            Status::JwtSubjectNotAllowed => "subject",
            Status::JwtAudienceNotAllowed => "audience",
            Status::JwksKidAlgMismatch => "unknown_key",
            Status::JwtVerificationFail => "signature",
            Status::JwksNoValidKeys | Status::JwksFetchFail => "jwks",
        }
    }

    /// Every reason name, for registering stats up front.
    pub const REASONS: [&'static str; 13] = [
        "missing",
        "malformed",
        "bad_alg",
        "embedded_key",
        "not_yet_valid",
        "expired",
        "issuer",
        "subject",
        "audience",
        "unknown_key",
        "signature",
        "jwks",
        "other",
    ];

    /// The HTTP status of a denial: 403 for a disallowed audience, 401 otherwise (as Envoy).
    pub fn http_status(self) -> u32 {
        if self == Status::JwtAudienceNotAllowed {
            403
        } else {
            401
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// A configuration the filter refuses. The message names the field, so Envoy's log says what to
/// fix when it refuses the plugin.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The JSON does not parse into `JwtAuthentication` (unknown field, wrong type, ...).
    #[error("invalid jwt-auth configuration: {0}")]
    Json(#[from] serde_json::Error),
    /// A field is known to Envoy but not supported in a Wasm filter.
    #[error("{field}: {reason}")]
    Unsupported {
        /// Path of the field, e.g. `providers.example.local_jwks.filename`.
        field: String,
        /// Why it cannot be honoured.
        reason: String,
    },
    /// A field has a value that cannot work.
    #[error("{field}: {reason}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
