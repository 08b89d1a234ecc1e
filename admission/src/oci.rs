//! OCI names and digests: the leaf every registry, artifact and signing module builds on (it
//! imports nothing from the crate). Only `sha256` digests of 64 lowercase hex digits and
//! distribution-spec tags are accepted, since anything else could not be checked or would
//! reshape a registry URL.

use oci_client::Reference;
use sha2::Digest as _;

/// Whether `digest` is `sha256:` and 64 lowercase hex digits, the only digests this client
/// fetches by (anything else could not be checked, or would reshape the URL).
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Whether `tag` is a valid tag (distribution spec: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`).
pub fn is_tag(tag: &str) -> bool {
    tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", sha2::Sha256::digest(bytes))
}

/// `registry/repository` of a reference, as cosign writes it in payloads.
pub fn repository_name(reference: &Reference) -> String {
    format!("{}/{}", reference.registry(), reference.repository())
}

/// The registry host as every client resolves it, for matching trust rules: lower case (DNS,
/// TLS and container runtimes ignore case). A host that ends in a number but is not a
/// dotted-quad IPv4 address (`127.1`, `0x7f.1`, `2130706433`) is refused: resolvers read such
/// spellings as an address that a rule naming it canonically would not match.
pub fn canonical_registry(registry: &str) -> Result<String, String> {
    let lower = registry.to_ascii_lowercase();
    let host = match lower.rsplit_once(':') {
        // A port, not the inside of an IPv6 literal.
        Some((host, port))
            if !host.ends_with(']')
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.contains(':') =>
        {
            host
        }
        _ => lower.as_str(),
    };
    let last = host.rsplit('.').next().unwrap_or("");
    let numeric = last.starts_with(|c: char| c.is_ascii_digit());
    if numeric && host.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(format!(
            "registry host {} is a non-canonical IP address",
            crate::review::decode::clip(registry)
        ));
    }
    Ok(lower)
}

/// The reference of `repository` at `digest`.
pub fn at_digest(repository: &Reference, digest: &str) -> Reference {
    Reference::with_digest(
        repository.registry().to_string(),
        repository.repository().to_string(),
        digest.to_string(),
    )
}

/// The reference of `repository` at `tag`.
pub fn at_tag(repository: &Reference, tag: &str) -> Reference {
    Reference::with_tag(
        repository.registry().to_string(),
        repository.repository().to_string(),
        tag.to_string(),
    )
}

/// `https://index.docker.io/v1/` and `docker.io` → `index.docker.io`; other hosts as they are,
/// without scheme or path.
pub fn normalize_host(host: &str) -> String {
    let host = host
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod canonical_tests {
    use super::canonical_registry;

    #[test]
    fn hosts_are_matched_as_clients_resolve_them() {
        assert_eq!(canonical_registry("GHCR.io").unwrap(), "ghcr.io");
        assert_eq!(
            canonical_registry("LocalHost:5000").unwrap(),
            "localhost:5000"
        );
        assert_eq!(
            canonical_registry("127.0.0.1:5000").unwrap(),
            "127.0.0.1:5000"
        );
        assert_eq!(canonical_registry("[::1]:5000").unwrap(), "[::1]:5000");
        for odd in [
            "127.1:5000",
            "0x7f.1",
            "2130706433",
            "127.000.0.1",
            "1.2.3.04",
        ] {
            assert!(canonical_registry(odd).is_err(), "{odd}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_digests_and_valid_tags_are_fetched() {
        assert!(is_sha256_digest(&format!("sha256:{}", "0a".repeat(32))));
        assert!(!is_sha256_digest(&format!("sha256:{}", "0A".repeat(32))));
        assert!(!is_sha256_digest("sha256:../../x"));
        assert!(!is_sha256_digest(&format!("sha512:{}", "0a".repeat(64))));
        assert!(is_tag("v1.0_rc-2"));
        assert!(!is_tag(".hidden"));
        assert!(!is_tag("a/b"));
        assert!(!is_tag(&"a".repeat(129)));
    }

    #[test]
    fn docker_hub_names_are_one_host() {
        assert_eq!(
            normalize_host("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(normalize_host("docker.io"), "index.docker.io");
        assert_eq!(
            normalize_host("registry.example:5000"),
            "registry.example:5000"
        );
    }

    #[test]
    fn references_keep_registry_and_repository() {
        let repository: Reference = "registry.example:5000/team/filter:v1".parse().unwrap();
        let digest = sha256_digest(b"x");
        assert_eq!(
            at_digest(&repository, &digest).whole(),
            format!("registry.example:5000/team/filter@{digest}")
        );
        assert_eq!(
            at_tag(&repository, "v2").whole(),
            "registry.example:5000/team/filter:v2"
        );
        assert_eq!(
            repository_name(&repository),
            "registry.example:5000/team/filter"
        );
    }
}
