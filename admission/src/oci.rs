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
