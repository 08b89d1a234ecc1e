//! Keyless-signed Wasm artifacts in a real `docker-registry` on 127.0.0.1, in both layouts
//! cosign writes (a Sigstore bundle referrer, and the `.sig` tag with the certificate and
//! Rekor bundle annotations), checked by the real `meshgate verify --certificate-identity`.
//! The signatures come from a private Sigstore instance (a test CA as Fulcio, test CT and
//! Rekor logs, its trusted root); the verifier is only given that root.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use meshgate_admission::signing::keyless::test_instance::{Instance, Signing};
use meshgate_integration::Registry;
use meshgate_integration::cli::{self, meshgate};
use serde_json::{Value as Json, json};
use sha2::{Digest, Sha256};

const ID: &str = "https://ci.test/acme/filters/.github/workflows/release.yml@refs/heads/main";
const ISSUER: &str = "https://token.ci.test";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const BUNDLE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Plain OCI distribution pushes: what cosign writes, byte for byte as given.
struct Oci {
    base: String,
    http: reqwest::blocking::Client,
}

impl Oci {
    fn new(registry: &Registry, repository: &str) -> Oci {
        Oci {
            base: format!("http://{}/v2/{repository}", registry.host()),
            http: reqwest::blocking::Client::new(),
        }
    }

    fn blob(&self, bytes: &[u8]) -> Json {
        let digest = sha256(bytes);
        let start = self
            .http
            .post(format!("{}/blobs/uploads/", self.base))
            .send()
            .unwrap();
        assert!(start.status().is_success(), "{:?}", start.status());
        let location = start.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base.split("/v2/").next().unwrap())
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .http
            .put(format!("{location}{sep}digest={digest}"))
            .body(bytes.to_vec())
            .send()
            .unwrap();
        assert!(put.status().is_success(), "{:?}", put.status());
        json!({"digest": digest, "size": bytes.len()})
    }

    fn manifest(&self, reference: &str, media_type: &str, manifest: &Json) -> Json {
        let bytes = serde_json::to_vec(manifest).unwrap();
        let put = self
            .http
            .put(format!("{}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(bytes.clone())
            .send()
            .unwrap();
        assert!(
            put.status().is_success(),
            "{:?} {}",
            put.status(),
            put.text().unwrap()
        );
        json!({"mediaType": media_type, "digest": sha256(&bytes), "size": bytes.len()})
    }

    /// Attaches `bundle` to `subject` as a referrer, with the referrers tag index for
    /// registries without the referrers API.
    fn attach_bundle(&self, subject: &Json, bundle: &[u8]) {
        self.attach_bundles(subject, &[bundle]);
    }

    /// Attaches each bundle as a referrer of `subject`, listed together in the referrers tag.
    fn attach_bundles(&self, subject: &Json, bundles: &[&[u8]]) {
        let config = self.blob(b"{}");
        let referrers: Vec<Json> = bundles
            .iter()
            .map(|bundle| {
                let layer = self.blob(bundle);
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": MANIFEST,
                    "artifactType": BUNDLE,
                    "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config["digest"], "size": 2},
                    "layers": [{"mediaType": BUNDLE, "digest": layer["digest"], "size": layer["size"]}],
                    "subject": subject,
                });
                let digest = sha256(&serde_json::to_vec(&manifest).unwrap());
                let referrer = self.manifest(&digest, MANIFEST, &manifest);
                json!({"mediaType": MANIFEST, "digest": referrer["digest"], "size": referrer["size"], "artifactType": BUNDLE})
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": referrers,
        });
        let tag = subject["digest"].as_str().unwrap().replace(':', "-");
        self.manifest(&tag, "application/vnd.oci.image.index.v1+json", &index);
    }

    /// Writes the `.sig` manifest of `digest` with one keyless simple-signing layer.
    fn attach_cosign(&self, digest: &str, payload: &[u8], signature: &str, mut annotations: Json) {
        let config = self.blob(b"{}");
        let layer = self.blob(payload);
        annotations["dev.cosignproject.cosign/signature"] = signature.into();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config["digest"], "size": 2},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                        "digest": layer["digest"], "size": layer["size"], "annotations": annotations}],
        });
        self.manifest(
            &format!("{}.sig", digest.replace(':', "-")),
            MANIFEST,
            &manifest,
        );
    }
}

/// `meshgate verify` with an identity: exit code and output.
fn verify(reference: &str, identity: &str, issuer: &str, root: &Path) -> (i32, String) {
    let root = root.display().to_string();
    let out = meshgate(&[
        "verify",
        "--certificate-identity",
        identity,
        "--certificate-oidc-issuer",
        issuer,
        "--trusted-root",
        &root,
        reference,
    ]);
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

fn push_module(dir: &Path, reference: &str, salt: u8) -> String {
    // An empty module with a custom section, so each artifact has its own digest.
    let mut module = b"\0asm\x01\0\0\0\x00\x03\x01a".to_vec();
    module.push(salt);
    let path = dir.join(format!("m{salt}.wasm"));
    std::fs::write(&path, module).unwrap();
    cli::push(&path, reference)
}

fn statement(digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "keyless/filter", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": "https://sigstore.dev/cosign/sign/v1",
        "predicate": {},
    }))
    .unwrap()
}

fn simple_signing(digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {"identity": {"docker-reference": "keyless/filter"},
                     "image": {"docker-manifest-digest": digest},
                     "type": "cosign container image signature"},
        "optional": null,
    }))
    .unwrap()
}

/// A registry, a scratch directory, a private Sigstore instance and its trusted root written
/// there.
fn private_sigstore() -> (Registry, tempfile::TempDir, Instance, PathBuf) {
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let sigstore = Instance::new("rekor.test - 1");
    let root = dir.path().join("trusted_root.json");
    std::fs::write(&root, sigstore.trusted_root()).unwrap();
    (registry, dir, sigstore, root)
}

#[test]
fn keyless_signatures_in_both_layouts_verify_only_for_their_identity_and_root() {
    let (registry, dir, sigstore, root) = private_sigstore();
    let stranger_root = dir.path().join("stranger_root.json");
    std::fs::write(
        &stranger_root,
        Instance::new("rekor.test - 1").trusted_root(),
    )
    .unwrap();
    let oci = Oci::new(&registry, "keyless/filter");
    let repository = format!("{}/keyless/filter", registry.host());

    // Layout 1: a bundle referrer.
    let reference = format!("{repository}:bundle");
    let digest = push_module(dir.path(), &reference, 1);
    let subject = json!({"mediaType": MANIFEST, "digest": digest, "size": 0});
    let bundle = sigstore.sign_dsse(&statement(&digest), &Signing::at(ID, ISSUER, now()));
    oci.attach_bundle(&subject, bundle.as_bytes());
    let (code, out) = verify(&reference, ID, ISSUER, &root);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("signed by {ID} (sigstore-bundle)")),
        "{out}"
    );

    // Layout 2: the .sig tag.
    let reference_sig = format!("{repository}:sig");
    let digest_sig = push_module(dir.path(), &reference_sig, 2);
    let payload = simple_signing(&digest_sig);
    let (signature, annotations) = sigstore.sign_cosign(&payload, &Signing::at(ID, ISSUER, now()));
    oci.attach_cosign(&digest_sig, &payload, &signature, annotations);
    let (code, out) = verify(&reference_sig, ID, ISSUER, &root);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("signed by {ID} (cosign)")), "{out}");

    for reference in [&reference, &reference_sig] {
        // Another identity, another issuer, a root that trusts another instance.
        let (code, out) = verify(reference, "https://ci.test/mallory/x", ISSUER, &root);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("identity"), "{out}");
        let (code, out) = verify(reference, ID, "https://accounts.test", &root);
        assert_eq!(code, 1, "{out}");
        let (code, out) = verify(reference, ID, ISSUER, &stranger_root);
        assert_eq!(code, 1, "{out}");
    }

    // A certificate that had expired when the entry was logged.
    let reference_old = format!("{repository}:expired");
    let digest_old = push_module(dir.path(), &reference_old, 3);
    let payload = simple_signing(&digest_old);
    let mut late = Signing::at(ID, ISSUER, now());
    late.not_before = now() - 7200;
    late.not_after = now() - 3600;
    let (signature, annotations) = sigstore.sign_cosign(&payload, &late);
    oci.attach_cosign(&digest_old, &payload, &signature, annotations);
    let (code, out) = verify(&reference_old, ID, ISSUER, &root);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not valid at the signing time"), "{out}");

    // No log entry, and a log entry altered after the log signed it.
    for (salt, spoil) in [(4u8, "drop"), (5, "alter")] {
        let reference_bad = format!("{repository}:bad{salt}");
        let digest_bad = push_module(dir.path(), &reference_bad, salt);
        let payload = simple_signing(&digest_bad);
        let (signature, mut annotations) =
            sigstore.sign_cosign(&payload, &Signing::at(ID, ISSUER, now()));
        let key = "dev.sigstore.cosign/bundle";
        if spoil == "drop" {
            annotations.as_object_mut().unwrap().remove(key);
        } else {
            let mut rekor: Json = serde_json::from_str(annotations[key].as_str().unwrap()).unwrap();
            rekor["Payload"]["integratedTime"] = (now() - 10).into();
            annotations[key] = rekor.to_string().into();
        }
        oci.attach_cosign(&digest_bad, &payload, &signature, annotations);
        let (code, out) = verify(&reference_bad, ID, ISSUER, &root);
        assert_eq!(code, 1, "{spoil}: {out}");
    }
}

fn review(webhook: &meshgate_integration::Webhook, name: &str, image: &str) -> Json {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "apps"},
        "spec": {
            "runtimeClassName": "wasmtime",
            "containers": [{"name": "c", "image": image,
                            "resources": {"limits": {"cpu": "100m", "memory": "32Mi"}}}],
        },
    });
    webhook.review(&meshgate_integration::webhook::request(
        &format!("uid-{name}"),
        "CREATE",
        &pod,
        None,
    ))
}

/// The webhook's trust rules name identities: a keyless-signed artifact is admitted under a
/// rule naming its identity (exact or by regular expression), denied under one naming
/// another, and a rule requiring two identities counts distinct signers (one certificate
/// matching both names is one).
#[test]
fn webhook_trust_rules_name_keyless_identities() {
    let (registry, dir, sigstore, root) = private_sigstore();
    let host = registry.host();

    // One artifact per repository, each signed once by ID (bundle referrer).
    let mut signed = Vec::new();
    for (salt, repository) in [
        (11u8, "ours"),
        (12, "theirs"),
        (13, "pair"),
        (14, "pattern"),
        (15, "pair-twice"),
    ] {
        let reference = format!("{host}/keyless/{repository}:v1");
        let digest = push_module(dir.path(), &reference, salt);
        let oci = Oci::new(&registry, &format!("keyless/{repository}"));
        let subject = json!({"mediaType": MANIFEST, "digest": digest, "size": 0});
        let bundle = sigstore.sign_dsse(&statement(&digest), &Signing::at(ID, ISSUER, now()));
        if repository == "pair-twice" {
            // A second, independent signer: another acme workflow (acme-any, not release).
            let other =
                "https://ci.test/acme/filters/.github/workflows/nightly.yml@refs/heads/main";
            let second =
                sigstore.sign_dsse(&statement(&digest), &Signing::at(other, ISSUER, now()));
            oci.attach_bundles(&subject, &[bundle.as_bytes(), second.as_bytes()]);
        } else {
            oci.attach_bundle(&subject, bundle.as_bytes());
        }
        signed.push(reference);
    }
    let config = format!(
        r#"
imageVerification:
  keys: []
  identities:
    - {{name: release, subject: "{ID}", issuer: "{ISSUER}"}}
    - {{name: acme-any, subjectRegExp: 'https://ci\.test/acme/[^/]+/\.github/workflows/.*', issuer: "{ISSUER}"}}
    - {{name: mallory, subject: "https://ci.test/mallory/x", issuer: "{ISSUER}"}}
    - {{name: other-issuer, subject: "{ID}", issuer: "https://accounts.test"}}
  trustedRoot: {{file: "{root}"}}
  trust:
    - {{name: ours, images: ["127.0.0.1:*/keyless/ours"], identities: [release]}}
    - {{name: theirs, images: ["127.0.0.1:*/keyless/theirs"], identities: [mallory, other-issuer]}}
    - {{name: pair, images: ["127.0.0.1:*/keyless/pair"], identities: [release, acme-any], require: all}}
    - {{name: pattern, images: ["127.0.0.1:*/keyless/pattern"], identities: [acme-any]}}
    - {{name: pair-twice, images: ["127.0.0.1:*/keyless/pair-twice"], identities: [release, acme-any], require: all}}
  tagTtl: 0s
  negativeCacheTtl: 1s
  timeout: 5s
  registries: [{{host: "127.0.0.1:*", insecure: true}}]
policies: []
"#,
        root = root.display()
    );
    let webhook = meshgate_integration::Webhook::start(&config);

    let allowed = review(&webhook, "ours", &signed[0]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let denied = review(&webhook, "theirs", &signed[1]);
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(
        denied["status"]["message"].to_string().contains("identity"),
        "{denied}"
    );
    // The one certificate matches both identities of the pair, but is one signer: a threshold
    // counts independent signers, so it takes a second signature by another identity.
    let denied = review(&webhook, "pair", &signed[2]);
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(
        denied["status"]["message"].to_string().contains("2 of 2"),
        "{denied}"
    );
    let allowed = review(&webhook, "pair-twice", &signed[4]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    let allowed = review(&webhook, "pattern", &signed[3]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
}

/// An unreadable trusted root stops `meshgate serve` at startup, naming the field.
#[test]
fn an_unreadable_trusted_root_stops_serve() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        r#"
listen: 127.0.0.1:0
imageVerification:
  keys: []
  identities: [{name: release, subject: "a", issuer: "b"}]
  trustedRoot:
    inline:
      mediaType: application/vnd.dev.sigstore.trustedroot+json;version=0.1
      certificateAuthorities: [{certChain: {certificates: [{rawBytes: "not base64"}]}}]
  trust: [{name: r, images: ["**"], identities: [release]}]
policies: []
"#,
    )
    .unwrap();
    let mut child = std::process::Command::new(meshgate_integration::webhook::meshgate_binary())
        .args(["serve", "--config", &config.display().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("meshgate serve started with an unreadable trusted root");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("trustedRoot") && stderr.contains("certificateAuthorities[0]"),
        "{stderr}"
    );
}

/// An in-toto statement about `digest` of another predicate type: an attestation.
fn attestation(digest: &str, predicate_type: &str, predicate: Json) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "keyless/filter", "digest": {"sha256": digest.trim_start_matches("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }))
    .unwrap()
}

/// A trust rule may require a keyless attestation of a predicate type: an image signed and
/// attested by the rule's identity is admitted and policies read the predicate; one without the
/// attestation, or with one by another identity, is denied; a policy judging the predicate
/// denies an image whose provenance it does not accept.
#[test]
fn trust_rules_require_attestations_and_policies_read_them() {
    const SLSA: &str = "https://slsa.dev/provenance/v1";
    let (registry, dir, sigstore, root) = private_sigstore();
    let host = registry.host();
    let mallory = "https://ci.test/mallory/x";
    let mut signed = Vec::new();
    // (repository, who attests, build type)
    for (salt, repository, attester, build) in [
        (21u8, "attested", Some(ID), "https://ci.test/build/v1"),
        (22, "unattested", None, ""),
        (
            23,
            "attested-by-mallory",
            Some(mallory),
            "https://ci.test/build/v1",
        ),
        (
            24,
            "attested-elsewhere",
            Some(ID),
            "https://elsewhere.test/build",
        ),
    ] {
        let reference = format!("{host}/keyless/{repository}:v1");
        let digest = push_module(dir.path(), &reference, salt);
        let oci = Oci::new(&registry, &format!("keyless/{repository}"));
        let subject = json!({"mediaType": MANIFEST, "digest": digest, "size": 0});
        let signature = sigstore.sign_dsse(&statement(&digest), &Signing::at(ID, ISSUER, now()));
        let mut bundles = vec![signature];
        if let Some(attester) = attester {
            let predicate = json!({"buildDefinition": {"buildType": build}});
            bundles.push(sigstore.sign_dsse(
                &attestation(&digest, SLSA, predicate),
                &Signing::at(attester, ISSUER, now()),
            ));
        }
        let bundles: Vec<&[u8]> = bundles.iter().map(|b| b.as_bytes()).collect();
        oci.attach_bundles(&subject, &bundles);
        signed.push(reference);
    }
    let policy = dir.path().join("provenance.rego");
    std::fs::write(
        &policy,
        format!(
            r#"package provenance

deny contains msg if {{
    some image, facts in input.images
    build := facts.attestations["{SLSA}"].buildDefinition.buildType
    build != "https://ci.test/build/v1"
    msg := sprintf("%s was built by %s", [image, build])
}}
"#
        ),
    )
    .unwrap();
    let config = format!(
        r#"
imageVerification:
  keys: []
  identities:
    - {{name: release, subject: "{ID}", issuer: "{ISSUER}"}}
  trustedRoot: {{file: "{root}"}}
  trust:
    - {{name: provenance, images: ["127.0.0.1:*/keyless/*"], identities: [release], attestations: ["{SLSA}"]}}
  tagTtl: 0s
  negativeCacheTtl: 1s
  timeout: 5s
  registries: [{{host: "127.0.0.1:*", insecure: true}}]
policies:
  - {{name: provenance, rego: {{files: ["{policy}"]}}}}
"#,
        root = root.display(),
        policy = policy.display()
    );
    let webhook = meshgate_integration::Webhook::start(&config);
    let allowed = review(&webhook, "attested", &signed[0]);
    assert_eq!(allowed["allowed"], true, "{allowed}");
    for (i, name) in [(1, "unattested"), (2, "attested-by-mallory")] {
        let denied = review(&webhook, name, &signed[i]);
        assert_eq!(denied["allowed"], false, "{denied}");
        assert!(
            denied["status"]["message"]
                .to_string()
                .contains(&format!("no attestation of type {SLSA}")),
            "{denied}"
        );
    }
    let denied = review(&webhook, "attested-elsewhere", &signed[3]);
    assert_eq!(denied["allowed"], false, "{denied}");
    assert!(
        denied["status"]["message"]
            .to_string()
            .contains("[provenance]")
            && denied["status"]["message"]
                .to_string()
                .contains("was built by https://elsewhere.test/build"),
        "{denied}"
    );
}
