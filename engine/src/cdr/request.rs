//! One FHIR REST interaction, independent of where it came from.
//!
//! An HTTP request to `/fhir/...` and an entry of a batch Bundle say the same thing (a method, a
//! URL relative to the base, a body, `If-Match`, `If-None-Exist`), so both are turned into a
//! [`FhirRequest`] and answered by the same code as a [`FhirResponse`]. This module also holds the
//! URL grammar (`Type/id/_history/vid`, `Type?query`) and query-string encoding, which are
//! hand-written because the engine has no URL crate and FHIR needs repeated, ordered parameters.

use serde_json::Value;

use super::outcome::CdrError;
use super::validate::{is_resource_type, valid_id};

/// The HTTP methods FHIR uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Read, vread, search, history, metadata.
    Get,
    /// Like GET, without a body in the HTTP response.
    Head,
    /// Create, `_search`, batch/transaction.
    Post,
    /// Update (also create-on-update and conditional update).
    Put,
    /// Delete (also conditional delete).
    Delete,
    /// Patch: recognised, not supported (405).
    Patch,
}

impl Method {
    /// Parses an HTTP method name as found in `Bundle.entry.request.method`.
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            _ => return None,
        })
    }

    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
        }
    }
}

/// What a client asked to get back after a write (`Prefer: return=...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Return {
    /// The resource as stored (the default, as in HAPI).
    #[default]
    Representation,
    /// No body.
    Minimal,
    /// An OperationOutcome.
    OperationOutcome,
}

/// One FHIR interaction.
#[derive(Debug, Clone, Default)]
pub struct FhirRequest {
    /// The HTTP method; `None` is read as GET.
    pub method: Option<Method>,
    /// The path relative to the base, without leading slash: `Patient/1`, `Patient`, `` (the
    /// base itself, for batch/transaction), `metadata`.
    pub path: String,
    /// The decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The parsed body, for POST and PUT.
    pub body: Option<Value>,
    /// `If-Match` (`W/"3"`, `"3"` or `3`).
    pub if_match: Option<String>,
    /// `If-None-Exist`: search criteria for a conditional create (`identifier=a|b`).
    pub if_none_exist: Option<String>,
    /// `Prefer: return=...`.
    pub prefer: Return,
    /// `Prefer: handling=strict`: unknown search parameters are an error instead of a warning.
    pub strict: bool,
}

impl FhirRequest {
    /// A request for `method` on `url`, which is relative to the base or starts with `base`;
    /// the query string, if any, is decoded into [`FhirRequest::query`].
    pub fn new(method: Method, url: &str, base: &str) -> FhirRequest {
        let url = strip_base(url, base);
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, parse_query(q)),
            None => (url, Vec::new()),
        };
        FhirRequest {
            method: Some(method),
            path: path.trim_matches('/').to_string(),
            query,
            ..FhirRequest::default()
        }
    }
}

/// The answer to a [`FhirRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct FhirResponse {
    /// HTTP status.
    pub status: u16,
    /// The body (a resource, a Bundle or an OperationOutcome), if any.
    pub body: Option<Value>,
    /// `Type/id/_history/vid` of the resource written or read, for `Location`/`Content-Location`.
    pub location: Option<String>,
    /// The version, for `ETag: W/"n"`.
    pub version: Option<u64>,
    /// When that version was written (Unix ms), for `Last-Modified`.
    pub last_modified: Option<i64>,
}

impl FhirResponse {
    /// A response with only a status and a body.
    pub fn body(status: u16, body: Value) -> FhirResponse {
        FhirResponse {
            status,
            body: Some(body),
            location: None,
            version: None,
            last_modified: None,
        }
    }

    /// The error's status with its OperationOutcome.
    pub fn error(e: &CdrError) -> FhirResponse {
        FhirResponse::body(e.status(), e.to_outcome())
    }

    /// `W/"n"` for the version, if there is one.
    pub fn etag(&self) -> Option<String> {
        self.version.map(etag)
    }
}

/// The weak ETag of a version.
pub fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

/// Reads a version out of `W/"3"`, `"3"` or `3`.
pub fn parse_etag(s: &str) -> Option<u64> {
    let s = s.trim();
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.trim_matches('"');
    s.parse().ok()
}

/// What a relative URL addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The base itself (batch/transaction; search over all types is not supported).
    Base,
    /// `metadata`.
    Metadata,
    /// `Type` (create, search, conditional update/delete).
    Type(String),
    /// `Type/_search`.
    Search(String),
    /// `Type/_history`: type-level history, not supported.
    TypeHistory(String),
    /// `Type/id`.
    Instance(String, String),
    /// `Type/id/_history`.
    History(String, String),
    /// `Type/id/_history/vid`.
    Version(String, String, String),
}

/// Parses a path relative to the base. Unknown types are 404 (as HAPI answers), bad ids 400.
pub fn parse_target(path: &str) -> Result<Target, CdrError> {
    let path = path.trim_matches('/');
    if path.is_empty() {
        return Ok(Target::Base);
    }
    let segs: Vec<&str> = path.split('/').collect();
    if segs[0] == "metadata" && segs.len() == 1 {
        return Ok(Target::Metadata);
    }
    let ty = segs[0];
    if !is_resource_type(ty) {
        return Err(CdrError::NotFound(format!(
            "unknown resource type '{ty}': this server handles the FHIR R4 resource types"
        )));
    }
    let ty = ty.to_string();
    let id_ok = |id: &str| {
        if valid_id(id) {
            Ok(id.to_string())
        } else {
            Err(CdrError::BadRequest(format!(
                "'{id}' is not a valid resource id ([A-Za-z0-9-.]{{1,64}})"
            )))
        }
    };
    match segs.as_slice() {
        [_] => Ok(Target::Type(ty)),
        [_, "_search"] => Ok(Target::Search(ty)),
        [_, "_history"] => Ok(Target::TypeHistory(ty)),
        [_, id] => Ok(Target::Instance(ty, id_ok(id)?)),
        [_, id, "_history"] => Ok(Target::History(ty, id_ok(id)?)),
        [_, id, "_history", vid] => Ok(Target::Version(ty, id_ok(id)?, vid.to_string())),
        _ => Err(CdrError::NotFound(format!(
            "no FHIR interaction at '{path}'"
        ))),
    }
}

/// Removes `base` (and a leading slash) from an absolute URL; relative URLs are returned as is.
pub fn strip_base<'a>(url: &'a str, base: &str) -> &'a str {
    let base = base.trim_end_matches('/');
    if !base.is_empty() {
        if let Some(rest) = url.strip_prefix(base) {
            if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
                return rest.trim_start_matches('/');
            }
        }
    }
    url.trim_start_matches('/')
}

/// Decodes `a=1&b=x%7Cy` into ordered pairs (`+` is a space, as in forms).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Percent-decodes one query component; invalid escapes are kept literally.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query component: keeps unreserved characters and `:`, `,`, `/` (all
/// allowed in a query by RFC 3986); `|` is not, and strict clients (`java.net.URI`) refuse it.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s.as_bytes() {
        if c.is_ascii_alphanumeric() || b"-._~:,/".contains(&c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Encodes pairs back into a query string.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(parse_target("").unwrap(), Target::Base);
        assert_eq!(
            parse_target("Patient").unwrap(),
            Target::Type("Patient".into())
        );
        assert_eq!(
            parse_target("Patient/1/_history/2").unwrap(),
            Target::Version("Patient".into(), "1".into(), "2".into())
        );
        assert_eq!(parse_target("Foo/1").unwrap_err().status(), 404);
        assert_eq!(parse_target("Patient/a_b").unwrap_err().status(), 400);
        let r = FhirRequest::new(
            Method::Get,
            "http://h/fhir/Patient?identifier=a%7Cb&name=J+D",
            "http://h/fhir",
        );
        assert_eq!(r.path, "Patient");
        assert_eq!(
            r.query,
            vec![
                ("identifier".into(), "a|b".into()),
                ("name".into(), "J D".into())
            ]
        );
        assert_eq!(
            strip_base("http://h/fhirx/Patient", "http://h/fhir"),
            "http://h/fhirx/Patient"
        );
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%C3%A9"), "é");
        assert_eq!(encode("a b&c|d"), "a%20b%26c%7Cd");
        assert_eq!(parse_etag("W/\"12\""), Some(12));
        assert_eq!(parse_etag("7"), Some(7));
    }
}
