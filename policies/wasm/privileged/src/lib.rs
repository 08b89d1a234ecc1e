//! No privileged containers, no privilege escalation and no root-equivalent capabilities on
//! Wasm RuntimeClasses: a Wasm sandbox means nothing if its host process runs with the node's
//! privileges. As the Pod Security Standards' "restricted" profile, every container (init and
//! ephemeral too) must set `allowPrivilegeEscalation: false` explicitly: Kubernetes allows
//! escalation when it is unset. The same rule, with the same messages, as the Rego starter
//! `policies/rego/privileged`; both run against its case file.

use meshgate_policy::{NoSettings, Policy, Request, Verdict, containers, reject};

/// Capabilities that amount to root on the node.
const PRIVILEGED_CAPABILITIES: [&str; 3] = ["ALL", "SYS_ADMIN", "CAP_SYS_ADMIN"];

/// The policy.
pub struct Privileged;

impl Policy for Privileged {
    type Settings = NoSettings;

    fn validate(request: &Request, _settings: &NoSettings) -> Verdict {
        let pod = match request.pod() {
            Ok(pod) => pod,
            Err(e) => return reject(e),
        };
        let mut violations = Vec::new();
        for c in containers(&pod) {
            let context = c.security_context();
            if context.and_then(|s| s.allow_privilege_escalation) != Some(false) {
                violations.push(format!(
                    "{} allows privilege escalation (securityContext.allowPrivilegeEscalation must be false)",
                    c.describe()
                ));
            }
            let Some(context) = context else {
                continue;
            };
            if context.privileged == Some(true) {
                violations.push(format!("{} is privileged", c.describe()));
            }
            let added = context.capabilities.as_ref().and_then(|c| c.add.as_ref());
            for capability in added.into_iter().flatten() {
                if PRIVILEGED_CAPABILITIES.contains(&capability.to_uppercase().as_str()) {
                    violations.push(format!("{} adds capability {capability}", c.describe()));
                }
            }
        }
        // Rego returns its messages as a sorted set; so does this.
        violations.sort();
        violations.dedup();
        Verdict::from_violations(violations)
    }
}

meshgate_policy::export_policy!(Privileged);
