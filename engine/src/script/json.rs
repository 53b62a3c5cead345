//! Script values ↔ `serde_json::Value`.
//!
//! Hand-written rather than `rhai::serde::from_dynamic` for two reasons: speed (the serde path
//! costs ~4 µs per 800-byte resource, see `DEPENDENCIES.md`), and FHIR's rule that an element
//! has a value or children. Mappings read many optional HL7 fields; letting scripts write
//! `#{family: msg["PID-5.1"]}` and dropping what came out empty keeps them short. So the
//! conversion prunes `()`, `""` (and all-blank strings), and arrays and maps left empty, at
//! every depth. `resourceType` is put first in every map (Rhai maps are sorted; JSON readers
//! expect it first).

use rhai::{Dynamic, ImmutableString, Map};
use serde_json::{Map as JsonMap, Number, Value};

use super::message::ScriptMessage;

/// Deeper than this is a script bug (or a cycle through shared values).
const MAX_DEPTH: usize = 64;

/// Converts a script value to JSON, pruning empty elements. `Ok(None)` when nothing is left.
pub fn to_json(d: &Dynamic) -> Result<Option<Value>, String> {
    to_json_at(d, "")
}

/// [`to_json`] of a value found at `path` (`.resource`), which errors name.
pub fn to_json_at(d: &Dynamic, path: &str) -> Result<Option<Value>, String> {
    convert(d, 0).map_err(|e| {
        let inner: String = e.path.iter().rev().map(String::as_str).collect();
        let at = format!("{path}{inner}");
        let at = if at.is_empty() { "the top level" } else { &at };
        e.message.replace("{at}", at)
    })
}

/// A conversion error; the path is collected on the way out (innermost first), so the
/// success path allocates nothing for it.
struct ConvError {
    message: String,
    path: Vec<String>,
}

fn fail(message: String) -> ConvError {
    ConvError {
        message,
        path: Vec::new(),
    }
}

fn convert(d: &Dynamic, depth: usize) -> Result<Option<Value>, ConvError> {
    if depth > MAX_DEPTH {
        return Err(fail(format!(
            "value nested deeper than {MAX_DEPTH} levels at {{at}}"
        )));
    }
    // Most frequent first, and `read_lock`/`is_*` rather than `as_*`, whose failures build an
    // error with the type's name: a map used to fail six casts before it was recognised.
    if let Some(s) = d.read_lock::<ImmutableString>() {
        return Ok(string(&s));
    }
    if let Some(m) = d.read_lock::<Map>() {
        return map(&m, depth);
    }
    if let Some(a) = d.read_lock::<rhai::Array>() {
        let mut out = Vec::with_capacity(a.len());
        for (i, item) in a.iter().enumerate() {
            match convert(item, depth + 1) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => {}
                Err(mut e) => {
                    e.path.push(format!("[{i}]"));
                    return Err(e);
                }
            }
        }
        return Ok((!out.is_empty()).then_some(Value::Array(out)));
    }
    if d.is_unit() {
        return Ok(None);
    }
    if let Ok(b) = d.as_bool() {
        return Ok(Some(Value::Bool(b)));
    }
    if let Ok(i) = d.as_int() {
        return Ok(Some(Value::Number(i.into())));
    }
    if let Ok(f) = d.as_float() {
        return match Number::from_f64(f) {
            Some(n) => Ok(Some(Value::Number(n))),
            None => Err(fail(format!("{f} at {{at}} is not a JSON number"))),
        };
    }
    if let Ok(c) = d.as_char() {
        return Ok(string(c.to_string().as_str()));
    }
    if let Some(m) = d.read_lock::<ScriptMessage>() {
        return Ok(string(m.encoded()));
    }
    Err(fail(format!(
        "{} at {{at}} cannot be converted to JSON",
        d.type_name()
    )))
}

fn string(s: &str) -> Option<Value> {
    (!s.trim().is_empty()).then(|| Value::String(s.to_owned()))
}

fn map(m: &Map, depth: usize) -> Result<Option<Value>, ConvError> {
    let mut out = JsonMap::with_capacity(m.len());
    let put = |k: &str, v: &Dynamic, out: &mut JsonMap<String, Value>| match convert(v, depth + 1) {
        Ok(Some(v)) => {
            out.insert(k.to_owned(), v);
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(mut e) => {
            e.path.push(format!(".{k}"));
            Err(e)
        }
    };
    if let Some(rt) = m.get("resourceType") {
        put("resourceType", rt, &mut out)?;
    }
    for (k, v) in m.iter() {
        if k.as_str() != "resourceType" {
            put(k.as_str(), v, &mut out)?;
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

/// Converts JSON (a lookup table's values) to a script value.
pub fn from_json(v: &serde_json::Value) -> Dynamic {
    match v {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(ImmutableString::from(s.as_str())),
        Value::Array(a) => Dynamic::from_array(a.iter().map(from_json).collect()),
        Value::Object(o) => {
            let mut m = Map::new();
            for (k, v) in o {
                m.insert(k.as_str().into(), from_json(v));
            }
            Dynamic::from_map(m)
        }
    }
}
