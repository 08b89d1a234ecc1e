//! Prometheus metrics served at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: 50 µs to 5 s.
const BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    kind: &'static str,
    decision: &'static str,
}

/// The `kind` label: one of a fixed set.
fn kind_label(kind: &str) -> &'static str {
    const EXTENSIONS: [&str; 3] = ["WasmPlugin", "EnvoyFilter", "EnvoyExtensionPolicy"];
    crate::workload::known_kind(kind)
        .or_else(|| EXTENSIONS.into_iter().find(|k| *k == kind))
        .unwrap_or("other")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyOutcomeLabels {
    policy: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLoadLabels {
    policy: String,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ImageLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    reason: &'static str,
}

/// The webhook's metrics.
pub struct Metrics {
    registry: Registry,
    reviews: Family<ReviewLabels, Counter>,
    review_seconds: Histogram,
    policy_seconds: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    policy_outcomes: Family<PolicyOutcomeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    image_seconds: Family<ImageLabels, Histogram, fn() -> Histogram>,
    wasm_instantiation_seconds: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    wasm_code_loads: Family<CodeLoadLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("meshgate_admission");
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "reviews",
            "AdmissionReviews answered, by object kind and decision (allowed, denied, skipped, invalid)",
            reviews.clone(),
        );
        let review_seconds = histogram();
        registry.register(
            "review_duration_seconds",
            "Time from a review's arrival to its answer",
            review_seconds.clone(),
        );
        let policy_seconds =
            Family::<PolicyLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "policy_evaluation_duration_seconds",
            "Time of one policy evaluation",
            policy_seconds.clone(),
        );
        let policy_outcomes = Family::<PolicyOutcomeLabels, Counter>::default();
        registry.register(
            "policy_evaluations",
            "Policy evaluations by outcome (pass, violation, warning, error)",
            policy_outcomes.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Requests that failed: bad_request, too_large, busy, deadline, internal",
            errors.clone(),
        );
        let image_seconds =
            Family::<ImageLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "image_verification_duration_seconds",
            "Time to check one image (cache hits included), by outcome (verified, denied, unavailable)",
            image_seconds.clone(),
        );
        let wasm_instantiation_seconds =
            Family::<PolicyLabels, Histogram, fn() -> Histogram>::new_with_constructor(histogram);
        registry.register(
            "wasm_instantiation_duration_seconds",
            "Time to instantiate a Wasm policy in a fresh store, per evaluation",
            wasm_instantiation_seconds.clone(),
        );
        let wasm_code_loads = Family::<CodeLoadLabels, Counter>::default();
        registry.register(
            "wasm_code_loads",
            "Wasm policies loaded, by where their compiled code came from (compiled, disk-cache, memory)",
            wasm_code_loads.clone(),
        );
        Self {
            wasm_instantiation_seconds,
            wasm_code_loads,
            image_seconds,
            registry,
            reviews,
            review_seconds,
            policy_seconds,
            policy_outcomes,
            errors,
        }
    }

    /// Counts an answered review. The `kind` label is the kind when it is one the webhook
    /// judges (Pod and the workloads that make pods), else `other`: a label value never comes
    /// from the request as sent, so hostile kinds cannot grow the metrics without bound.
    pub fn review(&self, kind: &str, decision: &'static str, seconds: f64) {
        self.reviews
            .get_or_create(&ReviewLabels {
                kind: kind_label(kind),
                decision,
            })
            .inc();
        self.review_seconds.observe(seconds);
    }

    /// Records one policy evaluation.
    pub fn policy(&self, policy: &str, outcome: &'static str, seconds: f64) {
        self.policy_seconds
            .get_or_create(&PolicyLabels {
                policy: policy.to_string(),
            })
            .observe(seconds);
        self.policy_outcomes
            .get_or_create(&PolicyOutcomeLabels {
                policy: policy.to_string(),
                outcome,
            })
            .inc();
    }

    /// Records one image check.
    pub fn image(&self, outcome: &'static str, seconds: f64) {
        self.image_seconds
            .get_or_create(&ImageLabels { outcome })
            .observe(seconds);
    }

    /// Records the instantiation of a Wasm policy.
    pub fn wasm_instantiation(&self, policy: &str, seconds: f64) {
        self.wasm_instantiation_seconds
            .get_or_create(&PolicyLabels {
                policy: policy.to_string(),
            })
            .observe(seconds);
    }

    /// Counts a Wasm policy's load by where its code came from.
    pub fn wasm_code_load(&self, policy: &str, source: &'static str) {
        self.wasm_code_loads
            .get_or_create(&CodeLoadLabels {
                policy: policy.to_string(),
                source,
            })
            .inc();
    }

    /// Counts a failed request.
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ErrorLabels { reason }).inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
