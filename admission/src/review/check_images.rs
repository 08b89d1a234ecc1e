//! The image step: every image of a selected pod checked against the trust rules, the
//! artifact layout and its RuntimeClass's fit; or every module of a WasmPlugin, EnvoyFilter or
//! EnvoyExtensionPolicy checked ([`crate::extensions`]). The facts join the request for the
//! policies (`images`, `modules`). Also what a failed review keeps of these checks.

use serde_json::json;

use super::{Pipeline, Selected, Verdict};
use crate::images::PodImages;
use crate::workload;

impl Pipeline {
    /// Whether image checks are configured.
    pub fn checks_images(&self) -> bool {
        self.images.is_some()
    }

    /// Runs the image checks of a selected pod; their facts join the request as `images`
    /// (image as written → facts) for the policies. For an object that attaches Wasm to
    /// proxies, checks its modules instead; their facts join as `modules`.
    pub async fn check_images(&self, selected: &mut Selected) {
        if let Some(found) = &selected.extension {
            let checks = match (found, &self.modules) {
                (Ok(modules), Some(checker)) => checker.check(modules, self.images.as_ref()).await,
                (Ok(_), None) => crate::extensions::ModuleChecks {
                    violations: vec!["[module-verification] module checks are not loaded".into()],
                    ..Default::default()
                },
                (Err(e), _) => crate::extensions::ModuleChecks {
                    violations: vec![format!("[module-verification] {e}")],
                    ..Default::default()
                },
            };
            selected.request["modules"] = json!(checks.facts);
            selected.images.violations = checks.violations;
            selected.images.warnings = checks.warnings;
            selected.pins = checks.pins;
            return;
        }
        let Some(verifier) = &self.images else { return };
        let request = &selected.request;
        // On UPDATE, images the old pod ran on a Wasm RuntimeClass were judged when it was
        // admitted; an old pod outside the scope (a workload moved onto a Wasm RuntimeClass)
        // vouches for nothing.
        let earlier = Some(&request["oldObject"]["spec"]).filter(|old| {
            request["operation"] == "UPDATE"
                && verifier.keeps_unchanged_images()
                && workload::runtime_class(old).is_some_and(|c| self.runtime_classes.contains(c))
        });
        let images = verifier
            .check_pod(&request["object"]["spec"], earlier)
            .await;
        let mut images = images;
        let class = workload::runtime_class(&request["object"]["spec"]).unwrap_or("");
        if let Some(fit) = self.runtimes.get(class) {
            images
                .violations
                .extend(super::runtime_fit::misfits(class, fit, &images.facts));
        }
        selected.request["images"] = json!(images.facts);
        selected.images = images;
    }

    /// The answer to a review that failed (its deadline passed, its evaluation panicked):
    /// `fallback`, what the server's `failurePolicy` answers, unless the image checks refused
    /// an image, or did not finish while `imageVerification` does not admit unverified images.
    /// The server's `Ignore` is for policy errors: it never admits such an image.
    /// For an object that attaches Wasm (`extension`), module checks that did not finish
    /// deny: a module no one checked is never admitted.
    pub fn after_failure(
        &self,
        subject: &str,
        images: Option<&PodImages>,
        reason: &str,
        extension: bool,
        mut fallback: Verdict,
    ) -> Verdict {
        if extension && images.is_none() {
            return Verdict::deny(format!(
                "{subject}: [module-verification] module checks did not finish; meshgate: {reason}"
            ));
        }
        let Some(verifier) = &self.images else {
            if extension && let Some(images) = images.filter(|i| !i.violations.is_empty()) {
                return Verdict::deny(format!(
                    "{subject}: {}; meshgate: {reason}",
                    images.violations.join("; ")
                ));
            }
            return fallback;
        };
        let violations = match images {
            Some(images) if images.violations.is_empty() => {
                fallback
                    .warnings
                    .splice(0..0, images.warnings.iter().cloned());
                return fallback;
            }
            Some(images) => images.violations.clone(),
            None if verifier.admits_unverified() => {
                fallback
                    .warnings
                    .push("[image-verification] images not verified: the review failed".into());
                return fallback;
            }
            None => vec!["[image-verification] image checks did not finish".into()],
        };
        Verdict {
            allowed: false,
            message: Some(format!(
                "{subject}: {}; meshgate: {reason}",
                violations.join("; ")
            )),
            warnings: Vec::new(),
            skipped: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use std::sync::Arc;

    fn pipeline(image_section: &str) -> Pipeline {
        let text = format!(
            "failurePolicy: Ignore\nimageVerification: {{keys: [], trust: [{{name: t, images: ['**']}}]{image_section}}}"
        );
        let config = Config::parse(&text, "test.yaml", std::path::Path::new("/")).unwrap();
        Pipeline::load(&config, Arc::new(Metrics::new())).unwrap()
    }

    /// What the server's `failurePolicy: Ignore` answers to a failed review.
    fn ignored() -> Verdict {
        Verdict {
            allowed: true,
            message: None,
            warnings: vec!["meshgate: review not finished (ignored)".into()],
            skipped: None,
        }
    }

    #[test]
    fn a_failed_review_keeps_image_denials_and_unfinished_checks_deny() {
        let strict = pipeline("");
        let refused = PodImages {
            violations: vec!["[image-verification] r/a:1: not a Wasm artifact".into()],
            ..PodImages::default()
        };
        let reason = "review not finished";
        let verdict = strict.after_failure("Pod a/b", Some(&refused), reason, false, ignored());
        assert!(!verdict.allowed);
        assert_eq!(
            verdict.message.as_deref(),
            Some(
                "Pod a/b: [image-verification] r/a:1: not a Wasm artifact; meshgate: review not finished"
            )
        );
        let verdict = strict.after_failure("Pod a/b", None, reason, false, ignored());
        assert!(!verdict.allowed, "unverified images are not admitted");
        let verified = PodImages::default();
        assert_eq!(
            strict.after_failure("Pod a/b", Some(&verified), reason, false, ignored()),
            ignored(),
            "verified images leave the failure to the server's failurePolicy"
        );

        let open = pipeline(", failurePolicy: Ignore");
        let verdict = open.after_failure("Pod a/b", None, reason, false, ignored());
        assert!(verdict.allowed);
        assert!(verdict.warnings.iter().any(|w| w.contains("not verified")));
        let verdict = open.after_failure("Pod a/b", Some(&refused), reason, false, ignored());
        assert!(!verdict.allowed, "Ignore never admits a refused image");
    }
}
