//! What a signature check reports: signers counted once each, reasons kept once each, and a
//! deny message that says which of the three cases it is.

use super::*;

#[test]
fn a_signer_counts_once_whatever_layouts_and_copies_it_signed_in() {
    let mut report = SignatureCheck::default();
    report.accept("ci", SignatureLayout::Legacy, "key a");
    report.accept("release", SignatureLayout::Bundle, "key b");
    report.accept("ci", SignatureLayout::Bundle, "key a");
    report.accept("ci", SignatureLayout::Legacy, "key a");
    // One entry per (signer, layout); thresholds count distinct signers.
    assert_eq!(report.verified.len(), 3);
    assert_eq!(report.keys(), vec!["ci", "release"]);
}

#[test]
fn the_deny_message_says_whether_nothing_was_found_or_why_none_counted() {
    let mut report = SignatureCheck::default();
    assert_eq!(report.explain(), "no signatures found");
    report.found = 2;
    assert_eq!(
        report.explain(),
        "2 signature(s) found, none by a trusted key"
    );
    report.reject("cosign signature by an untrusted key".into());
    report.reject("cosign signature by an untrusted key".into());
    report.reject("payload is not valid JSON (line 1 column 1)".into());
    assert_eq!(report.rejected.len(), 2, "reasons are kept once");
    assert_eq!(
        report.explain(),
        "2 signature(s) found, none valid: cosign signature by an untrusted key; payload is not valid JSON (line 1 column 1)"
    );
}

#[test]
fn layouts_are_named_as_policies_and_summaries_see_them() {
    assert_eq!(SignatureLayout::Legacy.as_str(), "cosign");
    assert_eq!(SignatureLayout::Bundle.as_str(), "sigstore-bundle");
}

#[test]
fn a_bad_reference_is_named_in_the_error() {
    let err = parse_reference("two words:tag").unwrap_err().to_string();
    assert!(err.starts_with("invalid reference two words:tag"), "{err}");
}

#[test]
fn one_signer_matching_two_names_counts_once() {
    // One CI identity matches both `any-release` (a broad regex) and `main-release`.
    let mut report = SignatureCheck::default();
    report.accept("any-release", SignatureLayout::Bundle, "identity ci@main");
    report.accept("main-release", SignatureLayout::Bundle, "identity ci@main");
    assert_eq!(report.keys().len(), 1, "{:?}", report.keys());
    // A second, independent signer lets both names count, whichever it matches.
    report.accept("any-release", SignatureLayout::Legacy, "identity ci@tag");
    assert_eq!(report.keys(), vec!["any-release", "main-release"]);
    // One key listed under two names is one signer.
    let mut keys = SignatureCheck::default();
    keys.accept("team-a", SignatureLayout::Legacy, "key sha256:1");
    keys.accept("team-b", SignatureLayout::Legacy, "key sha256:1");
    assert_eq!(keys.keys().len(), 1);
}

#[test]
fn of_several_attestations_of_one_type_the_newest_counts_whatever_the_order() {
    let mut report = SignatureCheck::default();
    let slsa = "https://slsa.dev/provenance/v1";
    report.attest(slsa, &serde_json::json!({"scan": "today"}), 200);
    // An older one pushed again, listed later or earlier, does not displace it.
    report.attest(slsa, &serde_json::json!({"scan": "last week"}), 100);
    assert_eq!(report.attestations[slsa].1["scan"], "today");
    report.attest(slsa, &serde_json::json!({"scan": "tomorrow"}), 300);
    assert_eq!(report.attestations[slsa].1["scan"], "tomorrow");
    // A predicate over the cap is refused with a reason, not kept.
    let big = serde_json::json!({"x": "y".repeat(MAX_PREDICATE_BYTES)});
    report.attest("big", &big, 1);
    assert!(!report.attestations.contains_key("big"));
    assert!(report.rejected.iter().any(|r| r.contains("larger than")));
}
