//! Images only from allowed registries. Settings: `registries`, a non-empty list of prefixes
//! such as `ghcr.io/acme/` or `registry.example.com/`. Image names are normalised first, as the
//! container runtime does: `nginx` is `docker.io/library/nginx`. The same rule, with the same
//! messages, as the Rego starter `policies/rego/allowed-registries`.

use meshgate_policy::{Policy, Request, Verdict, containers, reject};
use serde::Deserialize;

/// The policy.
pub struct AllowedRegistries;

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Prefixes of allowed image names.
    pub registries: Vec<String>,
}

impl Policy for AllowedRegistries {
    type Settings = Settings;

    fn validate_settings(settings: &Settings) -> Result<(), String> {
        if settings.registries.is_empty() {
            return Err("registries must list at least one prefix".into());
        }
        if let Some(i) = settings.registries.iter().position(|r| r.is_empty()) {
            return Err(format!(
                "registries[{i}] is empty, which would allow every image"
            ));
        }
        Ok(())
    }

    fn validate(request: &Request, settings: &Settings) -> Verdict {
        let pod = match request.pod() {
            Ok(pod) => pod,
            Err(e) => return reject(e),
        };
        let allowed = settings.registries.join(", ");
        let mut violations: Vec<String> = containers(&pod)
            .iter()
            .filter(|c| {
                let name = normalize(c.image());
                !settings
                    .registries
                    .iter()
                    .any(|p| name.starts_with(p.as_str()))
            })
            .map(|c| {
                format!(
                    "{} is not from an allowed registry ({allowed})",
                    c.describe()
                )
            })
            .collect();
        violations.sort();
        violations.dedup();
        Verdict::from_violations(violations)
    }
}

/// The fully qualified image name: the first path component is a registry host when it has a
/// dot or a port, or is `localhost`.
pub fn normalize(image: &str) -> String {
    match image.split_once('/') {
        Some((host, _)) if host.contains('.') || host.contains(':') || host == "localhost" => {
            image.to_string()
        }
        Some(_) => format!("docker.io/{image}"),
        None => format!("docker.io/library/{image}"),
    }
}

meshgate_policy::export_policy!(AllowedRegistries);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_the_runtime_does() {
        assert_eq!(normalize("nginx"), "docker.io/library/nginx");
        assert_eq!(normalize("acme/web:1"), "docker.io/acme/web:1");
        assert_eq!(normalize("ghcr.io/acme/web"), "ghcr.io/acme/web");
        assert_eq!(normalize("127.0.0.1:5000/web"), "127.0.0.1:5000/web");
        assert_eq!(normalize("localhost/web"), "localhost/web");
    }
}
