//! Claim checks, in the order Envoy's `jwt_authn` applies them: issuer, subject, lifetime, time,
//! audience. The signature is checked last (by [`crate::jwks::KeySet::verify`]), so a token that
//! fails a claim costs no public-key operation — and gets the same status Envoy would give it.

use crate::provider::Provider;
use crate::token::Jwt;
use crate::{Status, UnixSeconds};

/// Checks everything about `jwt` but its signature, for `provider`, with `audiences` overriding
/// the provider's own when given (`provider_and_audiences`).
pub fn check_claims(
    provider: &Provider,
    audiences: Option<&[String]>,
    jwt: &Jwt,
    now: UnixSeconds,
) -> Result<(), Status> {
    if !provider.issuer.is_empty() && jwt.iss != provider.issuer {
        return Err(Status::JwtUnknownIssuer);
    }
    if let Some(subjects) = &provider.subjects
        && !subjects.matches(&jwt.sub)
    {
        return Err(Status::JwtSubjectNotAllowed);
    }
    if provider.require_expiration && jwt.exp.is_none() {
        return Err(Status::JwtMissingExpiration);
    }
    if let Some(max) = provider.max_lifetime {
        match jwt.exp {
            None => return Err(Status::JwtMissingExpiration),
            Some(exp) if exp > now.saturating_add(max).saturating_add(provider.clock_skew) => {
                return Err(Status::JwtLifetimeTooLong);
            }
            Some(_) => {}
        }
    }
    let skew = provider.clock_skew;
    if jwt.nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
        return Err(Status::JwtNotYetValid);
    }
    if jwt.exp.is_some_and(|exp| now > exp.saturating_add(skew)) {
        return Err(Status::JwtExpired);
    }
    let allowed = audiences.unwrap_or(&provider.audiences);
    if !allowed.is_empty()
        && !jwt
            .aud
            .iter()
            .any(|a| allowed.iter().any(|b| audience_eq(a, b)))
    {
        return Err(Status::JwtAudienceNotAllowed);
    }
    Ok(())
}

/// Envoy compares audiences ignoring a URL scheme and a trailing slash
/// (`https://api.example.com/` equals `api.example.com`).
fn audience_eq(a: &str, b: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        s.strip_suffix('/').unwrap_or(s)
    }
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JwtProvider;
    use crate::token::B64URL;
    use base64::Engine as _;

    fn provider(json: &str) -> Provider {
        let mut raw: JwtProvider = serde_json::from_str(json).unwrap();
        raw.local_jwks = serde_json::from_str(
            r#"{"inline_string":"{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}"}"#,
        )
        .unwrap();
        Provider::compile("p", &raw).unwrap()
    }

    fn jwt(claims: &str) -> Jwt {
        let header = B64URL.encode(r#"{"alg":"HS256"}"#);
        Jwt::parse(&format!("{header}.{}.c2ln", B64URL.encode(claims))).unwrap()
    }

    #[test]
    fn envoy_order_and_semantics() {
        let p = provider(r#"{"issuer":"iss","audiences":["api"]}"#);
        let now = 1_000;
        let check = |claims: &str| check_claims(&p, None, &jwt(claims), now);
        assert_eq!(check(r#"{"iss":"iss","aud":"api"}"#), Ok(()));
        assert_eq!(check(r#"{"iss":"iss","aud":["x","https://api/"]}"#), Ok(()));
        assert_eq!(
            check(r#"{"iss":"other","aud":"api"}"#),
            Err(Status::JwtUnknownIssuer)
        );
        assert_eq!(check(r#"{"aud":"api"}"#), Err(Status::JwtUnknownIssuer));
        assert_eq!(
            check(r#"{"iss":"iss","aud":"web"}"#),
            Err(Status::JwtAudienceNotAllowed)
        );
        assert_eq!(
            check(r#"{"iss":"iss"}"#),
            Err(Status::JwtAudienceNotAllowed)
        );
        // Time comes before audience, as in Envoy: an expired token with a wrong audience is 401.
        assert_eq!(
            check(r#"{"iss":"iss","aud":"web","exp":939}"#),
            Err(Status::JwtExpired)
        );
        assert_eq!(check(r#"{"iss":"iss","aud":"api","exp":940}"#), Ok(()));
        assert_eq!(
            check(r#"{"iss":"iss","aud":"api","nbf":1061}"#),
            Err(Status::JwtNotYetValid)
        );
        assert_eq!(check(r#"{"iss":"iss","aud":"api","nbf":1060}"#), Ok(()));
        let overridden = ["web".to_string()];
        assert_eq!(
            check_claims(
                &p,
                Some(&overridden),
                &jwt(r#"{"iss":"iss","aud":"web"}"#),
                now
            ),
            Ok(())
        );
    }

    #[test]
    fn expiration_subject_and_lifetime() {
        let p = provider(
            r#"{"require_expiration":true,"max_lifetime":"3600s","clock_skew_seconds":5,
                "subjects":{"prefix":"spiffe://"}}"#,
        );
        let now = 1_000;
        let check = |claims: &str| check_claims(&p, None, &jwt(claims), now);
        assert_eq!(check(r#"{"sub":"spiffe://a","exp":2000}"#), Ok(()));
        assert_eq!(
            check(r#"{"sub":"spiffe://a"}"#),
            Err(Status::JwtMissingExpiration)
        );
        assert_eq!(
            check(r#"{"sub":"user","exp":2000}"#),
            Err(Status::JwtSubjectNotAllowed)
        );
        assert_eq!(
            check(r#"{"sub":"spiffe://a","exp":4606}"#),
            Err(Status::JwtLifetimeTooLong)
        );
        assert_eq!(
            check(r#"{"sub":"spiffe://a","exp":994}"#),
            Err(Status::JwtExpired)
        );
    }
}
