//! A mediator's settings: OpenHIM's `configDefs` (what may be set, with which type) and the
//! checks a config must pass before it is stored and pushed back in a heartbeat.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::MediatorError;

/// What `GET` shows instead of a `password` value; a `PUT` that sends it back keeps the stored
/// secret (as OpenHIM's console does).
pub const MASK: &str = "**********";

/// One setting a mediator accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigDef {
    pub param: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub kind: ConfigType,
    /// For `option`: the allowed values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// For `struct`: its fields (not themselves structs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template: Vec<ConfigDef>,
    /// The value is an array of this type.
    #[serde(default)]
    pub array: bool,
}

/// OpenHIM's config parameter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigType {
    String,
    Bigstring,
    Bool,
    Number,
    Option,
    /// An object of string values.
    Map,
    /// An object whose fields are given by `template`.
    Struct,
    /// A string that is masked whenever the config is shown.
    Password,
}

fn invalid(message: String) -> MediatorError {
    MediatorError::Invalid(message)
}

/// The definitions themselves: structs need a flat template, options need values.
pub fn validate_defs(defs: &[ConfigDef]) -> Result<(), MediatorError> {
    for (i, def) in defs.iter().enumerate() {
        if def.param.is_empty() {
            return Err(invalid(format!("configDefs[{i}] needs a `param`")));
        }
        if defs[..i].iter().any(|d| d.param == def.param) {
            return Err(invalid(format!(
                "config param `{}` is defined twice",
                def.param
            )));
        }
        match def.kind {
            ConfigType::Struct if def.template.is_empty() => {
                return Err(invalid(format!(
                    "struct param `{}` needs a template",
                    def.param
                )));
            }
            ConfigType::Struct => {
                if def.template.iter().any(|t| t.kind == ConfigType::Struct) {
                    return Err(invalid(format!(
                        "struct param `{}` may not contain a struct",
                        def.param
                    )));
                }
                validate_defs(&def.template)?;
            }
            ConfigType::Option if def.values.is_empty() => {
                return Err(invalid(format!(
                    "option param `{}` needs a values array",
                    def.param
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every key of `config` must be defined, with a value of its type.
pub fn validate_config(
    defs: &[ConfigDef],
    config: &Map<String, Value>,
) -> Result<(), MediatorError> {
    for (param, value) in config {
        let def = defs
            .iter()
            .find(|d| &d.param == param)
            .ok_or_else(|| invalid(format!("no config definition for parameter `{param}`")))?;
        if def.array {
            let items = value.as_array().ok_or_else(|| {
                invalid(format!(
                    "config param `{param}` must be an array of {}",
                    type_name(def.kind)
                ))
            })?;
            for (i, item) in items.iter().enumerate() {
                validate_value(&format!("{param}[{i}]"), def, item)?;
            }
        } else {
            validate_value(param, def, value)?;
        }
    }
    Ok(())
}

fn validate_value(param: &str, def: &ConfigDef, value: &Value) -> Result<(), MediatorError> {
    let ok = match def.kind {
        ConfigType::String | ConfigType::Bigstring | ConfigType::Password => value.is_string(),
        ConfigType::Number => value.is_number(),
        ConfigType::Bool => value.is_boolean(),
        ConfigType::Option => value
            .as_str()
            .is_some_and(|v| def.values.iter().any(|allowed| allowed == v)),
        ConfigType::Map => value
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string)),
        ConfigType::Struct => match value.as_object() {
            Some(fields) => {
                validate_config(&def.template, fields)?;
                true
            }
            None => false,
        },
    };
    if ok {
        Ok(())
    } else if def.kind == ConfigType::Option {
        Err(invalid(format!(
            "config param `{param}` must be one of {}",
            def.values.join(", ")
        )))
    } else {
        Err(invalid(format!(
            "config param `{param}` must be {}",
            type_name(def.kind)
        )))
    }
}

fn type_name(kind: ConfigType) -> &'static str {
    match kind {
        ConfigType::String | ConfigType::Bigstring | ConfigType::Password => "a string",
        ConfigType::Number => "a number",
        ConfigType::Bool => "a boolean",
        ConfigType::Option => "one of its values",
        ConfigType::Map => "an object of strings",
        ConfigType::Struct => "an object",
    }
}

/// A copy of `config` with every `password` value (also inside structs) replaced by [`MASK`].
pub fn masked(defs: &[ConfigDef], config: &Map<String, Value>) -> Map<String, Value> {
    let mut out = config.clone();
    for def in defs {
        let Some(value) = out.get_mut(&def.param) else {
            continue;
        };
        match def.kind {
            ConfigType::Password => mask_value(value),
            ConfigType::Struct => {
                let mask_struct = |v: &mut Value| {
                    if let Some(fields) = v.as_object() {
                        *v = Value::Object(masked(&def.template, fields));
                    }
                };
                match value {
                    Value::Array(items) if def.array => items.iter_mut().for_each(mask_struct),
                    other => mask_struct(other),
                }
            }
            _ => {}
        }
    }
    out
}

fn mask_value(value: &mut Value) {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| *v = Value::String(MASK.into())),
        other => *other = Value::String(MASK.into()),
    }
}

/// Where a new config still holds [`MASK`] for a password (also inside a struct), puts back
/// the stored secret.
pub fn unmask(defs: &[ConfigDef], new: &mut Map<String, Value>, stored: &Map<String, Value>) {
    for def in defs {
        let (Some(value), Some(old)) = (new.get_mut(&def.param), stored.get(&def.param)) else {
            continue;
        };
        match (def.kind, value, old) {
            (ConfigType::Password, Value::String(s), Value::String(old)) if s == MASK => {
                *s = old.clone();
            }
            (ConfigType::Password, Value::Array(items), Value::Array(old)) => {
                for (item, old) in items.iter_mut().zip(old) {
                    if item == MASK {
                        *item = old.clone();
                    }
                }
            }
            (ConfigType::Struct, Value::Object(fields), Value::Object(old)) => {
                unmask(&def.template, fields, old);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> Vec<ConfigDef> {
        serde_json::from_value(json!([
            {"param": "url", "type": "string"},
            {"param": "strict", "type": "bool"},
            {"param": "max", "type": "number"},
            {"param": "mode", "type": "option", "values": ["a", "b"]},
            {"param": "headers", "type": "map"},
            {"param": "secret", "type": "password"},
            {"param": "tags", "type": "string", "array": true},
            {"param": "upstream", "type": "struct", "template": [
                {"param": "host", "type": "string"}, {"param": "key", "type": "password"}]}
        ]))
        .unwrap()
    }

    fn check(config: Value) -> Result<(), MediatorError> {
        validate_config(&defs(), config.as_object().unwrap())
    }

    #[test]
    fn values_must_have_their_declared_type() {
        validate_defs(&defs()).unwrap();
        check(
            json!({"url": "x", "strict": true, "max": 3, "mode": "b", "headers": {"a": "1"},
                     "secret": "s", "tags": ["t"], "upstream": {"host": "h"}}),
        )
        .unwrap();
        for (bad, says) in [
            (json!({"url": 1}), "a string"),
            (json!({"strict": "yes"}), "a boolean"),
            (json!({"max": "3"}), "a number"),
            (json!({"mode": "c"}), "one of a, b"),
            (json!({"headers": {"a": 1}}), "object of strings"),
            (json!({"tags": "t"}), "an array"),
            (json!({"tags": [1]}), "tags[0]"),
            (json!({"upstream": {"port": 1}}), "port"),
            (json!({"nope": 1}), "nope"),
        ] {
            let err = check(bad.clone()).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_definitions_are_refused() {
        for bad in [
            json!([{"param": "s", "type": "struct"}]),
            json!([{"param": "o", "type": "option"}]),
            json!([{"param": "s", "type": "struct", "template": [{"param": "t", "type": "struct", "template": [{"param": "x", "type": "string"}]}]}]),
            json!([{"param": "a", "type": "string"}, {"param": "a", "type": "bool"}]),
        ] {
            let defs: Vec<ConfigDef> = serde_json::from_value(bad.clone()).unwrap();
            assert!(validate_defs(&defs).is_err(), "{bad}");
        }
        assert!(
            serde_json::from_value::<ConfigDef>(json!({"param": "x", "type": "date"})).is_err()
        );
    }

    #[test]
    fn passwords_are_masked_and_a_mask_sent_back_keeps_the_secret() {
        let stored =
            json!({"secret": "hunter2", "url": "u", "upstream": {"host": "h", "key": "k1"}});
        let stored = stored.as_object().unwrap();
        let shown = masked(&defs(), stored);
        assert_eq!(shown["secret"], MASK);
        assert_eq!(shown["upstream"]["key"], MASK);
        assert_eq!(shown["url"], "u");
        assert!(!serde_json::to_string(&shown).unwrap().contains("hunter2"));
        let mut edited = shown.clone();
        edited["url"] = json!("v");
        unmask(&defs(), &mut edited, stored);
        assert_eq!(edited["secret"], "hunter2");
        assert_eq!(edited["upstream"]["key"], "k1");
        assert_eq!(edited["url"], "v");
    }
}
