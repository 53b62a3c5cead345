//! Small script utilities: hashing, deterministic ids, logging, `skip`/`reject`, string helpers.
//!
//! Deterministic ids matter because a replayed message must produce the same Bundle (the CDR
//! then sees the same conditional requests and `urn:uuid` references); they are SHA-256 over the
//! parts, each length-prefixed so that `("ab", "c")` and `("a", "bc")` differ. SHA-256 comes from
//! aws-lc-rs, already in the build through rustls.

use aws_lc_rs::digest;
use rhai::{Array, Dynamic, Engine, EvalAltResult};

use super::state::{self, Halt};

/// SHA-256 of bytes.
pub fn sha256_bytes(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        push_hex(&mut s, *b);
    }
    s
}

/// Appends a byte as two lowercase hex digits.
fn push_hex(out: &mut String, b: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.push(DIGITS[(b >> 4) as usize] as char);
    out.push(DIGITS[(b & 15) as usize] as char);
}

/// A UUID (RFC 9562 version 8, "custom") from the first 16 bytes of a hash.
pub fn uuid_from_hash(h: &[u8; 32]) -> String {
    let mut uuid = String::with_capacity(36);
    push_uuid(&mut uuid, h);
    uuid
}

/// Appends the UUID of a hash (see [`uuid_from_hash`]) to `out`.
pub fn push_uuid(out: &mut String, h: &[u8; 32]) {
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    push_uuid_text(out, &b);
}

/// Appends 16 bytes in a UUID's text form (`8-4-4-4-12` lowercase hex digits), as they are:
/// the caller has set the version and variant bits.
pub fn push_uuid_text(out: &mut String, b: &[u8; 16]) {
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        push_hex(out, *byte);
    }
}

/// The deterministic id of some text parts: a UUID from SHA-256 over the length-prefixed parts.
pub fn det_uuid<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    uuid_from_hash(&det_hash(parts))
}

/// SHA-256 over the length-prefixed parts: what [`det_uuid`] is made from.
pub fn det_hash<'a>(parts: impl IntoIterator<Item = &'a str>) -> [u8; 32] {
    // One digest call over a buffer: each `Context::update` is a call into aws-lc, and the
    // parts are short.
    let mut input = Vec::with_capacity(128);
    input.extend_from_slice(b"orbiter-det-id\0");
    for p in parts {
        input.extend_from_slice(&(p.len() as u64).to_be_bytes());
        input.extend_from_slice(p.as_bytes());
    }
    let d = digest::digest(&digest::SHA256, &input);
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

/// Text of a script value for hashing and ids: strings as they are, `()` as empty, others
/// through their display form.
pub fn part_text(d: &Dynamic) -> String {
    if d.is_unit() {
        String::new()
    } else if let Ok(s) = d.as_immutable_string_ref() {
        s.as_str().to_owned()
    } else {
        d.to_string()
    }
}

/// `det_id` over any number of script values.
pub fn det_id_of(parts: &[Dynamic]) -> String {
    let texts: Vec<String> = parts.iter().map(part_text).collect();
    det_uuid(texts.iter().map(String::as_str))
}

/// Whether a value is "nothing": `()`, an empty (or all-blank) string, an empty array or map.
pub fn is_blank(d: &Dynamic) -> bool {
    if d.is_unit() {
        return true;
    }
    if let Ok(s) = d.as_immutable_string_ref() {
        return s.trim().is_empty();
    }
    if let Ok(a) = d.as_array_ref() {
        return a.is_empty();
    }
    if let Ok(m) = d.as_map_ref() {
        return m.is_empty();
    }
    false
}

/// Percent-encodes a value for a FHIR search URL: everything but unreserved characters and
/// `: / . - _ ~` (so systems such as `urn:oid:1.2.3` or `http://x/y` stay readable).
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Registers `sha256`, `det_id`, `log`, `skip`, `reject`, `is_blank`, `url_encode`,
/// `join_nonblank`.
pub fn register(engine: &mut Engine) {
    engine.register_fn("sha256", |s: &str| hex(&sha256_bytes(s.as_bytes())));

    // det_id(parts...): Rhai has no variadic functions, so 1 to 6 parts, or an array.
    register_variadic(engine, "det_id", det_id_of);

    engine.register_fn("log", |d: Dynamic| state::log(part_text(&d)));
    engine.register_fn("skip", || -> Result<(), Box<EvalAltResult>> {
        Err(state::halt(Halt::Skip(String::new())))
    });
    engine.register_fn(
        "skip",
        |reason: Dynamic| -> Result<(), Box<EvalAltResult>> {
            Err(state::halt(Halt::Skip(part_text(&reason))))
        },
    );
    engine.register_fn(
        "reject",
        |reason: Dynamic| -> Result<(), Box<EvalAltResult>> {
            Err(state::halt(Halt::Reject(part_text(&reason))))
        },
    );
    engine.register_fn("is_blank", |d: Dynamic| is_blank(&d));
    engine.register_fn("url_encode", |s: &str| url_encode(s));
    engine.register_fn("join_nonblank", |parts: Array, sep: &str| {
        parts
            .iter()
            .map(part_text)
            .filter(|p| !p.trim().is_empty())
            .collect::<Vec<_>>()
            .join(sep)
    });
}

/// Registers `name(array)` and `name(a)` … `name(a, b, c, d, e, f)`, all answered by `f` over
/// the arguments as one slice (Rhai has no variadic functions).
pub(super) fn register_variadic(engine: &mut Engine, name: &str, f: fn(&[Dynamic]) -> String) {
    engine.register_fn(name, move |a: Array| f(&a));
    engine.register_fn(name, move |a: Dynamic| f(&[a]));
    engine.register_fn(name, move |a: Dynamic, b: Dynamic| f(&[a, b]));
    engine.register_fn(name, move |a: Dynamic, b: Dynamic, c: Dynamic| {
        f(&[a, b, c])
    });
    engine.register_fn(
        name,
        move |a: Dynamic, b: Dynamic, c: Dynamic, d: Dynamic| f(&[a, b, c, d]),
    );
    engine.register_fn(
        name,
        move |a: Dynamic, b: Dynamic, c: Dynamic, d: Dynamic, e: Dynamic| f(&[a, b, c, d, e]),
    );
    engine.register_fn(
        name,
        move |a: Dynamic, b: Dynamic, c: Dynamic, d: Dynamic, e: Dynamic, g: Dynamic| {
            f(&[a, b, c, d, e, g])
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            hex(&sha256_bytes(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn det_uuid_is_stable_and_separates_parts() {
        let a = det_uuid(["ab", "c"]);
        assert_eq!(a, det_uuid(["ab", "c"]));
        assert_ne!(a, det_uuid(["a", "bc"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8", "version 8: {a}");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "variant: {a}");
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("urn:oid:1.2.3"), "urn:oid:1.2.3");
        assert_eq!(url_encode("a b&c|d"), "a%20b%26c%7Cd");
        assert_eq!(url_encode("é"), "%C3%A9");
    }
}
