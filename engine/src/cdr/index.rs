//! The key layout of the CDR's sled tree, and the index entries of a resource.
//!
//! Everything lives in one sled tree; a commit writes a resource, its version and its index
//! entries together, made atomic across crashes by its redo record in the value log (see [`super::store`]).
//! Keys start with a tag byte:
//!
//! | key | value | what |
//! |---|---|---|
//! | `R type 0 id` | header + JSON | the current version of a resource (first chunk) |
//! | `C type 0 id 0 chunk` | JSON | the rest of the current version, when over one chunk |
//! | `H type 0 id 0 version chunk` | header + JSON | older versions (the history), chunked alike |
//! | `I type 0 param 0 value 0 id` | empty | string, token and reference index entries |
//! | `D type 0 param 0 L low id` | high | date index by start (every date value) |
//! | `D type 0 param 0 W high id` | low | date index by end, for wide values only |
//! | `M name` | bytes | store metadata (index layout version) |
//!
//! sled pays several microseconds per key written, so each indexed value gets one key:
//!
//! - strings: `n` + the normalised value (starts-with search; `:exact` and `:contains` check
//!   the candidates);
//! - tokens: `c` + `code 1F system` (code alone, `|code`, `system|code` are prefixes of it;
//!   `system|` filters a scan of the parameter);
//! - references: `r` + `id 1F Type` for relative references (so that a bare `subject=123` is
//!   a prefix of `subject=Patient/123`), `id 1F Type 1F base` for absolute ones (a search
//!   looks up both forms for a reference under its own base: FHIR matches the relative and
//!   absolute forms of the same resource), the normalised URL otherwise (`urn:`s);
//! - dates: an `L` key by start whose value is the end; values wider than [`NARROW`] (long
//!   or open-ended periods) also get a `W` key by end. A search "ends after X" scans `L` from
//!   `X - NARROW` plus the `W` keys.
//!
//! Reference parameters restricted to one type (`patient`) are not indexed on their own: they
//! are answered from the unrestricted parameter on the same elements (`subject`), whose keys
//! carry the type. Nor are string parameters on parts of a name or an address (`family`,
//! `address-city`): the whole element's parameter (`name`, `address`) has their values, and
//! its candidates are checked on the resources ([`params::alias_of`]). Values lose control characters and are cut at [`MAX_VALUE`] bytes; searches
//! for longer values check the candidates against the resources.

use std::collections::BTreeMap;

use serde_json::Value;

use super::params::{self, IndexValue, ParamDef};

/// The layout version of `I`/`D` entries: bump it when extraction changes, and the store
/// rebuilds the index from the current resources when it opens.
pub const LAYOUT_VERSION: u32 = 4;

/// Index values longer than this are cut (on a character boundary).
pub const MAX_VALUE: usize = 160;

/// Separator between the two parts of a token or reference value.
pub const SEP: char = '\u{1f}';

/// Date values spanning at least this much (ms) get a `W` key too: 400 days, more than any
/// date or dateTime precision (a year), so narrow values end less than this after they start.
pub const NARROW: i64 = 400 * 86_400_000;

const CURRENT: u8 = b'R';
const HISTORY: u8 = b'H';
const CHUNKS: u8 = b'C';
const INDEX: u8 = b'I';
const DATE: u8 = b'D';
const META: u8 = b'M';

/// Key of the current record of `ty/id`.
pub fn current_key(ty: &str, id: &str) -> Vec<u8> {
    let mut k = current_prefix(ty);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The type and id a [`current_key`] names; `None` for any other key.
pub fn parse_current_key(key: &[u8]) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(&[CURRENT])?;
    std::str::from_utf8(rest).ok()?.split_once('\0')
}

/// Prefix of all current records, of every type.
pub fn all_current_prefix() -> [u8; 1] {
    [CURRENT]
}

/// Prefix of all current records of `ty`.
pub fn current_prefix(ty: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ty.len() + 40);
    k.push(CURRENT);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k
}

/// Key of chunk `chunk` (from 1) of the current version of `ty/id`.
pub fn chunk_key(ty: &str, id: &str, chunk: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(ty.len() + id.len() + 5);
    k.push(CHUNKS);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// Key of chunk `chunk` of the older version `vid` of `ty/id`.
pub fn version_key(ty: &str, id: &str, vid: u64, chunk: u16) -> Vec<u8> {
    let mut k = history_prefix(ty, id);
    k.extend_from_slice(&vid.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

/// Prefix of every version of `ty/id`.
pub fn history_prefix(ty: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ty.len() + id.len() + 13);
    k.push(HISTORY);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k.push(0);
    k
}

/// Splits a history key (after its prefix) into version and chunk.
pub fn version_of(key: &[u8], prefix_len: usize) -> Option<(u64, u16)> {
    let rest = key.get(prefix_len..)?;
    if rest.len() != 10 {
        return None;
    }
    let vid = u64::from_be_bytes(rest[..8].try_into().ok()?);
    let chunk = u16::from_be_bytes(rest[8..].try_into().ok()?);
    Some((vid, chunk))
}

/// Prefix of the string/token/reference entries of one parameter.
pub fn param_prefix(ty: &str, param: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ty.len() + param.len() + 40);
    k.push(INDEX);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k.extend_from_slice(param.as_bytes());
    k.push(0);
    k
}

/// Prefix of the date entries of one parameter, by start (`b'L'`) or, for wide values, by end
/// (`b'W'`).
pub fn date_prefix(ty: &str, param: &str, bound: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(ty.len() + param.len() + 20);
    k.push(DATE);
    k.extend_from_slice(ty.as_bytes());
    k.push(0);
    k.extend_from_slice(param.as_bytes());
    k.push(0);
    k.push(bound);
    k
}

/// Key of a store metadata value.
pub fn meta_key(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Is this key an index entry (`I` or `D`)?
pub fn is_index_key(key: &[u8]) -> bool {
    matches!(key.first(), Some(&INDEX | &DATE))
}

/// The id at the end of an `I` key.
pub fn id_of_index_key(key: &[u8]) -> Option<&str> {
    let pos = key.iter().rposition(|&b| b == 0)?;
    std::str::from_utf8(&key[pos + 1..]).ok()
}

/// i64 → 8 bytes that sort like the numbers.
pub fn encode_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// Inverse of [`encode_i64`].
pub fn decode_i64(b: &[u8]) -> Option<i64> {
    let arr: [u8; 8] = b.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(arr) ^ (1 << 63)) as i64)
}

/// Drops characters that would break the key layout and cuts at [`MAX_VALUE`] bytes.
pub fn clean(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len().min(MAX_VALUE));
    clean_into(s, &mut out);
    String::from_utf8(out).expect("whole characters of a str")
}

/// [`clean`], appended to a key being built.
fn clean_into(s: &str, out: &mut Vec<u8>) {
    let start = out.len();
    if s.len() <= MAX_VALUE && !s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
        // No control character can be in it (C1 controls are U+0080-U+009F, `C2 xx` in UTF-8).
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let mut buf = [0u8; 4];
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() - start + c.len_utf8() > MAX_VALUE {
            break;
        }
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// The index value bytes (kind byte + text) of a string/token/reference entry.
pub fn value_bytes(kind: u8, text: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(text.len() + 1);
    v.push(kind);
    v.extend_from_slice(text.as_bytes());
    v
}

/// A token as keyed: `code 1F system` (system empty when absent).
pub fn token_key(system: Option<&str>, code: &str) -> String {
    let mut out = Vec::new();
    token_into(system, code, &mut out);
    String::from_utf8(out).expect("whole characters of a str")
}

/// [`token_key`], appended to a key being built.
fn token_into(system: Option<&str>, code: &str, out: &mut Vec<u8>) {
    clean_into(code, out);
    out.push(SEP as u8);
    clean_into(system.unwrap_or(""), out);
}

/// A normalised reference as keyed: `id 1F Type` when relative, `id 1F Type 1F base` when
/// absolute (so that a search can find the ones under its own base with the relative ones,
/// without the index depending on the base a request came in by), the reference otherwise.
pub fn reference_key(norm: &str) -> String {
    let mut out = Vec::new();
    reference_into(norm, &mut out);
    String::from_utf8(out).expect("whole characters of a str")
}

/// [`reference_key`], appended to a key being built.
fn reference_into(norm: &str, out: &mut Vec<u8>) {
    match norm.split_once('/') {
        Some((ty, id)) if params::reference_id(norm).is_some() => {
            out.extend_from_slice(id.as_bytes());
            out.push(SEP as u8);
            out.extend_from_slice(ty.as_bytes());
        }
        _ => match params::split_absolute(norm) {
            Some((base, ty, id)) => {
                out.extend_from_slice(id.as_bytes());
                out.push(SEP as u8);
                out.extend_from_slice(ty.as_bytes());
                out.push(SEP as u8);
                clean_into(base, out);
            }
            None => clean_into(norm, out),
        },
    }
}

/// Every index entry (key → value) of `resource`, stored as `ty/id`.
pub fn entries(ty: &str, id: &str, resource: &Value) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    for def in params::all(ty) {
        if params::alias_of(ty, def).is_some() {
            continue; // answered from the unrestricted parameter's entries
        }
        let values = params::extract(def, resource);
        if values.is_empty() {
            continue;
        }
        let prefix = param_prefix(ty, def.name);
        for value in values {
            add_entries(ty, id, def, &prefix, &value, &mut out);
        }
    }
    out
}

/// The entries of one value of parameter `def`; `prefix` is its [`param_prefix`]. Each key is
/// written once, into its own buffer (a resource's ~11 keys cost ~5 allocations each when
/// every part was a `String` of its own).
fn add_entries(
    ty: &str,
    id: &str,
    def: &ParamDef,
    prefix: &[u8],
    value: &IndexValue,
    out: &mut BTreeMap<Vec<u8>, Vec<u8>>,
) {
    let keyed = |kind: u8, write: &dyn Fn(&mut Vec<u8>), out: &mut BTreeMap<Vec<u8>, Vec<u8>>| {
        let mut k = Vec::with_capacity(prefix.len() + 64 + id.len());
        k.extend_from_slice(prefix);
        k.push(kind);
        write(&mut k);
        k.push(0);
        k.extend_from_slice(id.as_bytes());
        out.insert(k, Vec::new());
    };
    match value {
        IndexValue::Str(s) => {
            let norm = params::normalize_str(s);
            keyed(b'n', &|k| clean_into(&norm, k), out);
        }
        IndexValue::Token(system, code) => {
            keyed(b'c', &|k| token_into(system.as_deref(), code, k), out);
        }
        IndexValue::Ref(r) => keyed(b'r', &|k| reference_into(r, k), out),
        IndexValue::Date(range) => {
            let mut by_low = date_prefix(ty, def.name, b'L');
            by_low.extend_from_slice(&encode_i64(range.low));
            by_low.extend_from_slice(id.as_bytes());
            out.insert(by_low, encode_i64(range.high).to_vec());
            if range.high.saturating_sub(range.low) >= NARROW {
                let mut by_high = date_prefix(ty, def.name, b'W');
                by_high.extend_from_slice(&encode_i64(range.high));
                by_high.extend_from_slice(id.as_bytes());
                out.insert(by_high, encode_i64(range.low).to_vec());
            }
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_round_trip() {
        for v in [i64::MIN / 4, -1, 0, 1, 1_700_000_000_000] {
            assert_eq!(decode_i64(&encode_i64(v)), Some(v));
        }
        assert!(encode_i64(-1) < encode_i64(0));
        let k = version_key("Patient", "p1", 3, 1);
        assert_eq!(
            version_of(&k, history_prefix("Patient", "p1").len()),
            Some((3, 1))
        );
        let p = json!({"resourceType": "Patient", "identifier": [{"system": "s", "value": "v\u{0}1"}],
            "name": [{"family": "Ab"}], "birthDate": "2000"});
        let e = entries("Patient", "p1", &p);
        let ids: Vec<&str> = e
            .keys()
            .filter(|k| k[0] == b'I')
            .filter_map(|k| id_of_index_key(k))
            .collect();
        assert!(ids.iter().all(|i| *i == "p1"), "{ids:?}");
        // identifier: c; name: n (family shares it); birthdate: L (a year is narrow).
        assert_eq!(e.len(), 1 + 1 + 1, "{e:?}");
        let wide = json!({"resourceType": "Encounter", "subject": {"reference": "Patient/p1"},
            "period": {"start": "2020-01-01"}});
        let e = entries("Encounter", "e1", &wide);
        // subject (patient shares it), date: L + W (open-ended).
        assert_eq!(e.len(), 1 + 2, "{e:?}");
        assert!(e.keys().any(|k| k.ends_with(b"p1\x1fPatient\0e1")));
        assert_eq!(clean(&"é".repeat(100)).len(), MAX_VALUE);
    }

    #[test]
    fn keys_are_cleaned_as_characters_are() {
        let reference = |s: &str| {
            let mut out = String::new();
            for c in s.chars().filter(|c| !c.is_control()) {
                if out.len() + c.len_utf8() > MAX_VALUE {
                    break;
                }
                out.push(c);
            }
            out
        };
        let long = "x".repeat(MAX_VALUE - 1);
        for s in [
            "",
            "plain",
            "tab\there",
            "del\u{7f}",
            "c1\u{85}next",
            "nbsp\u{a0}©",
            "émile",
            &format!("{long}é"),
            &format!("{long}ab"),
            &format!("{long}\u{1}é"),
            &"😀".repeat(50),
        ] {
            assert_eq!(clean(s), reference(s), "{s:?}");
        }
        assert_eq!(token_key(Some("sys\n"), "c|1"), "c|1\u{1f}sys");
        assert_eq!(reference_key("Patient/p1"), "p1\u{1f}Patient");
        assert_eq!(reference_key("urn:uuid:x\u{0}"), "urn:uuid:x");
        assert_eq!(
            reference_key("http://h:1/fhir/Patient/p1"),
            "p1\u{1f}Patient\u{1f}http://h:1/fhir"
        );
        assert_eq!(reference_key("http://h/x/y"), "http://h/x/y");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_current_key_gives_back_its_type_and_id_and_no_other_key_does() {
        let key = current_key("Patient", "p-1.x");
        assert_eq!(parse_current_key(&key), Some(("Patient", "p-1.x")));
        assert_eq!(
            parse_current_key(&version_key("Patient", "p-1.x", 1, 0)),
            None
        );
        assert_eq!(parse_current_key(&meta_key("layout")), None);
    }
}
