//! Compiled `JwtRequirement` trees.

use std::collections::BTreeMap;

use crate::ConfigError;
use crate::config::JwtRequirement;

/// What a request must present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// A valid token of provider number `provider`, with `audiences` overriding its own.
    Provider {
        /// Index into the authenticator's providers.
        provider: usize,
        /// Audience override (`provider_and_audiences`).
        audiences: Option<Vec<String>>,
    },
    /// Any one of these.
    Any(Vec<Requirement>),
    /// All of these.
    All(Vec<Requirement>),
    /// A token, if present, must be valid for the provider its issuer names.
    AllowMissing {
        /// The providers whose locations and issuers count; `None` for all. Inside
        /// `requires_any` these are the providers its other requirements name, as in Envoy.
        among: Option<Vec<usize>>,
    },
    /// Tokens are verified (and their outputs applied when good), but never block.
    AllowMissingOrFailed {
        /// As for [`Requirement::AllowMissing`].
        among: Option<Vec<usize>>,
    },
}

impl Requirement {
    fn is_bypass(&self) -> bool {
        matches!(
            self,
            Requirement::AllowMissing { .. } | Requirement::AllowMissingOrFailed { .. }
        )
    }
}

/// Envoy's `requires_any`: the regular requirements in order, then at most one bypass
/// requirement (`allow_missing_or_failed` over `allow_missing`) limited to the providers the
/// regular ones name.
fn any_in_envoy_order(children: Vec<Requirement>) -> Vec<Requirement> {
    let (bypass, mut regular): (Vec<_>, Vec<_>) =
        children.into_iter().partition(Requirement::is_bypass);
    let among: Vec<usize> = regular
        .iter()
        .filter_map(|r| match r {
            Requirement::Provider { provider, .. } => Some(*provider),
            _ => None,
        })
        .collect();
    let among = (!among.is_empty()).then_some(among);
    let lenient = bypass
        .iter()
        .any(|r| matches!(r, Requirement::AllowMissingOrFailed { .. }));
    if lenient {
        regular.push(Requirement::AllowMissingOrFailed { among });
    } else if !bypass.is_empty() {
        regular.push(Requirement::AllowMissing { among });
    }
    regular
}

/// Compiles a requirement; `providers` maps names to indices; `field` names it in errors.
/// `Ok(None)` is the empty requirement (no check).
pub fn compile(
    raw: &JwtRequirement,
    providers: &BTreeMap<String, usize>,
    field: &str,
) -> Result<Option<Requirement>, ConfigError> {
    let provider = |name: &str, f: String| {
        providers
            .get(name)
            .copied()
            .ok_or_else(|| ConfigError::invalid(f, format!("unknown provider {name:?}")))
    };
    let list = |reqs: &[JwtRequirement], f: &str| -> Result<Vec<Requirement>, ConfigError> {
        if reqs.len() < 2 {
            return Err(ConfigError::invalid(
                f,
                "needs at least two requirements (as Envoy)",
            ));
        }
        reqs.iter()
            .enumerate()
            .map(|(i, r)| {
                compile(r, providers, &format!("{f}.requirements[{i}]"))?.ok_or_else(|| {
                    ConfigError::invalid(format!("{f}.requirements[{i}]"), "is empty")
                })
            })
            .collect()
    };
    let mut set = Vec::new();
    if let Some(name) = &raw.provider_name {
        set.push(Requirement::Provider {
            provider: provider(name, format!("{field}.provider_name"))?,
            audiences: None,
        });
    }
    if let Some(pa) = &raw.provider_and_audiences {
        set.push(Requirement::Provider {
            provider: provider(
                &pa.provider_name,
                format!("{field}.provider_and_audiences.provider_name"),
            )?,
            audiences: Some(pa.audiences.clone()),
        });
    }
    if let Some(any) = &raw.requires_any {
        set.push(Requirement::Any(any_in_envoy_order(list(
            &any.requirements,
            &format!("{field}.requires_any"),
        )?)));
    }
    if let Some(all) = &raw.requires_all {
        set.push(Requirement::All(list(
            &all.requirements,
            &format!("{field}.requires_all"),
        )?));
    }
    if raw.allow_missing.is_some() {
        set.push(Requirement::AllowMissing { among: None });
    }
    if raw.allow_missing_or_failed.is_some() {
        set.push(Requirement::AllowMissingOrFailed { among: None });
    }
    match set.len() {
        0 => Ok(None),
        1 => Ok(set.pop()),
        _ => Err(ConfigError::invalid(
            field,
            "sets more than one requirement kind (it is a oneof)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn providers() -> BTreeMap<String, usize> {
        [("a".to_string(), 0), ("b".to_string(), 1)].into()
    }

    fn compile_json(json: &str) -> Result<Option<Requirement>, ConfigError> {
        compile(&serde_json::from_str(json).unwrap(), &providers(), "r")
    }

    #[test]
    fn compiles_nested_requirements() {
        let r = compile_json(
            r#"{"requires_any":{"requirements":[{"provider_name":"a"},
                {"requiresAll":{"requirements":[{"provider_name":"b"},{"allow_missing":{}}]}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Some(Requirement::Any(vec![
                Requirement::Provider {
                    provider: 0,
                    audiences: None
                },
                Requirement::All(vec![
                    Requirement::Provider {
                        provider: 1,
                        audiences: None
                    },
                    Requirement::AllowMissing { among: None }
                ]),
            ]))
        );
        // In requires_any the bypass goes last and covers only the named providers.
        let r = compile_json(
            r#"{"requires_any":{"requirements":[{"allow_missing":{}},{"provider_name":"b"},
                {"allow_missing_or_failed":{}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            Some(Requirement::Any(vec![
                Requirement::Provider {
                    provider: 1,
                    audiences: None
                },
                Requirement::AllowMissingOrFailed {
                    among: Some(vec![1])
                },
            ]))
        );
        assert_eq!(compile_json("{}").unwrap(), None);
    }

    #[test]
    fn names_the_bad_field() {
        let err = compile_json(
            r#"{"requires_any":{"requirements":[{"provider_name":"a"},{"provider_name":"zz"}]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("r.requires_any.requirements[1].provider_name"),
            "{err}"
        );
        let err = compile_json(r#"{"provider_name":"a","allow_missing":{}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("oneof"), "{err}");
    }
}
