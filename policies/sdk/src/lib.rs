//! Write meshgate admission policies in Rust and compile them to WebAssembly components
//! (`cargo build --target wasm32-wasip2`) that the webhook runs in wasmtime.
//!
//! A policy is a type implementing [`Policy`], exported with [`export_policy!`]:
//!
//! ```no_run
//! use meshgate_policy::{Policy, Request, Verdict, accept, reject};
//!
//! struct NoHostNetwork;
//!
//! impl Policy for NoHostNetwork {
//!     type Settings = meshgate_policy::NoSettings;
//!
//!     fn validate(request: &Request, _settings: &Self::Settings) -> Verdict {
//!         let pod = match request.pod() {
//!             Ok(pod) => pod,
//!             Err(e) => return reject(e),
//!         };
//!         let spec = pod.spec.unwrap_or_default();
//!         if spec.host_network == Some(true) {
//!             return reject("the pod uses the node's network");
//!         }
//!         accept()
//!     }
//! }
//!
//! meshgate_policy::export_policy!(NoHostNetwork);
//! ```
//!
//! The crate hides the `meshgate:policy` world's bindings (`policies/wit/policy.wit`): settings
//! and requests arrive parsed, and the answer is a [`Verdict`] built with [`accept`],
//! [`reject`] and [`warn`].

use std::collections::BTreeMap;
use std::marker::PhantomData;

pub use k8s_openapi;
use k8s_openapi::api::core::v1::{Container, EphemeralContainer, Pod};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The generated bindings of the `meshgate:policy` world. Policies do not use them directly.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "policy",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "meshgate_policy::bindings",
    });
}

use bindings::exports::meshgate::policy::validator;

/// A policy's answer to one request (the world's `verdict`).
pub type Verdict = validator::Verdict;

/// Admits the request.
pub fn accept() -> Verdict {
    Verdict {
        allowed: true,
        message: None,
        warnings: Vec::new(),
        patch: None,
    }
}

/// Denies the request; `message` says why.
pub fn reject(message: impl std::fmt::Display) -> Verdict {
    Verdict {
        allowed: false,
        message: Some(message.to_string()),
        warnings: Vec::new(),
        patch: None,
    }
}

/// Admits the request with a warning for the client.
pub fn warn(message: impl std::fmt::Display) -> Verdict {
    accept().with_warning(message)
}

impl Verdict {
    /// Adds a warning, whatever the decision.
    pub fn with_warning(mut self, message: impl std::fmt::Display) -> Self {
        self.warnings.push(message.to_string());
        self
    }

    /// Denies with every message of `violations` (joined with `; `), or admits when there is
    /// none.
    pub fn from_violations<S: std::fmt::Display>(violations: impl IntoIterator<Item = S>) -> Self {
        let messages: Vec<String> = violations.into_iter().map(|v| v.to_string()).collect();
        if messages.is_empty() {
            accept()
        } else {
            reject(messages.join("; "))
        }
    }
}

/// The AdmissionReview `request` a policy judges. Workloads (Deployment, Job, CronJob, ...)
/// arrive expanded to the Pod their template makes, so `object` is a Pod.
///
/// The object is kept as the JSON text it arrived in: [`Request::pod`] reads the typed Pod
/// straight from it, and [`Request::object`] builds the dynamic JSON tree only when a policy
/// asks for it (a tree of the whole object costs a policy that reads the Pod as much again).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// The review's UID.
    #[serde(default)]
    pub uid: String,
    /// `CREATE` or `UPDATE` (other operations are not sent to policies).
    #[serde(default)]
    pub operation: String,
    /// The object's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The object's name (may be empty for generated names).
    #[serde(default)]
    pub name: String,
    /// Who asked.
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object under review, as its JSON text (see [`Request::object`]).
    #[serde(default, rename = "object", deserialize_with = "bounded_text")]
    object_text: Box<serde_json::value::RawValue>,
    /// The object before an UPDATE, as its JSON text (see [`Request::old_object`]).
    #[serde(default, rename = "oldObject", deserialize_with = "bounded_text")]
    old_object_text: Box<serde_json::value::RawValue>,
    #[serde(skip)]
    object: std::sync::OnceLock<serde_json::Value>,
    #[serde(skip)]
    old_object: std::sync::OnceLock<serde_json::Value>,
    /// Verified facts of each image (image as written → facts), when the webhook checks
    /// image signatures. [`Request::image_code`] reads one image's capabilities.
    #[serde(default)]
    pub images: BTreeMap<String, serde_json::Value>,
    /// Facts of each Wasm module a WasmPlugin, EnvoyFilter or EnvoyExtensionPolicy loads (URL
    /// as written, `inline:<sha256>` or `file:<name>` → facts). [`Request::extension_modules`]
    /// reads them typed.
    #[serde(default)]
    pub modules: BTreeMap<String, serde_json::Value>,
}

/// An object's JSON text, checked by serde_json's own parser without building the tree: what
/// a tree parse refuses (nesting past its limit, lone surrogate escapes, numbers out of range)
/// refuses the request as a whole, as when the object was parsed into a tree at once. Capturing
/// the text alone checks only the syntax, and a policy must never see as `null` an object that
/// [`Request::pod`] reads.
fn bounded_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Box<serde_json::value::RawValue>, D::Error> {
    let text = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
    serde_json::from_str::<Checked>(text.get()).map_err(serde::de::Error::custom)?;
    Ok(text)
}

/// Any JSON value, read through `deserialize_any` and dropped: serde_json checks it as it
/// would for a tree (`serde::de::IgnoredAny` skips values without checking them).
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<Checked>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

/// A JSON text the request held, as a tree. [`bounded_text`] checked it as a tree parse
/// would, so this cannot fail but for memory, which aborts the instance.
fn parse_object(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

impl Default for Request {
    fn default() -> Self {
        Request {
            uid: String::new(),
            operation: String::new(),
            namespace: String::new(),
            name: String::new(),
            user_info: UserInfo::default(),
            object_text: Box::default(),
            old_object_text: Box::default(),
            object: std::sync::OnceLock::new(),
            old_object: std::sync::OnceLock::new(),
            images: BTreeMap::new(),
            modules: BTreeMap::new(),
        }
    }
}

/// Whether Wasm code is a component or a core module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodeKind {
    /// A component (component model): imports and exports are interface names such as
    /// `wasi:sockets/tcp@0.2.0`.
    Component,
    /// A core module: imports are `<module>/<name>` (`wasi_snapshot_preview1/fd_write`),
    /// exports their names.
    Module,
}

/// What Wasm code imports and exports, as the webhook read it from the module or component
/// (`capabilities` in an image's or module's facts). Lists are sorted and deduplicated.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Component or core module.
    pub kind: CodeKind,
    /// Import names.
    #[serde(default)]
    pub imports: Vec<String>,
    /// Export names.
    #[serde(default)]
    pub exports: Vec<String>,
}

/// What the request says of one image's Wasm code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageCode {
    /// The image is one an UPDATE kept (`unchanged: true`): it was judged when admitted.
    Unchanged,
    /// The webhook read the image's Wasm layer.
    Read(Capabilities),
    /// No capabilities: the image has no facts, or the webhook did not fetch its Wasm layer
    /// (`imageVerification.artifactCheck` other than `parse`).
    Unknown,
}

/// The facts of one extension module (`modules` of the request).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Module {
    /// The module's URL as written (empty for inline and local modules).
    #[serde(default)]
    pub url: String,
    /// Where it comes from: `oci`, `http`, `https`, `file` or `inline`.
    #[serde(default)]
    pub source: String,
    /// JSON pointer of the field naming the module in the object, e.g. `/spec/url`.
    #[serde(default)]
    pub path: Option<String>,
    /// Hex SHA-256 of the verified content.
    #[serde(default)]
    pub sha256: Option<String>,
    /// For OCI modules, the image's facts (as in [`Request::images`]).
    #[serde(default)]
    pub image: Option<serde_json::Value>,
    /// What the module imports and exports, when the webhook read it.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// The proxy-wasm ABI versions the module exports (`proxy_abi_version_0_2_1`).
    #[serde(default)]
    pub abi_versions: Vec<String>,
}

/// The user behind a request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserInfo {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

impl Request {
    /// The object as a typed Pod, read from the request's text.
    pub fn pod(&self) -> Result<Pod, String> {
        serde_json::from_str(self.object_text.get())
            .map_err(|e| format!("the object is not a Pod: {e}"))
    }

    /// The object under review as JSON (`null` when absent), parsed on first use.
    pub fn object(&self) -> &serde_json::Value {
        self.object
            .get_or_init(|| parse_object(self.object_text.get()))
    }

    /// The object before an UPDATE as JSON (`null` for a CREATE), parsed on first use.
    pub fn old_object(&self) -> &serde_json::Value {
        self.old_object
            .get_or_init(|| parse_object(self.old_object_text.get()))
    }

    /// The object's `kind` ("" when unset).
    pub fn kind(&self) -> &str {
        self.object()["kind"].as_str().unwrap_or("")
    }

    /// What the request says of `image`'s Wasm code (image as written in the pod). Facts whose
    /// `capabilities` do not have the documented shape are an error, never [`ImageCode::Unknown`],
    /// so a policy cannot mistake them for absent ones.
    pub fn image_code(&self, image: &str) -> Result<ImageCode, String> {
        let Some(facts) = self.images.get(image) else {
            return Ok(ImageCode::Unknown);
        };
        if facts["unchanged"] == serde_json::Value::Bool(true) {
            return Ok(ImageCode::Unchanged);
        }
        match facts.get("capabilities") {
            None | Some(serde_json::Value::Null) => Ok(ImageCode::Unknown),
            Some(value) => Capabilities::deserialize(value)
                .map(ImageCode::Read)
                .map_err(|e| format!("image {image}: invalid capabilities: {e}")),
        }
    }

    /// The extension modules' facts, typed, by key (sorted).
    pub fn extension_modules(&self) -> Result<Vec<(&str, Module)>, String> {
        self.modules
            .iter()
            .map(|(key, facts)| {
                Module::deserialize(facts)
                    .map(|m| (key.as_str(), m))
                    .map_err(|e| format!("module {key}: invalid facts: {e}"))
            })
            .collect()
    }
}

/// One container of a pod, whatever its kind.
#[derive(Debug, Clone, Copy)]
pub enum AnyContainer<'a> {
    /// A regular or init container.
    Container(&'a Container),
    /// An ephemeral (debug) container.
    Ephemeral(&'a EphemeralContainer),
}

impl AnyContainer<'_> {
    /// The container's name.
    pub fn name(&self) -> &str {
        match self {
            AnyContainer::Container(c) => &c.name,
            AnyContainer::Ephemeral(c) => &c.name,
        }
    }

    /// The container's image ("" when unset).
    pub fn image(&self) -> &str {
        match self {
            AnyContainer::Container(c) => c.image.as_deref(),
            AnyContainer::Ephemeral(c) => c.image.as_deref(),
        }
        .unwrap_or("")
    }

    /// The container's security context.
    pub fn security_context(&self) -> Option<&k8s_openapi::api::core::v1::SecurityContext> {
        match self {
            AnyContainer::Container(c) => c.security_context.as_ref(),
            AnyContainer::Ephemeral(c) => c.security_context.as_ref(),
        }
    }

    /// How messages name a container: `container "app" (image ghcr.io/acme/app:1)`, as the
    /// Rego starter policies do.
    pub fn describe(&self) -> String {
        format!("container {:?} (image {})", self.name(), self.image())
    }
}

/// Every container the pod runs: regular, init and ephemeral.
pub fn containers(pod: &Pod) -> Vec<AnyContainer<'_>> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(AnyContainer::Container)
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(AnyContainer::Ephemeral),
        )
        .collect()
}

/// Settings of a policy that takes none: any JSON object is accepted.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NoSettings {}

/// A policy: how it checks its settings and judges a request.
pub trait Policy {
    /// The settings, parsed from the configuration's JSON. `{}` arrives when none are
    /// configured, so use `#[serde(default)]` for optional fields.
    type Settings: DeserializeOwned;

    /// Checks parsed settings once, at load; an error fails the webhook's startup with it.
    fn validate_settings(_settings: &Self::Settings) -> Result<(), String> {
        Ok(())
    }

    /// Judges one request.
    fn validate(request: &Request, settings: &Self::Settings) -> Verdict;
}

/// Adapts a [`Policy`] to the world's exports; [`export_policy!`] names it.
#[doc(hidden)]
pub struct Component<P>(PhantomData<P>);

fn settings<S: DeserializeOwned>(json: &str) -> Result<S, String> {
    serde_json::from_str(json).map_err(|e| format!("invalid settings: {e}"))
}

impl<P: Policy> validator::Guest for Component<P> {
    fn validate(request: String, settings_json: String) -> Verdict {
        let settings = match settings::<P::Settings>(&settings_json) {
            Ok(s) => s,
            Err(e) => return reject(e),
        };
        match serde_json::from_str::<Request>(&request) {
            Ok(request) => P::validate(&request, &settings),
            Err(e) => reject(format!(
                "the request is not an AdmissionReview request: {e}"
            )),
        }
    }

    fn validate_settings(settings_json: String) -> Result<(), String> {
        P::validate_settings(&settings::<P::Settings>(&settings_json)?)
    }
}

/// Exports a [`Policy`] as the component's `meshgate:policy/validator` implementation. Use
/// once, in the policy crate's root (a `cdylib` built for `wasm32-wasip2`). Native builds
/// (the policy's own unit tests) export nothing: component export names are not valid symbol
/// names there.
#[macro_export]
macro_rules! export_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        mod __meshgate_policy_export {
            #[allow(unused_imports)]
            use super::*;
            type __MeshgatePolicyComponent = $crate::Component<$policy>;
            $crate::bindings::export_bindings!(__MeshgatePolicyComponent with_types_in $crate::bindings);
        }
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn containers_of_every_kind_are_listed() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "containers": [{"name": "a", "image": "x:1"}],
                "initContainers": [{"name": "i", "image": "y:1"}],
                "ephemeralContainers": [{"name": "e", "image": "z:1"}]
            }
        }))
        .unwrap();
        let names: Vec<String> = containers(&pod).iter().map(|c| c.describe()).collect();
        assert_eq!(
            names,
            [
                "container \"a\" (image x:1)",
                "container \"i\" (image y:1)",
                "container \"e\" (image z:1)"
            ]
        );
    }

    fn request(json: serde_json::Value) -> Request {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn objects_are_read_from_their_text_on_demand() {
        let text = r#"{"uid": "u", "operation": "UPDATE",
            "object": {"kind": "Pod", "metadata": {"name": "p"},
                       "spec": {"containers": [{"name": "a", "image": "x:1"}]}},
            "oldObject": {"kind": "Pod", "metadata": {"name": "old"}}}"#;
        for r in [
            serde_json::from_str::<Request>(text).unwrap(),
            request(serde_json::from_str(text).unwrap()),
        ] {
            assert_eq!(r.kind(), "Pod");
            assert_eq!(r.object()["metadata"]["name"], "p");
            assert_eq!(r.old_object()["metadata"]["name"], "old");
            let pod = r.pod().unwrap();
            assert_eq!(containers(&pod)[0].image(), "x:1");
        }
        let create = request(serde_json::json!({"operation": "CREATE"}));
        assert_eq!(create.object(), &serde_json::Value::Null);
        assert_eq!(create.old_object(), &serde_json::Value::Null);
        assert_eq!(create.kind(), "");
        assert!(create.pod().is_err());
        let default = Request::default();
        assert_eq!(default.object(), &serde_json::Value::Null);
    }

    /// A request whose object holds `depth` nested arrays, with brackets and an escaped quote
    /// inside strings that do not nest, and `extra` fields.
    fn nested(depth: usize, extra: &str) -> String {
        format!(
            r#"{{"object": {{"kind": "Pod", "s": "[[{{\"]]", {extra} "deep": {}1{}}}}}"#,
            "[".repeat(depth - 1),
            "]".repeat(depth - 1)
        )
    }

    #[test]
    fn an_object_a_tree_parse_would_refuse_refuses_the_request() {
        // Every object a request holds can be read as a tree: one that could not is refused
        // when the request is parsed, never seen as null by a policy (while `pod()`, which
        // skips unknown fields unchecked, would read it).
        let deepest = serde_json::from_str::<Request>(&nested(127, "")).unwrap();
        assert_eq!(deepest.kind(), "Pod");
        assert_eq!(deepest.object()["s"], "[[{\"]]");
        for (text, why) in [
            (nested(128, ""), "recursion limit"),
            (nested(2, r#""x": "\ud800","#), "hex escape"),
            (nested(2, r#""x": 1e400,"#), "number out of range"),
        ] {
            let err = serde_json::from_str::<Request>(&text).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            let old = text.replacen("\"object\"", "\"oldObject\"", 1);
            assert!(serde_json::from_str::<Request>(&old).is_err(), "{old}");
        }
    }

    #[test]
    fn image_code_reads_capabilities_unchanged_and_absent_facts() {
        let r = request(serde_json::json!({
            "images": {
                "read:1": {"digest": "sha256:00", "capabilities": {"kind": "component",
                    "imports": ["wasi:sockets/tcp@0.2.0"], "exports": ["wasi:cli/run@0.2.0"]}},
                "kept:1": {"image": "kept:1", "unchanged": true},
                "plain:1": {"digest": "sha256:00"},
                "null:1": {"capabilities": null},
                "bad:1": {"capabilities": {"kind": "library", "imports": []}},
                "odd:1": {"capabilities": ["wasi:sockets/tcp@0.2.0"]}
            }
        }));
        assert_eq!(
            r.image_code("read:1").unwrap(),
            ImageCode::Read(Capabilities {
                kind: CodeKind::Component,
                imports: vec!["wasi:sockets/tcp@0.2.0".into()],
                exports: vec!["wasi:cli/run@0.2.0".into()],
            })
        );
        assert_eq!(r.image_code("kept:1").unwrap(), ImageCode::Unchanged);
        assert_eq!(r.image_code("plain:1").unwrap(), ImageCode::Unknown);
        assert_eq!(r.image_code("null:1").unwrap(), ImageCode::Unknown);
        assert_eq!(r.image_code("absent:1").unwrap(), ImageCode::Unknown);
        assert!(r.image_code("bad:1").unwrap_err().contains("image bad:1"));
        assert!(r.image_code("odd:1").is_err());
    }

    #[test]
    fn extension_modules_are_typed() {
        let r = request(serde_json::json!({
            "object": {"kind": "WasmPlugin"},
            "modules": {
                "oci://ghcr.io/acme/hook:1": {"url": "oci://ghcr.io/acme/hook:1", "source": "oci",
                    "path": "/spec/url", "sha256": "ab", "image": {"digest": "sha256:ab"},
                    "capabilities": {"kind": "module", "imports": ["env/proxy_log"], "exports": []},
                    "abiVersions": ["proxy_abi_version_0_2_1"]},
                "file:/etc/b.wasm": {"source": "file"}
            }
        }));
        assert_eq!(r.kind(), "WasmPlugin");
        let modules = r.extension_modules().unwrap();
        assert_eq!(modules.len(), 2);
        let (key, module) = &modules[1];
        assert_eq!(*key, "oci://ghcr.io/acme/hook:1");
        assert_eq!(module.path.as_deref(), Some("/spec/url"));
        assert_eq!(module.abi_versions, ["proxy_abi_version_0_2_1"]);
        assert_eq!(
            module.capabilities.as_ref().map(|c| c.kind),
            Some(CodeKind::Module)
        );
        assert_eq!(modules[0].1.capabilities, None);
        let bad = request(serde_json::json!({"modules": {"m": {"capabilities": {"imports": 1}}}}));
        assert!(
            bad.extension_modules()
                .unwrap_err()
                .starts_with("module m:")
        );
    }

    #[test]
    fn violations_make_one_denial() {
        assert!(Verdict::from_violations(Vec::<String>::new()).allowed);
        let v = Verdict::from_violations(["a", "b"]);
        assert!(!v.allowed);
        assert_eq!(v.message.as_deref(), Some("a; b"));
        assert_eq!(warn("w").warnings, ["w"]);
    }
}
