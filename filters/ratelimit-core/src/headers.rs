//! Response headers: draft-ietf-httpapi-ratelimit-headers-11 (`RateLimit-Policy`, `RateLimit`),
//! `Retry-After`, and optionally Envoy's DRAFT_VERSION_03 `X-RateLimit-*`.

use crate::limiter::{Decision, Verdict};

/// Seconds until the next token, rounded up (a client that waits this long finds one).
pub fn seconds_until_token(v: &Verdict) -> u64 {
    v.taken.next_fill_ms.div_ceil(1000)
}

/// `RateLimit-Policy: "<name>";q=<quota>;w=<window>`.
pub fn policy(v: &Verdict) -> String {
    format!(
        "\"{}\";q={};w={}",
        v.name,
        v.bucket.max_tokens,
        v.bucket.window_secs()
    )
}

/// `RateLimit: "<name>";r=<remaining>;t=<seconds until a fill>`.
pub fn ratelimit(v: &Verdict) -> String {
    format!(
        "\"{}\";r={};t={}",
        v.name,
        v.taken.remaining,
        seconds_until_token(v)
    )
}

/// The headers of a response to a request with this decision. `limited` adds `Retry-After`.
pub fn render(decision: &Decision, legacy: bool) -> Vec<(&'static str, String)> {
    let Some(v) = decision.reported() else {
        return Vec::new();
    };
    let mut headers = vec![("ratelimit-policy", policy(v)), ("ratelimit", ratelimit(v))];
    if !v.taken.allowed {
        headers.push(("retry-after", seconds_until_token(v).max(1).to_string()));
    }
    if legacy {
        headers.push(("x-ratelimit-limit", v.bucket.max_tokens.to_string()));
        headers.push(("x-ratelimit-remaining", v.taken.remaining.to_string()));
        headers.push(("x-ratelimit-reset", seconds_until_token(v).to_string()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::{Bucket, Taken};

    fn verdict(
        name: &str,
        allowed: bool,
        remaining: u64,
        next_fill_ms: u64,
        shadow: bool,
    ) -> Verdict {
        Verdict {
            name: name.into(),
            bucket: Bucket {
                max_tokens: 50,
                tokens_per_fill: 50,
                fill_interval_ms: 3_600_000,
            },
            taken: Taken {
                allowed,
                remaining,
                next_fill_ms,
            },
            shadow,
            overflow: false,
        }
    }

    #[test]
    fn formats_draft_11_and_legacy() {
        let d = Decision {
            verdicts: vec![verdict("per_user", false, 0, 41_500, false)],
            ..Decision::default()
        };
        let h = render(&d, true);
        assert_eq!(
            h,
            vec![
                ("ratelimit-policy", "\"per_user\";q=50;w=3600".to_string()),
                ("ratelimit", "\"per_user\";r=0;t=42".to_string()),
                ("retry-after", "42".to_string()),
                ("x-ratelimit-limit", "50".to_string()),
                ("x-ratelimit-remaining", "0".to_string()),
                ("x-ratelimit-reset", "42".to_string()),
            ]
        );
    }

    #[test]
    fn reports_the_closest_to_empty_and_ignores_shadow() {
        let d = Decision {
            verdicts: vec![
                verdict("a", true, 10, 1000, false),
                verdict("b", true, 3, 1000, false),
                verdict("s", false, 0, 1000, true),
            ],
            ..Decision::default()
        };
        assert!(d.limited_by().is_none());
        assert_eq!(d.reported().map(|v| v.name.as_str()), Some("b"));
        assert_eq!(d.shadow_limited().count(), 1);
        assert!(render(&d, false).iter().all(|(n, _)| *n != "retry-after"));
    }
}
