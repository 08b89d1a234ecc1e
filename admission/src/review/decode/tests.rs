use proptest::prelude::*;
use serde_json::json;

use super::*;

const LIMITS: ParseLimits = ParseLimits {
    max_values: 2_000,
    max_depth: 32,
};

fn request() -> Json {
    json!({
        "uid": "u-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "apps",
        "operation": "CREATE",
        "userInfo": {"username": "alice", "groups": ["dev"]},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
                   "spec": {"runtimeClassName": "spin", "containers": [{"name": "c", "image": "i"}]}},
        "oldObject": null,
        "dryRun": false,
    })
}

fn review_of(request: Json) -> Json {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

fn bytes(value: &Json) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// Values and depth of a tree.
fn measure(value: &Json) -> (usize, usize) {
    match value {
        Json::Array(items) => items
            .iter()
            .map(measure)
            .fold((1, 1), |(n, d), (cn, cd)| (n + cn, d.max(cd + 1))),
        Json::Object(members) => members
            .values()
            .map(measure)
            .fold((1, 1), |(n, d), (cn, cd)| (n + cn, d.max(cd + 1))),
        _ => (1, 1),
    }
}

fn string_bytes(value: &Json) -> usize {
    match value {
        Json::String(s) => s.len(),
        Json::Array(items) => items.iter().map(string_bytes).sum(),
        Json::Object(members) => members.iter().map(|(k, v)| k.len() + string_bytes(v)).sum(),
        _ => 0,
    }
}

/// Whatever the outcome, the tree kept is within the limits and no larger than the body.
fn check_bounded(body: &[u8], outcome: &Result<Review, ReviewError>, limits: ParseLimits) {
    if let Ok(review) = outcome {
        let (values, depth) = measure(&review.request);
        assert!(values <= limits.max_values, "{values} values");
        assert!(depth <= limits.max_depth, "depth {depth}");
        assert!(string_bytes(&review.request) <= body.len());
    }
}

#[test]
fn a_review_parses_into_what_the_server_needs() {
    let review = parse(&bytes(&review_of(request())), LIMITS).unwrap();
    assert_eq!(review.uid, "u-1");
    assert_eq!(review.kind, "Pod");
    assert_eq!(review.namespace, "apps");
    assert_eq!(review.name, "web-");
    assert_eq!(review.operation, Operation::Create);
    assert_eq!(review.request, request());
}

#[test]
fn each_failure_says_what_is_wrong() {
    let err = |body: &[u8]| parse(body, LIMITS).unwrap_err();
    assert!(matches!(err(b"{not json"), ReviewError::Syntax(_)));
    assert!(err(b"{not json").to_string().starts_with("malformed JSON"));
    assert!(matches!(err(b"[1]"), ReviewError::Shape(_)));
    assert!(matches!(
        err(br#"{"apiVersion": 1, "kind": "AdmissionReview"}"#),
        ReviewError::Shape(_)
    ));
    let long = "x".repeat(100_000);
    let e = err(&bytes(
        &json!({"apiVersion": long, "kind": "AdmissionReview"}),
    ));
    assert!(matches!(e, ReviewError::NotAReview { .. }));
    assert!(e.to_string().len() < 200, "{e}");
    assert_eq!(
        err(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":null}"#),
        ReviewError::NoRequest
    );
    let e = err(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"b-1","operation":"CREATE"}}"#);
    assert_eq!(
        e,
        ReviewError::Invalid {
            uid: Some("b-1".into()),
            message: "missing field `kind`".into()
        }
    );
}

#[test]
fn request_text_in_errors_is_cut_and_escaped() {
    let forged = "X\n2026-12-02T00:21:00Z  INFO meshgate_admission::server: review uid=forged";
    for (field, value) in [
        ("operation", json!(forged)),
        ("dryRun", json!("d".repeat(1 << 20))),
        ("operation", json!("o".repeat(1 << 20))),
    ] {
        let mut r = request();
        r[field] = value;
        let Err(ReviewError::Invalid { uid, message }) = parse(&bytes(&review_of(r)), LIMITS)
        else {
            panic!("{field}: not invalid");
        };
        assert_eq!(uid.as_deref(), Some("u-1"));
        assert!(message.len() <= 256 + 3, "{field}: {} bytes", message.len());
        assert!(!message.contains('\n'), "{field}: {message}");
        if field == "operation" && message.contains("X\\n") {
            assert!(message.contains("unknown variant"), "{message}");
        }
    }
}

#[test]
fn a_huge_array_is_refused_after_the_budget_with_the_uid() {
    let mut r = request();
    r["object"]["spec"]["containers"][0]["args"] = json!(vec![0; 1_000_000]);
    let body = bytes(&review_of(r));
    match parse(&body, LIMITS).unwrap_err() {
        ReviewError::Invalid { uid, message } => {
            assert_eq!(uid.as_deref(), Some("u-1"));
            assert!(
                message.starts_with("more than 2000 JSON values"),
                "{message}"
            );
        }
        e => panic!("{e}"),
    }
}

#[test]
fn a_huge_string_is_kept_once() {
    let mut r = request();
    r["object"]["metadata"]["annotations"] = json!({"big": "é".repeat(1 << 20)});
    let body = bytes(&review_of(r.clone()));
    let review = parse(&body, LIMITS).unwrap();
    assert_eq!(review.request, r);
    assert!(string_bytes(&review.request) <= body.len());
}

#[test]
fn nesting_up_to_the_limit_is_kept() {
    // The request is depth 1, so 31 levels below it reach the limit of 32.
    let mut deep = json!(0);
    for _ in 0..30 {
        deep = json!([deep]);
    }
    let mut r = request();
    r["deep"] = deep;
    assert_eq!(measure(&r).1, LIMITS.max_depth);
    let review = parse(&bytes(&review_of(r.clone())), LIMITS).unwrap();
    assert_eq!(review.request, r);
    r["deep"] = json!([r["deep"].clone()]);
    let e = parse(&bytes(&review_of(r)), LIMITS).unwrap_err();
    assert!(
        e.to_string().contains("nested deeper than 32 levels"),
        "{e}"
    );
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    for depth in [LIMITS.max_depth, 100, 127, 128, 129, 10_000, 1_000_000] {
        let mut r = request();
        r["object"] = Json::Null;
        let body = bytes(&review_of(r));
        let text = String::from_utf8(body).unwrap();
        // The request object is depth 1; `deep` adds `depth` more levels.
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let text = text.replacen("\"uid\"", &format!("\"deep\":{nested},\"uid\""), 1);
        let e = parse(text.as_bytes(), LIMITS).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("nested deeper than 32 levels")
                || message.contains("recursion limit exceeded"),
            "{depth}: {message}"
        );
    }
}

fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Any JSON value: odd numbers and characters, now and then a long string, nesting up to the
/// recursion depth (deeper nesting has its own test).
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        4 => Just(Json::Null),
        4 => any::<bool>().prop_map(Json::Bool),
        4 => any::<i64>().prop_map(|n| json!(n)),
        4 => any::<u64>().prop_map(|n| json!(n)),
        4 => any::<f64>().prop_map(|f| json!(f)),
        8 => text(20).prop_map(Json::String),
        1 => (0usize..8_192).prop_map(|n| Json::String("é".repeat(n / 2))),
    ];
    leaf.prop_recursive(8, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Json::Array),
            prop::collection::btree_map(text(8), inner, 0..8)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// Paths of a review where a mutation lands.
const SPOTS: [&[&str]; 14] = [
    &[],
    &["apiVersion"],
    &["kind"],
    &["request"],
    &["request", "uid"],
    &["request", "kind"],
    &["request", "kind", "kind"],
    &["request", "resource"],
    &["request", "operation"],
    &["request", "userInfo"],
    &["request", "name"],
    &["request", "object"],
    &["request", "object", "metadata"],
    &["request", "object", "spec", "containers"],
];

fn mutated(spot: usize, value: Json) -> Json {
    let mut review = review_of(request());
    let path = SPOTS[spot % SPOTS.len()];
    let Some((last, parents)) = path.split_last() else {
        return value;
    };
    let mut at = &mut review;
    for key in parents {
        at = &mut at[*key];
    }
    at[*last] = value;
    review
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    /// Bytes that are mostly not JSON: an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let outcome = parse(&body, LIMITS);
        check_bounded(&body, &outcome, LIMITS);
    }

    /// A real review with one field replaced by any JSON value: parsed within the limits, or
    /// refused with a message; a refused request whose uid survived keeps it.
    #[test]
    fn mutated_reviews_are_parsed_within_bounds_or_refused(spot in 0usize..SPOTS.len(), value in any_json()) {
        let review = mutated(spot, value);
        let body = bytes(&review);
        let outcome = parse(&body, LIMITS);
        check_bounded(&body, &outcome, LIMITS);
        if let Err(e) = &outcome {
            let text = e.to_string();
            prop_assert!(text.len() <= 512, "{} bytes: {}", text.len(), text);
            prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
        }
        match &outcome {
            Ok(r) => prop_assert_eq!(Some(r.uid.as_str()), review["request"]["uid"].as_str()),
            Err(ReviewError::Invalid { uid, message }) => {
                prop_assert!(!message.is_empty());
                prop_assert_eq!(uid.as_deref(), review["request"]["uid"].as_str());
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Any text: control characters escaped, at most `max` bytes and the cut mark, a prefix of
    /// the escaped text.
    #[test]
    fn clipped_text_is_escaped_and_bounded(s in text(200), max in 0usize..300) {
        let clipped = clip_to(&s, max);
        prop_assert!(clipped.len() <= max + '…'.len_utf8(), "{:?}", clipped);
        prop_assert!(!clipped.chars().any(char::is_control), "{:?}", clipped);
        let escaped: String = s
            .chars()
            .flat_map(|c| {
                let e: Vec<char> = if c.is_control() { c.escape_default().collect() } else { vec![c] };
                e
            })
            .collect();
        let kept = clipped.strip_suffix('…').unwrap_or(&clipped);
        prop_assert!(escaped.starts_with(kept), "{:?} / {:?}", clipped, escaped);
        prop_assert_eq!(clipped == escaped, escaped.len() <= max);
    }

    /// A review cut short or with a byte changed: an error or a bounded review.
    #[test]
    fn damaged_reviews_never_panic(cut in 0usize..4096, at in 0usize..4096, byte in any::<u8>()) {
        let mut body = bytes(&review_of(request()));
        let len = body.len();
        if let Some(b) = body.get_mut(at % len) {
            *b = byte;
        }
        body.truncate(cut.max(1));
        let outcome = parse(&body, LIMITS);
        check_bounded(&body, &outcome, LIMITS);
    }

    /// Wide arrays and objects: refused exactly when the request holds more values than the
    /// budget.
    #[test]
    fn the_value_budget_is_exact(n in 0usize..300, as_object in any::<bool>()) {
        let limits = ParseLimits { max_values: 200, ..LIMITS };
        let mut r = request();
        let filler = if as_object {
            Json::Object((0..n).map(|i| (i.to_string(), json!(i))).collect())
        } else {
            json!(vec![0; n])
        };
        r["filler"] = filler;
        let (values, _) = measure(&r);
        let body = bytes(&review_of(r));
        let outcome = parse(&body, limits);
        check_bounded(&body, &outcome, limits);
        prop_assert_eq!(outcome.is_ok(), values <= limits.max_values, "{} values", values);
    }
}
