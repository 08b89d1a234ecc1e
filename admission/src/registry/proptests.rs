//! Property tests of every parser of registry data: manifests and indexes (as read, and as the
//! artifact checks walk them), cosign simple-signing payloads and `.sig` manifests, sigstore
//! bundles. Whatever a registry serves: no panic, a clear error of bounded length (no echo of
//! the input), output bounded by the input.

use proptest::prelude::*;
use serde_json::{Value as Json, json};

use super::{MAX_METADATA_BYTES, MAX_SIGNATURES, Manifest, parse_index};
use crate::artifact::{self, Layout};
use crate::oci::sha256_digest;
use crate::signing::bundle::{self, Bundle};
use crate::signing::{SignatureCheck, keys, legacy};

/// Cases per parser, as CI runs them.
const CASES: u32 = 10_000;

/// Longest error message a parser may return (a fixed phrase, a line/column, a shortened
/// registry string).
const MAX_MESSAGE: usize = 400;

/// Names the parsers look for, so generated objects reach their deeper paths.
const KEYS: &[&str] = &[
    "schemaVersion",
    "mediaType",
    "artifactType",
    "manifests",
    "layers",
    "config",
    "digest",
    "size",
    "platform",
    "os",
    "architecture",
    "annotations",
    "subject",
    "critical",
    "image",
    "docker-manifest-digest",
    "type",
    "identity",
    "docker-reference",
    "optional",
    "dsseEnvelope",
    "messageSignature",
    "payload",
    "payloadType",
    "signatures",
    "sig",
    "_type",
    "predicateType",
    "sha256",
    "dev.cosignproject.cosign/signature",
];

/// Strings the parsers compare against, and some that are not.
fn text() -> impl Strategy<Value = String> {
    let known = proptest::sample::select(vec![
        artifact::WASM_CONFIG.to_string(),
        artifact::WASM_LAYER.to_string(),
        artifact::ISTIO_LAYER.to_string(),
        artifact::COMPONENT_LAYER.to_string(),
        legacy::PAYLOAD_MEDIA_TYPE.to_string(),
        bundle::BUNDLE_MEDIA_TYPE.to_string(),
        bundle::IN_TOTO_PAYLOAD_TYPE.to_string(),
        bundle::STATEMENT_TYPE.to_string(),
        bundle::SIGN_PREDICATE_TYPE.to_string(),
        "wasm".to_string(),
        "wasip1".to_string(),
        format!("sha256:{}", "ab".repeat(32)),
        "ab".repeat(32),
        "MEhUb2tlbg==".to_string(),
    ]);
    // Long strings too: a parser that quotes its input in an error shows up as a long message.
    prop_oneof![
        6 => known,
        2 => "[ -~]{0,40}",
        2 => any::<String>(),
        1 => "[ -~]{500,700}",
    ]
}

/// Arbitrary JSON, biased towards the shapes of manifests, indexes, payloads and bundles.
fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::from),
        text().prop_map(Json::from),
    ];
    leaf.prop_recursive(5, 96, 8, |inner| {
        let key = prop_oneof![
            4 => proptest::sample::select(KEYS).prop_map(str::to_string),
            1 => "[a-z]{0,8}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Json::Array),
            proptest::collection::btree_map(key, inner, 0..8)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// Bytes a registry might serve: generated JSON, JSON with a few bytes changed, or noise.
fn served_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        (json_value(), any::<usize>(), any::<u8>()).prop_map(|(v, at, byte)| {
            let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
            if !bytes.is_empty() {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            bytes
        }),
        proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn manifests_parse_or_fail_with_a_short_phrase(bytes in served_bytes()) {
        match Manifest::parse(bytes.clone(), None) {
            Ok(manifest) => {
                prop_assert!(manifest.json.is_object());
                prop_assert_eq!(&manifest.digest, &sha256_digest(&bytes));
                let _ = (manifest.media_type(), manifest.is_index());
            }
            Err(e) => prop_assert!(e.len() <= MAX_MESSAGE, "{}", e),
        }
        // A digest the bytes do not hash to is refused whatever they hold.
        let other = format!("sha256:{}", "00".repeat(32));
        prop_assert!(Manifest::parse(bytes, Some(&other)).is_err());
    }

    #[test]
    fn indexes_parse_or_fail_with_a_short_phrase(bytes in served_bytes()) {
        match parse_index(&bytes) {
            Ok(index) => prop_assert!(index.manifests.len() <= bytes.len()),
            Err(e) => prop_assert!(e.len() <= MAX_MESSAGE, "{}", e),
        }
    }

    #[test]
    fn artifact_layouts_and_index_entries_never_panic(manifest in json_value()) {
        let size = serde_json::to_string(&manifest).unwrap_or_default().len();
        let layout = Layout::of(&manifest);
        let _ = (layout.wasm_kind(), layout.has_image_config());
        if let Some(layer) = layout.wasm_layer() {
            prop_assert!(layer.len() <= size);
        }
        prop_assert!(layout.describe().len() <= 64 + 3 * size);
        match artifact::index_entries(&manifest) {
            Ok(entries) => {
                let listed = manifest["manifests"].as_array().map_or(0, Vec::len);
                prop_assert!(entries.len() <= listed);
                for entry in entries {
                    prop_assert!(entry.digest.len() + entry.platform.len() <= size);
                }
            }
            Err(e) => prop_assert!(e.len() <= 256 + 3 * size, "{}", e),
        }
    }

    #[test]
    fn cosign_payloads_and_signature_manifests_never_panic(
        payload in served_bytes(),
        manifest in json_value(),
    ) {
        match legacy::parse_payload(&payload) {
            Ok(digest) => prop_assert!(digest.len() <= payload.len()),
            Err(e) => prop_assert!(e.len() <= MAX_MESSAGE, "{}", e),
        }
        let (layers, skipped) = legacy::signature_layers(&manifest);
        prop_assert!(layers.len() <= MAX_SIGNATURES);
        let total = manifest["layers"].as_array().map_or(0, Vec::len);
        prop_assert!(layers.len() + skipped <= total);
        for (_, signature) in &layers {
            if let Err(e) = signature {
                prop_assert!(e.len() <= MAX_MESSAGE, "{}", e);
            }
        }
    }

    #[test]
    fn sigstore_bundles_parse_and_check_without_panic(bytes in bundle_bytes()) {
        let digest = format!("sha256:{}", "ab".repeat(32));
        match Bundle::parse(&bytes) {
            Ok(bundle) => {
                let mut report = SignatureCheck::default();
                bundle.check(&digest, std::slice::from_ref(trusted_key()), &mut report);
                // Nothing here is signed by the trusted key.
                prop_assert!(report.verified.is_empty());
                for reason in &report.rejected {
                    prop_assert!(reason.len() <= MAX_MESSAGE, "{}", reason);
                }
            }
            Err(e) => prop_assert!(e.len() <= MAX_MESSAGE, "{}", e),
        }
    }
}

/// Bundles: near-valid ones (a real media type and envelope around generated statements and
/// signatures) and anything else.
fn bundle_bytes() -> impl Strategy<Value = Vec<u8>> {
    let b64 = |bytes: Vec<u8>| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let near_valid = (
        json_value(),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4),
        prop_oneof![Just(bundle::IN_TOTO_PAYLOAD_TYPE.to_string()), text()],
    )
        .prop_map(move |(statement, sigs, payload_type)| {
            let payload = serde_json::to_vec(&statement).unwrap_or_default();
            let signatures: Vec<Json> = sigs.into_iter().map(|s| json!({"sig": b64(s)})).collect();
            serde_json::to_vec(&json!({
                "mediaType": bundle::BUNDLE_MEDIA_TYPE,
                "dsseEnvelope": {"payload": b64(payload), "payloadType": payload_type,
                                 "signatures": signatures},
            }))
            .unwrap_or_default()
        });
    prop_oneof![near_valid, served_bytes()]
}

/// One Ed25519 key for every case (generating keys per case would dominate the run).
fn trusted_key() -> &'static crate::signing::PublicKey {
    static KEY: std::sync::OnceLock<crate::signing::PublicKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let (private, _) = keys::generate(crate::signing::Algorithm::Ed25519, b"").unwrap();
        let signer = keys::signer(private.as_bytes(), b"").unwrap();
        crate::signing::PublicKey::of_signer("trusted", &signer).unwrap()
    })
}

#[test]
fn oversized_manifests_are_refused_before_parsing() {
    let big = vec![b' '; MAX_METADATA_BYTES + 1];
    let err = Manifest::parse(big.clone(), None).unwrap_err();
    assert!(err.contains("larger than"), "{err}");
    assert!(parse_index(&big).is_err());
}
