//! No privileged containers, no privilege escalation and no root-equivalent capabilities on
//! Wasm RuntimeClasses: a Wasm sandbox means nothing if its host process runs with the node's
//! privileges. From the Pod Security Standards' "restricted" profile: every container (init
//! and ephemeral too) must set `allowPrivilegeEscalation: false` explicitly (Kubernetes allows
//! escalation when it is unset), none may be privileged, and none may add a capability other
//! than NET_BIND_SERVICE. From the "baseline" profile: /proc stays masked, only the safe
//! sysctls, no Unconfined seccomp, no Windows HostProcess. Dropping ALL capabilities is not
//! required. The same rule, with the same messages, as the Rego starter
//! `policies/rego/privileged`; both run against its case file.

use meshgate_policy::k8s_openapi::api::core::v1::{SeccompProfile, WindowsSecurityContextOptions};
use meshgate_policy::{NoSettings, Policy, Request, Verdict, containers, reject};

/// The one capability a container may add: any other (SYS_MODULE, SYS_PTRACE, BPF, ...) is a
/// way to root on the node.
const ADDABLE_CAPABILITY: &str = "NET_BIND_SERVICE";

/// The Pod Security Standards' safe sysctls (Kubernetes 1.32): namespaced and isolated from
/// other pods. Names are compared exactly, so `kernel/core_pattern` is not safe either.
const SAFE_SYSCTLS: [&str; 12] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_wmem",
];

/// Seccomp profile types that confine: any other type set (Unconfined) is denied.
const CONFINING_SECCOMP: [&str; 2] = ["RuntimeDefault", "Localhost"];

/// Whether `capability` names NET_BIND_SERVICE as the container runtime reads it: any case,
/// with or without `CAP_`.
fn addable(capability: &str) -> bool {
    let upper = capability.to_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper) == ADDABLE_CAPABILITY
}

/// The profile's type when it is set to one that does not confine.
fn unconfined(profile: Option<&SeccompProfile>) -> Option<&str> {
    profile
        .map(|p| p.type_.as_str())
        .filter(|kind| !CONFINING_SECCOMP.contains(kind))
}

/// Whether Windows options ask for a HostProcess container (the node's own processes).
fn host_process(options: Option<&WindowsSecurityContextOptions>) -> bool {
    options.and_then(|o| o.host_process) == Some(true)
}

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
        let pod_context = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        if let Some(context) = pod_context {
            for sysctl in context.sysctls.iter().flatten() {
                if !SAFE_SYSCTLS.contains(&sysctl.name.as_str()) {
                    violations.push(format!(
                        "pod sets sysctl {} (not in the Pod Security Standards' safe set)",
                        sysctl.name
                    ));
                }
            }
            if let Some(kind) = unconfined(context.seccomp_profile.as_ref()) {
                violations.push(format!(
                    "pod sets seccompProfile type {kind} (must be RuntimeDefault or Localhost)"
                ));
            }
            if host_process(context.windows_options.as_ref()) {
                violations.push(
                    "pod is a Windows HostProcess pod (securityContext.windowsOptions.hostProcess must not be true)"
                        .to_owned(),
                );
            }
        }
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
                if !addable(capability) {
                    violations.push(format!(
                        "{} adds capability {capability} (only NET_BIND_SERVICE may be added)",
                        c.describe()
                    ));
                }
            }
            // Unmasked exposes the host's /proc (sysrq-trigger, kcore) to the container.
            if let Some(mount) = context.proc_mount.as_deref().filter(|m| *m != "Default") {
                violations.push(format!(
                    "{} sets procMount {mount} (only Default is allowed)",
                    c.describe()
                ));
            }
            if let Some(kind) = unconfined(context.seccomp_profile.as_ref()) {
                violations.push(format!(
                    "{} sets seccompProfile type {kind} (must be RuntimeDefault or Localhost)",
                    c.describe()
                ));
            }
            if host_process(context.windows_options.as_ref()) {
                violations.push(format!(
                    "{} is a Windows HostProcess container (securityContext.windowsOptions.hostProcess must not be true)",
                    c.describe()
                ));
            }
        }
        // Rego returns its messages as a sorted set; so does this.
        violations.sort();
        violations.dedup();
        Verdict::from_violations(violations)
    }
}

meshgate_policy::export_policy!(Privileged);

#[cfg(test)]
mod tests {
    use super::*;
    // The SDK's own serde_json, so the test needs no dependency of its own.
    use meshgate_policy::k8s_openapi::serde_json;

    #[test]
    fn only_net_bind_service_is_addable_in_any_spelling() {
        for name in [
            "NET_BIND_SERVICE",
            "net_bind_service",
            "CAP_NET_BIND_SERVICE",
            "cap_Net_Bind_Service",
        ] {
            assert!(addable(name), "{name}");
        }
        for name in [
            "SYS_ADMIN",
            "CAP_SYS_MODULE",
            "sys_ptrace",
            "BPF",
            "ALL",
            "",
            "CAP_",
            "CAP_CAP_NET_BIND_SERVICE",
            " NET_BIND_SERVICE",
            "NET_BIND_SERVICE_X",
        ] {
            assert!(!addable(name), "{name}");
        }
    }

    #[test]
    fn every_rule_names_its_container() {
        let request: Request = serde_json::from_value(serde_json::json!({
            "object": {"spec": {
                "securityContext": {
                    "sysctls": [{"name": "kernel.core_pattern", "value": "|/x"}, {"name": "net.ipv4.tcp_syncookies", "value": "1"}],
                    "seccompProfile": {"type": "Unconfined"},
                    "windowsOptions": {"hostProcess": true},
                },
                "containers": [{"name": "app", "image": "i", "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"add": ["SYS_MODULE", "NET_BIND_SERVICE"]},
                    "procMount": "Unmasked",
                    "seccompProfile": {"type": "Unconfined"},
                    "windowsOptions": {"hostProcess": true},
                }}],
            }},
        }))
        .unwrap();
        let verdict = Privileged::validate(&request, &NoSettings {});
        assert!(!verdict.allowed);
        let message = verdict.message.unwrap();
        let messages: Vec<&str> = message.split("; ").collect();
        assert_eq!(
            messages,
            [
                r#"container "app" (image i) adds capability SYS_MODULE (only NET_BIND_SERVICE may be added)"#,
                r#"container "app" (image i) is a Windows HostProcess container (securityContext.windowsOptions.hostProcess must not be true)"#,
                r#"container "app" (image i) sets procMount Unmasked (only Default is allowed)"#,
                r#"container "app" (image i) sets seccompProfile type Unconfined (must be RuntimeDefault or Localhost)"#,
                "pod is a Windows HostProcess pod (securityContext.windowsOptions.hostProcess must not be true)",
                "pod sets seccompProfile type Unconfined (must be RuntimeDefault or Localhost)",
                "pod sets sysctl kernel.core_pattern (not in the Pod Security Standards' safe set)",
            ]
        );
    }
}
