//! Images only from allowed registries. Settings: `registries`, a non-empty list of entries,
//! each a registry host optionally followed by repository path segments: `ghcr.io/acme` (or
//! `ghcr.io/acme/`) allows `ghcr.io/acme/app` and `ghcr.io/acme/team/app`, not
//! `ghcr.io/acme-evil/app`; `127.0.0.1:*` allows that host on any port. Hosts and path segments
//! are compared whole, never as string prefixes. Image names are normalised first, as the container runtime does: `nginx` is
//! `docker.io/library/nginx`. The same rule, with the same messages, as the Rego starter
//! `policies/rego/allowed-registries`; both run against its case file.

use meshgate_policy::{Policy, Request, Verdict, containers, reject};
use serde::Deserialize;

/// The policy.
pub struct AllowedRegistries;

/// The policy's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Allowed registries, each a host and optional repository path segments.
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
        let entries: Vec<Reference> = settings
            .registries
            .iter()
            .map(String::as_str)
            .map(entry)
            .collect();
        let mut violations: Vec<String> = containers(&pod)
            .iter()
            .filter(|c| {
                let reference = image(c.image());
                !entries.iter().any(|e| reference.within(e))
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

/// A registry host (lower case, Docker Hub as `docker.io`) and repository path segments.
#[derive(Debug, PartialEq, Eq)]
pub struct Reference {
    /// The registry host, with its port if any.
    pub host: String,
    /// The repository's path segments, without tag or digest.
    pub path: Vec<String>,
}

impl Reference {
    /// Docker Hub's one-segment names live under `library/` (`docker.io/nginx` is
    /// `docker.io/library/nginx`); `namespace` (an entry's trailing slash) says the segment is
    /// an organisation instead.
    fn new(host: &str, path: &[&str], namespace: bool) -> Self {
        let host = match host.to_lowercase() {
            old if old == "index.docker.io" => "docker.io".to_string(),
            host => host,
        };
        let mut segments: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        if host == "docker.io" && segments.len() == 1 && !namespace {
            segments.insert(0, "library".into());
        }
        Self {
            host,
            path: segments,
        }
    }

    /// Whether this image is on `entry`'s host under `entry`'s path, segment by segment. A
    /// name with an empty segment (`ghcr.io/acme//app`, or no name at all) is not a valid
    /// reference and is never within anything.
    pub fn within(&self, entry: &Reference) -> bool {
        host_matches(&self.host, &entry.host)
            && self.path.starts_with(&entry.path)
            && !self.path.iter().any(String::is_empty)
    }

    /// `host/path`, for messages and tests.
    pub fn name(&self) -> String {
        std::iter::once(self.host.as_str())
            .chain(self.path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// An entry host `name:*` allows that host on any port, or none (a development registry on
/// a port chosen at start); any other entry host only itself.
fn host_matches(image_host: &str, entry_host: &str) -> bool {
    match entry_host.strip_suffix(":*") {
        Some(name) => without_port(image_host) == name,
        None => image_host == entry_host,
    }
}

/// `host:5000` → `host`, `[::1]:5000` → `[::1]`; a host without a numeric port unchanged.
fn without_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The first path component is a registry host when it has a dot or a port, is `localhost`,
/// or has capitals (repository names cannot), as the container runtime decides.
fn is_registry_host(component: &str) -> bool {
    component.contains('.')
        || component.contains(':')
        || component == "localhost"
        || component.to_lowercase() != component
}

/// An image's host and repository path, tag and digest removed: `nginx:1.27` is `docker.io`,
/// `[library, nginx]`.
pub fn image(image: &str) -> Reference {
    let name = image.split('@').next().unwrap_or_default();
    let parts: Vec<&str> = name.split('/').collect();
    let (host, path) = match parts.split_first() {
        Some((first, rest)) if !rest.is_empty() && is_registry_host(first) => (*first, rest),
        _ => ("docker.io", parts.as_slice()),
    };
    let mut path = path.to_vec();
    if let Some(last) = path.pop() {
        path.push(last.split(':').next().unwrap_or_default());
    }
    Reference::new(host, &path, false)
}

/// An entry's host and path. A first segment that looks like a host is one, even alone
/// (`ghcr.io`); without one the entry names Docker Hub as image names do: `nginx` is
/// `docker.io/library/nginx`, `bitnami/` (a namespace) is `docker.io/bitnami`.
pub fn entry(entry: &str) -> Reference {
    let namespace = entry.ends_with('/');
    let parts: Vec<&str> = entry.trim_end_matches('/').split('/').collect();
    match parts.split_first() {
        Some((first, rest)) if is_registry_host(first) => Reference::new(first, rest, namespace),
        _ => Reference::new("docker.io", &parts, namespace),
    }
}

meshgate_policy::export_policy!(AllowedRegistries);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_the_runtime_does() {
        for (name, expected) in [
            ("nginx", "docker.io/library/nginx"),
            ("nginx:1.27", "docker.io/library/nginx"),
            ("acme/web:1", "docker.io/acme/web"),
            ("docker.io/nginx", "docker.io/library/nginx"),
            ("index.docker.io/bitnami/redis", "docker.io/bitnami/redis"),
            ("ghcr.io/acme/web", "ghcr.io/acme/web"),
            ("GHCR.io/acme/web@sha256:00", "ghcr.io/acme/web"),
            ("127.0.0.1:5000/web:2", "127.0.0.1:5000/web"),
            ("localhost/web", "localhost/web"),
            ("localhost:1", "docker.io/library/localhost"),
        ] {
            assert_eq!(image(name).name(), expected, "{name}");
        }
    }

    #[test]
    fn entries_name_a_host_and_path_segments() {
        for (text, host, path) in [
            ("ghcr.io/acme/", "ghcr.io", &["acme"][..]),
            ("ghcr.io", "ghcr.io", &[]),
            ("nginx", "docker.io", &["library", "nginx"]),
            ("bitnami/", "docker.io", &["bitnami"]),
            ("docker.io/bitnami/", "docker.io", &["bitnami"]),
            ("docker.io/nginx", "docker.io", &["library", "nginx"]),
        ] {
            assert_eq!(
                entry(text),
                Reference {
                    host: host.into(),
                    path: path.iter().map(|s| s.to_string()).collect()
                },
                "{text}"
            );
        }
    }

    #[test]
    fn segments_are_matched_whole() {
        let entries: Vec<Reference> = [
            "ghcr.io/acme/",
            "registry.example.com/team",
            "localhost",
            "127.0.0.1:5000/",
            "docker.io/library/",
            "mirror.example.com:*",
        ]
        .into_iter()
        .map(entry)
        .collect();
        let allowed = |name: &str| entries.iter().any(|e| image(name).within(e));
        for name in [
            "ghcr.io/acme/app:1",
            "ghcr.io/acme/team/app",
            "registry.example.com/team/app",
            "registry.example.com/team",
            "localhost/app",
            "127.0.0.1:5000/web",
            "nginx:1.27",
            "mirror.example.com:5443/app",
            "mirror.example.com/app",
        ] {
            assert!(allowed(name), "{name} should be allowed");
        }
        for name in [
            "ghcr.io/acme-evil/app:1",
            "registry.example.com/team-evil/app",
            "registry.example.com.evil/team/app",
            "localhost.attacker.com/x",
            "localhost:5000/app",
            "127.0.0.1:50000/web",
            "bitnami/redis",
            "",
            "ghcr.io/acme//app",
            "mirror.example.com.evil:5443/app",
            "mirror.example.com:5443x/app",
        ] {
            assert!(!allowed(name), "{name} should be denied");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        /// Whatever the names, parsing does not panic, yields no more segments than the text
        /// has (plus `library`), and an allowed image's normalised name is the entry's, or
        /// continues it at a `/`: never a string prefix inside a segment or host.
        #[test]
        fn matches_end_at_segment_boundaries(
            name in "[a-zA-Z0-9./:@_-]{0,40}",
            allowed in "[a-zA-Z0-9./:_-]{0,24}",
        ) {
            let reference = image(&name);
            let granted = entry(&allowed);
            proptest::prop_assert!(reference.path.len() <= name.matches('/').count() + 2);
            proptest::prop_assert!(granted.path.len() <= allowed.matches('/').count() + 2);
            if reference.within(&granted) {
                let (full, base) = (reference.name(), granted.name());
                proptest::prop_assert!(
                    full == base || full.starts_with(&format!("{base}/")),
                    "{name} admitted by {allowed}: {full} vs {base}"
                );
            }
        }

        /// An allowed host or path followed by more characters in the same segment is another
        /// registry or repository.
        #[test]
        fn longer_hosts_and_segments_are_denied(
            suffix in "[a-z0-9.-]{1,12}",
            rest in "(/[a-z0-9]{1,8}){1,3}",
        ) {
            for allowed in ["registry.example.com", "registry.example.com/team", "localhost"] {
                let name = format!("{allowed}{suffix}{rest}");
                proptest::prop_assert!(!image(&name).within(&entry(allowed)), "{name}");
            }
        }
    }
}
