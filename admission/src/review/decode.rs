//! Body bytes → the request the pipeline judges, with bounded memory.
//!
//! A dynamic tree of an arbitrary 3 MiB body can cost tens of times its size (an array of a
//! million zeros is a million 32-byte values, and again whatever copies it). So the body is read
//! in three steps, none of which builds more than the pipeline needs:
//!
//! 1. the envelope (`apiVersion`, `kind`, whether there is a `request` and its `uid`), borrowed
//!    from the bytes, everything else skipped with [`IgnoredAny`];
//! 2. the `request` object as JSON, counting values against [`ParseLimits::max_values`] and
//!    nesting against [`ParseLimits::max_depth`], and stopping at the first value over either;
//! 3. the fields the server itself needs, deserialized from that tree by reference, the objects
//!    skipped.
//!
//! Every failure is a [`ReviewError`] that says what is wrong; a request whose `uid` could be
//! read gets an `invalid` AdmissionReview the API server can match.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use k8s_openapi::api::authentication::v1::UserInfo;
use kube_core::admission::{META_API_VERSION_V1, META_KIND, Operation};
use kube_core::{GroupVersionKind, GroupVersionResource};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value as Json};

/// Strings of the request echoed in error messages are cut to this many bytes.
const ECHO_BYTES: usize = 64;

/// A parser's error text (which may quote the request, e.g. an unknown `operation`) is cut to
/// this many bytes.
const ERROR_BYTES: usize = 256;

/// Bounds of one parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// JSON values (scalars, arrays, objects) the `request` may hold.
    pub max_values: usize,
    /// Nesting depth of the `request` (the request object itself is depth 1).
    pub max_depth: usize,
}

/// A review ready for the pipeline.
#[derive(Debug)]
pub struct Review {
    /// `request.uid`, echoed in the answer.
    pub uid: String,
    /// `request.kind.kind`: the kind of the object.
    pub kind: String,
    /// `request.namespace`, or empty.
    pub namespace: String,
    /// `request.name`, else the object's `metadata.name` or `generateName`, or empty.
    pub name: String,
    /// `request.operation`.
    pub operation: Operation,
    /// The whole `request` object, as policies see it.
    pub request: Json,
}

/// Why a body is not a review the pipeline can judge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    Syntax(String),
    /// JSON, but not an AdmissionReview object (e.g. `apiVersion` is a number).
    #[error("malformed AdmissionReview: {0}")]
    Shape(String),
    /// Another `apiVersion` or `kind` (cut to a few dozen bytes).
    #[error(
        "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion {api_version} kind {kind}"
    )]
    NotAReview {
        /// What `apiVersion` said, or `(none)`.
        api_version: String,
        /// What `kind` said, or `(none)`.
        kind: String,
    },
    /// `request` is absent or null.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// The request is there but cannot be judged: a required field is missing or has the wrong
    /// type, or it holds more values or deeper nesting than the limits allow.
    #[error("malformed AdmissionReview request: {message}")]
    Invalid {
        /// `request.uid`, when it is a string: the answer can then be an `invalid` review.
        uid: Option<String>,
        /// What is wrong.
        message: String,
    },
}

impl ReviewError {
    fn json(e: &serde_json::Error) -> Self {
        let text = error_text(e);
        match e.classify() {
            serde_json::error::Category::Data => Self::Shape(text),
            _ => Self::Syntax(text),
        }
    }
}

/// Parses an AdmissionReview body into the request the pipeline judges.
pub fn parse(body: &[u8], limits: ParseLimits) -> Result<Review, ReviewError> {
    // 1. The envelope, with nothing of the request kept but its uid.
    let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(|e| ReviewError::json(&e))?;
    if envelope.api_version.as_deref() != Some(META_API_VERSION_V1)
        || envelope.kind.as_deref() != Some(META_KIND)
    {
        let echo = |s: Option<&str>| s.map_or_else(|| "(none)".into(), clip);
        return Err(ReviewError::NotAReview {
            api_version: echo(envelope.api_version.as_deref()),
            kind: echo(envelope.kind.as_deref()),
        });
    }
    let Some(probe) = envelope.request else {
        return Err(ReviewError::NoRequest);
    };
    let invalid = |message: String| ReviewError::Invalid {
        uid: probe.uid.clone(),
        message,
    };

    // 2. The request as JSON, bounded.
    let budget = Cell::new(limits.max_values);
    let request = RequestOf(Bounded {
        budget: &budget,
        limits,
        depth: 1,
    })
    .deserialize(&mut serde_json::Deserializer::from_slice(body))
    .map_err(|e| invalid(error_text(&e)))?;

    // 3. What the server needs, read from the tree without copying the objects.
    Review::from_request(request).map_err(|e| match e {
        ReviewError::Invalid { message, .. } => invalid(message),
        other => other,
    })
}

impl Review {
    /// Step 3 alone: reads the fields the pipeline needs from a `request` object already in
    /// memory (`meshgate policy test`'s cases, the benchmark). The error says which field is
    /// missing or mistyped (a [`ReviewError::Invalid`], with the uid when it could be read).
    pub fn from_request(request: Json) -> Result<Review, ReviewError> {
        let head = Head::deserialize(&request).map_err(|e| ReviewError::Invalid {
            uid: request["uid"].as_str().map(str::to_string),
            message: error_text(&e),
        })?;
        let name = if head.name.is_empty() {
            head.object
                .and_then(|o| o.metadata)
                .and_then(|m| m.name.or(m.generate_name))
                .unwrap_or_default()
        } else {
            head.name
        };
        Ok(Review {
            uid: head.uid,
            kind: head.kind.kind,
            namespace: head.namespace.unwrap_or_default(),
            name,
            operation: head.operation,
            request,
        })
    }
}

/// A serde error's text, which quotes the request's strings: cut and escaped like them.
fn error_text(e: &impl fmt::Display) -> String {
    clip_to(&e.to_string(), ERROR_BYTES)
}

/// `s` with control characters escaped, cut to [`ECHO_BYTES`], marked when cut.
pub fn clip(s: &str) -> String {
    clip_to(s, ECHO_BYTES)
}

/// `s` with control characters escaped (`\n`, `\u{1b}`: no line or terminal control reaches a
/// log), cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn clip_to(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + '…'.len_utf8());
    for c in s.chars() {
        let before = out.len();
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max {
            out.truncate(before);
            out.push('…');
            return out;
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(default, borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    request: Option<UidProbe>,
}

/// The `request` of step 1: present, and its `uid` if that is a string; never an error for
/// what it holds.
struct UidProbe {
    uid: Option<String>,
}

impl<'de> Deserialize<'de> for UidProbe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ProbeVisitor;
        impl<'de> Visitor<'de> for ProbeVisitor {
            type Value = UidProbe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a request")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UidProbe, A::Error> {
                let mut uid = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == "uid" {
                        uid = map.next_value::<LenientString>()?.0;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(UidProbe { uid })
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<UidProbe, A::Error> {
                IgnoredAny.visit_seq(seq)?;
                Ok(UidProbe { uid: None })
            }
            fn visit_bool<E>(self, _: bool) -> Result<UidProbe, E> {
                Ok(UidProbe { uid: None })
            }
            fn visit_i64<E>(self, _: i64) -> Result<UidProbe, E> {
                Ok(UidProbe { uid: None })
            }
            fn visit_u64<E>(self, _: u64) -> Result<UidProbe, E> {
                Ok(UidProbe { uid: None })
            }
            fn visit_f64<E>(self, _: f64) -> Result<UidProbe, E> {
                Ok(UidProbe { uid: None })
            }
            fn visit_str<E>(self, _: &str) -> Result<UidProbe, E> {
                Ok(UidProbe { uid: None })
            }
        }
        deserializer.deserialize_any(ProbeVisitor)
    }
}

/// A string, or `None` for any other value (skipped).
struct LenientString(Option<String>);

impl<'de> Deserialize<'de> for LenientString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor;
        impl<'de> Visitor<'de> for LenientVisitor {
            type Value = LenientString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E>(self, v: &str) -> Result<LenientString, E> {
                Ok(LenientString(Some(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LenientString, A::Error> {
                IgnoredAny.visit_map(map)?;
                Ok(LenientString(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<LenientString, A::Error> {
                IgnoredAny.visit_seq(seq)?;
                Ok(LenientString(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
            fn visit_unit<E>(self) -> Result<LenientString, E> {
                Ok(LenientString(None))
            }
        }
        deserializer.deserialize_any(LenientVisitor)
    }
}

/// Step 2: the top-level object, skipping every member but `request`, which is built bounded.
struct RequestOf<'b>(Bounded<'b>);

impl<'de> DeserializeSeed<'de> for RequestOf<'_> {
    type Value = Json;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestOf<'_> {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionReview")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut request = Json::Null;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "request" {
                request = map.next_value_seed(self.0)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(request)
    }
}

/// Builds a [`Json`] value, charging each value to a shared budget and refusing nesting
/// beyond the limit.
#[derive(Clone, Copy)]
struct Bounded<'b> {
    budget: &'b Cell<usize>,
    limits: ParseLimits,
    depth: usize,
}

impl Bounded<'_> {
    fn nested(self) -> Self {
        Self {
            depth: self.depth + 1,
            ..self
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Json;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        if self.depth > self.limits.max_depth {
            return Err(de::Error::custom(format!(
                "nested deeper than {} levels",
                self.limits.max_depth
            )));
        }
        let Some(left) = self.budget.get().checked_sub(1) else {
            return Err(de::Error::custom(format!(
                "more than {} JSON values",
                self.limits.max_values
            )));
        };
        self.budget.set(left);
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
        Ok(Number::from_f64(v).map_or(Json::Null, Json::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let child = self.nested();
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(child)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let child = self.nested();
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(child)?;
            object.insert(key, value);
        }
        Ok(Json::Object(object))
    }
}

/// Step 3: the request's fields the server reads; the objects are only checked to be objects.
/// Required fields are those of `kube_core`'s `AdmissionRequest`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // read for their checks: a missing or mistyped field makes the review invalid
struct Head {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    request_kind: Option<GroupVersionKind>,
    #[serde(default)]
    request_resource: Option<GroupVersionResource>,
    #[serde(default)]
    request_sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    user_info: UserInfo,
    #[serde(default)]
    object: Option<ObjectHead>,
    #[serde(default)]
    old_object: Option<ObjectHead>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct ObjectHead {
    #[serde(default)]
    metadata: Option<MetaHead>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaHead {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
}

#[cfg(test)]
mod tests;
