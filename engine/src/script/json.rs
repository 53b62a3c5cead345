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
use serde_json::value::RawValue;
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
    convert(d, 0).map_err(|e| e.at(path))
}

/// A conversion error; the path is collected on the way out (innermost first), so the
/// success path allocates nothing for it.
struct ConvError {
    message: String,
    path: Vec<String>,
}

impl ConvError {
    /// The message, naming where in the value found at `path` it went wrong.
    fn at(self, path: &str) -> String {
        let inner: String = self.path.iter().rev().map(String::as_str).collect();
        let at = format!("{path}{inner}");
        let at = if at.is_empty() { "the top level" } else { &at };
        self.message.replace("{at}", at)
    }
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
        what_it_is(d)
    )))
}

/// A value JSON cannot hold, named as a script author knows it (not by its Rust type), with
/// what to do instead.
fn what_it_is(d: &Dynamic) -> String {
    use super::message::{ScriptField, ScriptGroup, ScriptSegment};
    if d.is::<ScriptField>() {
        "a Field (its text is field.value; or convert it, e.g. dt::identifier(field))".into()
    } else if d.is::<ScriptSegment>() {
        "a Segment (read its fields: seg[\"3.1\"], seg.field(3))".into()
    } else if d.is::<ScriptGroup>() {
        "a Group (read its segments: group.head, group.segments(\"OBX\"))".into()
    } else if d.is::<super::fhir::Transaction>() {
        "a Transaction (end the script with it, or add entries to it)".into()
    } else if d.is::<super::xml::XmlNode>() {
        "an XmlNode (its text is node.text)".into()
    } else if d.is_fnptr() {
        "a function pointer".into()
    } else {
        let name = d.type_name();
        format!("a {}", name.rsplit("::").next().unwrap_or(name))
    }
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

/// Writes a script value as JSON text into `out`, pruned as [`to_json`] prunes: the same bytes
/// as serializing what [`to_json`] returns, without building the tree (a Bundle's resources are
/// written once, as text, for the journal and the destinations that send text). Returns whether
/// anything was left; when not, `out` is as it was. `path` is as in [`to_json_at`].
pub fn write_json_at(d: &Dynamic, path: &str, out: &mut Vec<u8>) -> Result<bool, String> {
    write(d, 0, out).map_err(|e| e.at(path))
}

/// A JSON string, escaped as serde_json escapes (`"`, `\\`, and control characters; the
/// rest of UTF-8 as it is).
pub fn write_str(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // `start`: the first byte not written yet. Most strings need no escape: their bytes are
    // skipped 8 at a time, the loop has nothing to do, and the tail copies the whole string.
    let mut start = 0;
    let mut unicode = *b"\\u0000";
    for (i, &b) in bytes.iter().enumerate().skip(clean_prefix(bytes)) {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                unicode[4] = HEX[(b >> 4) as usize];
                unicode[5] = HEX[(b & 0xf) as usize];
                &unicode
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(short);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// How many leading bytes of `bytes` JSON writes as they are (no `"`, `\\` or control
/// character), counted a word at a time: a zero byte of `w ^ 0x22..` is a `"`, of
/// `w ^ 0x5c..` a `\\`, and `w - 0x20..` borrows into the top bit of a byte below 0x20 (the
/// classic "has a byte less than n" test; exact for the first such byte, which is all the
/// count needs).
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
        let found = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | (w.wrapping_sub(ONES * 0x20) & !w & HIGH);
        if found != 0 {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && !matches!(bytes[i], b'"' | b'\\' | 0..=0x1f) {
        i += 1;
    }
    i
}

/// JSON text this module wrote, as a `RawValue`, without parsing it again to check it
/// (`RawValue::from_string` does: ~10 instructions a byte, 4% of a message's). Goes through
/// serde_json's own raw-value protocol: a struct of that name is written verbatim by
/// serde_json's serializer, and `to_raw_value` wraps what was written. The tests below check
/// that the text comes back unchanged; debug builds also check that it parses.
pub fn raw_json(text: String) -> Box<RawValue> {
    /// serde_json's name for its raw-value struct and field (`serde_json::raw::TOKEN`).
    const TOKEN: &str = "$serde_json::private::RawValue";
    struct Verbatim<'a>(&'a str);
    impl serde::Serialize for Verbatim<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeStruct;
            let mut s = serializer.serialize_struct(TOKEN, 1)?;
            s.serialize_field(TOKEN, self.0)?;
            s.end()
        }
    }
    debug_assert!(
        serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok(),
        "not JSON: {text}"
    );
    serde_json::value::to_raw_value(&Verbatim(&text)).expect("text serializes")
}

fn write(d: &Dynamic, depth: usize, out: &mut Vec<u8>) -> Result<bool, ConvError> {
    if depth > MAX_DEPTH {
        return Err(fail(format!(
            "value nested deeper than {MAX_DEPTH} levels at {{at}}"
        )));
    }
    // The same tests in the same order as `convert`.
    if let Some(s) = d.read_lock::<ImmutableString>() {
        return Ok(write_text(&s, out));
    }
    if let Some(m) = d.read_lock::<Map>() {
        return write_map(&m, depth, out);
    }
    if let Some(a) = d.read_lock::<rhai::Array>() {
        let start = out.len();
        out.push(b'[');
        let mut any = false;
        for (i, item) in a.iter().enumerate() {
            let before = out.len();
            if any {
                out.push(b',');
            }
            match write(item, depth + 1, out) {
                Ok(true) => any = true,
                Ok(false) => out.truncate(before),
                Err(mut e) => {
                    out.truncate(start);
                    e.path.push(format!("[{i}]"));
                    return Err(e);
                }
            }
        }
        if !any {
            out.truncate(start);
            return Ok(false);
        }
        out.push(b']');
        return Ok(true);
    }
    if d.is_unit() {
        return Ok(false);
    }
    if let Ok(b) = d.as_bool() {
        out.extend_from_slice(if b { b"true" } else { b"false" });
        return Ok(true);
    }
    if let Ok(i) = d.as_int() {
        serde_json::to_writer(&mut *out, &i).expect("writing to a Vec cannot fail");
        return Ok(true);
    }
    if let Ok(f) = d.as_float() {
        return match Number::from_f64(f) {
            Some(n) => {
                serde_json::to_writer(&mut *out, &n).expect("writing to a Vec cannot fail");
                Ok(true)
            }
            None => Err(fail(format!("{f} at {{at}} is not a JSON number"))),
        };
    }
    if let Ok(c) = d.as_char() {
        return Ok(write_text(c.to_string().as_str(), out));
    }
    if let Some(m) = d.read_lock::<ScriptMessage>() {
        return Ok(write_text(m.encoded(), out));
    }
    Err(fail(format!(
        "{} at {{at}} cannot be converted to JSON",
        what_it_is(d)
    )))
}

fn write_text(s: &str, out: &mut Vec<u8>) -> bool {
    if s.trim().is_empty() {
        return false;
    }
    write_str(s, out);
    true
}

fn write_map(m: &Map, depth: usize, out: &mut Vec<u8>) -> Result<bool, ConvError> {
    let start = out.len();
    out.push(b'{');
    let mut any = false;
    let mut put = |k: &str, v: &Dynamic, out: &mut Vec<u8>| {
        let before = out.len();
        if any {
            out.push(b',');
        }
        write_str(k, out);
        out.push(b':');
        match write(v, depth + 1, out) {
            Ok(true) => {
                any = true;
                Ok(())
            }
            Ok(false) => {
                out.truncate(before);
                Ok(())
            }
            Err(mut e) => {
                e.path.push(format!(".{k}"));
                Err(e)
            }
        }
    };
    let mut written = Ok(());
    if let Some(rt) = m.get("resourceType") {
        written = put("resourceType", rt, out);
    }
    for (k, v) in m.iter() {
        if written.is_err() {
            break;
        }
        if k.as_str() != "resourceType" {
            written = put(k.as_str(), v, out);
        }
    }
    if let Err(e) = written {
        out.truncate(start);
        return Err(e);
    }
    if !any {
        out.truncate(start);
        return Ok(false);
    }
    out.push(b'}');
    Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `write_json_at` writes exactly what serializing `to_json`'s tree gives.
    #[test]
    fn text_is_the_serialized_tree() {
        let engine = rhai::Engine::new();
        let cases = [
            r#"#{active: true, resourceType: "Patient", name: [#{family: "O\"Brien \\ x", given: ["", (), "Zoë 東京"]}], gender: "  ", x: #{y: [], z: #{}}}"#,
            r#"#{n: 1.0, m: 0.1, big: 1e20, neg: -42, zero: 0, tab: "a\tb\nc\u0001", ch: 'q', t: false}"#,
            r#"[(), "", #{}, [[]], 3, #{a: [(), #{b: ""}], c: "d"}]"#,
            r#"#{"use": "official", "resourceType": "", value: [1, 2, 3]}"#,
            r#"#{a: #{b: #{c: #{d: ()}}}}"#,
            r#""just text""#,
        ];
        // Every ASCII character, controls included, in a value and in a key.
        let ascii: String = (0u8..0x80).map(char::from).collect();
        let mut all = Map::new();
        all.insert(ascii.as_str().into(), Dynamic::from(ascii.clone()));
        let mut values: Vec<Dynamic> = vec![Dynamic::from_map(all)];
        for src in cases {
            values.push(engine.eval(src).unwrap());
        }
        for (d, src) in values.iter().zip(std::iter::once("ascii").chain(cases)) {
            let tree = to_json(d).unwrap();
            let mut text = b"prefix".to_vec();
            let written = write_json_at(d, "", &mut text).unwrap();
            match tree {
                Some(v) => {
                    assert!(written, "{src}");
                    assert_eq!(
                        std::str::from_utf8(&text[6..]).unwrap(),
                        serde_json::to_string(&v).unwrap(),
                        "{src}"
                    );
                }
                None => {
                    assert!(!written, "{src}");
                    assert_eq!(text, b"prefix", "{src}");
                }
            }
        }
    }

    /// The text goes into a `RawValue` unchanged (serde_json's raw-value protocol holds).
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        // Every character that needs an escape, at every offset of a string longer than the
        // word the fast path reads, next to multi-byte UTF-8.
        let specials = [
            '"', '\\', '\n', '\r', '\t', '\u{8}', '\u{c}', '\u{0}', '\u{1f}', '\u{7f}',
        ];
        for special in specials {
            for at in 0..20 {
                let mut text: String = "aé€😀bcdefghijklmnopqr".chars().take(at).collect();
                text.push(special);
                text.push_str("xyz ~ \u{80}tail");
                let mut out = Vec::new();
                write_str(&text, &mut out);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&text).unwrap(),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn raw_json_keeps_the_text() {
        let text = r#"{"resourceType":"Bundle","entry":[{"a":"x\"y","n":1.5}]}"#;
        let raw = raw_json(text.to_owned());
        assert_eq!(raw.get(), text);
        assert_eq!(serde_json::to_string(&raw).unwrap(), text);
    }

    /// Errors name the path, as `to_json_at`'s do, and leave the buffer as it was.
    #[test]
    fn errors_name_the_path_and_write_nothing() {
        let engine = rhai::Engine::new();
        let d: Dynamic = engine
            .eval(r#"#{resourceType: "Patient", name: [#{family: "x"}, #{given: [|| 1]}]}"#)
            .unwrap();
        let mut text = b"[".to_vec();
        let e = write_json_at(&d, ".resource", &mut text).unwrap_err();
        assert_eq!(e, to_json_at(&d, ".resource").unwrap_err());
        assert!(e.contains(".resource.name[1].given[0]"), "{e}");
        assert_eq!(text, b"[");
    }
}
