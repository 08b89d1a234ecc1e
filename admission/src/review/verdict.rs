//! The last step: the combined [`Verdict`], and what the server answers when a review fails.

use kube_core::admission::AdmissionResponse;

use crate::config::FailurePolicy;

/// Longest `status.message` of an answer: a denial listing every one of thousands of
/// containers is cut, saying how much was left out.
const ANSWER_MESSAGE_BYTES: usize = 16 << 10;

/// Longest total of an answer's warnings; the rest are counted, not sent.
const ANSWER_WARNING_BYTES: usize = 16 << 10;

/// The answer to one review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request is admitted.
    pub allowed: bool,
    /// The denial message: every failed check, each prefixed with its policy.
    pub message: Option<String>,
    /// Warnings returned to the client (warn-mode findings, ignored failures).
    pub warnings: Vec<String>,
    /// Set when no policy ran because the request is out of scope; says why.
    pub skipped: Option<String>,
}

impl Verdict {
    /// A denial with this message.
    pub fn deny(message: String) -> Self {
        Self {
            allowed: false,
            message: Some(message),
            warnings: Vec::new(),
            skipped: None,
        }
    }

    /// Out of scope: admitted without evaluation, saying why.
    pub(crate) fn skip(reason: String) -> Self {
        Self {
            allowed: true,
            message: None,
            warnings: Vec::new(),
            skipped: Some(reason),
        }
    }

    /// The AdmissionReview answer for the request `uid`: 403 with the (capped) message when
    /// denied, the warnings capped in number and size.
    pub fn to_response(&self, uid: String) -> AdmissionResponse {
        // `invalid` starts from a v1 AdmissionReview answer; the rest is set here.
        let mut response = AdmissionResponse::invalid("");
        response.uid = uid;
        response.allowed = self.allowed;
        response.result = Default::default();
        if !self.allowed {
            response = response.deny(cap_message(
                self.message.as_deref().unwrap_or_default(),
                ANSWER_MESSAGE_BYTES,
            ));
            response.result.code = 403;
            response.result.reason = "Forbidden".into();
        }
        if !self.warnings.is_empty() {
            response.warnings = Some(cap_warnings(&self.warnings, ANSWER_WARNING_BYTES));
        }
        response
    }

    /// The decision label used in logs and metrics.
    pub fn decision(&self) -> &'static str {
        match (self.allowed, &self.skipped) {
            (false, _) => "denied",
            (true, Some(_)) => "skipped",
            (true, None) => "allowed",
        }
    }
}

/// What the server's `failurePolicy` answers to a review that could not be finished.
pub fn after_internal_failure(failure_policy: FailurePolicy, reason: &str) -> Verdict {
    match failure_policy {
        FailurePolicy::Fail => Verdict::deny(format!("meshgate: {reason}")),
        FailurePolicy::Ignore => Verdict {
            allowed: true,
            message: None,
            warnings: vec![format!("meshgate: {reason} (ignored)")],
            skipped: None,
        },
    }
}

/// `message` cut to at most `max` bytes at a character boundary, saying how many were left out.
fn cap_message(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_string();
    }
    let note_room = 40;
    let end = (0..=max.saturating_sub(note_room))
        .rev()
        .find(|&i| message.is_char_boundary(i))
        .unwrap_or(0);
    format!("{}… ({} more bytes)", &message[..end], message.len() - end)
}

/// As many of `warnings` as fit in `max` bytes (each cut to a quarter of it), then how many
/// were left out.
fn cap_warnings(warnings: &[String], max: usize) -> Vec<String> {
    let mut kept = Vec::new();
    let mut used = 0;
    for (i, warning) in warnings.iter().enumerate() {
        let warning = cap_message(warning, max / 4);
        if used + warning.len() > max {
            kept.push(format!("… and {} more warnings", warnings.len() - i));
            break;
        }
        used += warning.len();
        kept.push(warning);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_is_a_403_with_its_message_capped_at_a_char_boundary() {
        let long = "é".repeat(ANSWER_MESSAGE_BYTES);
        let response = Verdict::deny(long.clone()).to_response("uid-1".into());
        assert_eq!(response.uid, "uid-1");
        assert!(!response.allowed);
        assert_eq!(response.result.code, 403);
        assert_eq!(response.result.reason, "Forbidden");
        let message = &response.result.message;
        assert!(message.len() <= ANSWER_MESSAGE_BYTES, "{}", message.len());
        assert!(message.ends_with("more bytes)"), "{message}");
        assert_eq!(
            Verdict::deny("short".into())
                .to_response(String::new())
                .result
                .message,
            "short"
        );
    }

    #[test]
    fn warnings_are_capped_in_total_and_counted() {
        let verdict = Verdict {
            allowed: true,
            message: None,
            warnings: vec!["w".repeat(ANSWER_WARNING_BYTES / 8); 100],
            skipped: None,
        };
        let response = verdict.to_response("u".into());
        assert!(response.allowed);
        let warnings = response.warnings.unwrap_or_default();
        let total: usize = warnings.iter().map(String::len).sum();
        assert!(total <= ANSWER_WARNING_BYTES + 64, "{total}");
        assert_eq!(
            warnings.last().map(String::as_str),
            Some("… and 92 more warnings")
        );
    }

    #[test]
    fn internal_failures_follow_the_failure_policy() {
        let fail = after_internal_failure(FailurePolicy::Fail, "deadline");
        assert!(!fail.allowed);
        assert_eq!(fail.message.as_deref(), Some("meshgate: deadline"));
        let ignore = after_internal_failure(FailurePolicy::Ignore, "deadline");
        assert!(ignore.allowed);
        assert_eq!(ignore.warnings, vec!["meshgate: deadline (ignored)"]);
    }
}
