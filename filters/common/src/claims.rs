//! JWT claims as header or key text, the same way in every filter.

use serde_json::Value;

/// The value at `path` (nested objects) inside `root` as text: strings as they are, integers
/// without a fraction, booleans as `true`/`false`, arrays of those joined with commas. Objects,
/// `null` and empty text give `None`.
pub fn text_at(root: &Value, path: &[String]) -> Option<String> {
    let mut value = root;
    for key in path {
        value = value.as_object()?.get(key)?;
    }
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => u.to_string(),
                (None, Some(i)) => i.to_string(),
                _ => n.to_string(),
            }),
            _ => None,
        }
    }
    match value {
        Value::Array(items) => {
            let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
            parts.map(|p| p.join(","))
        }
        other => scalar(other),
    }
    .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_texts() {
        let claims: Value = serde_json::from_str(
            r#"{"sub":"u","n":42,"neg":-3,"f":1.5,"b":true,"groups":["a","b"],"nested":{"tier":"gold"},"obj":{},"e":""}"#,
        )
        .unwrap();
        let get = |p: &str| text_at(&claims, &p.split('.').map(String::from).collect::<Vec<_>>());
        assert_eq!(get("sub").as_deref(), Some("u"));
        assert_eq!(get("n").as_deref(), Some("42"));
        assert_eq!(get("neg").as_deref(), Some("-3"));
        assert_eq!(get("f").as_deref(), Some("1.5"));
        assert_eq!(get("b").as_deref(), Some("true"));
        assert_eq!(get("groups").as_deref(), Some("a,b"));
        assert_eq!(get("nested.tier").as_deref(), Some("gold"));
        assert_eq!(get("obj"), None);
        assert_eq!(get("e"), None);
        assert_eq!(get("missing"), None);
    }
}
