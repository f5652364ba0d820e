//! The policy file's JSON Schema, generated from the serde tree in [`super::schema`] (for editors
//! and for the Helm chart's `values.schema.json`, which embeds it under `policy`).

use super::schema::RawConfig;
use serde_json::{Value, json};

/// The JSON Schema (draft 2020-12) of a policy file.
pub fn policy_schema() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(RawConfig)).unwrap_or(Value::Null);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert("title".into(), json!("Portcullis policy"));
        obj.insert(
            "description".into(),
            json!("The structure of a Portcullis policy file. `portcullis check-config` also checks values (durations, regexes, key files)."),
        );
    }
    schema
}

/// `values` (a Helm `values.schema.json`) with `properties.policy` set to the policy schema and
/// the policy's definitions merged into its `$defs` (their `$ref`s are root-relative).
pub fn embed_in_values_schema(mut values: Value) -> Result<Value, String> {
    let mut policy = policy_schema();
    let defs = policy.as_object_mut().and_then(|p| p.remove("$defs")).unwrap_or_else(|| json!({}));
    if let Some(p) = policy.as_object_mut() {
        p.remove("$schema");
    }
    let root = values.as_object_mut().ok_or("the values schema is not a JSON object")?;
    let properties =
        root.entry("properties").or_insert_with(|| json!({})).as_object_mut().ok_or("`properties` is not an object")?;
    // The chart's one key beside the policy itself: use an existing ConfigMap instead.
    if let Some(props) = policy.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "existingConfigMap".into(),
            json!({
                "type": "string",
                "description": "Helm only: the name of a ConfigMap (key policy.yaml) holding the whole policy, listen included; the chart then renders none.",
            }),
        );
    }
    properties.insert("policy".into(), policy);
    let root_defs =
        root.entry("$defs").or_insert_with(|| json!({})).as_object_mut().ok_or("`$defs` is not an object")?;
    if let Value::Object(defs) = defs {
        for (name, def) in defs {
            root_defs.insert(name, def);
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    /// The committed schema (`docs/policy.schema.json`, for editors and reviewers) is the one the
    /// serde tree generates: a new key cannot land without it.
    #[test]
    fn the_committed_schema_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/policy.schema.json");
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("docs/policy.schema.json")).expect("JSON");
        assert!(
            committed == super::policy_schema(),
            "docs/policy.schema.json is stale: run `portcullis config-schema > docs/policy.schema.json`"
        );
    }
}
