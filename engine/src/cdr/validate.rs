//! Structural checks of incoming resources against FHIR R4 (4.0.1).
//!
//! There is no good R4 model crate (see DEPENDENCIES.md), and the store keeps resources as JSON,
//! so this module checks what a FHIR parser would: a known `resourceType`, a valid `id`, the JSON
//! shape of the common elements of the common resource types (array or single, object or
//! primitive), the formats of dates, instants, codes and references anywhere in the resource,
//! no `null`s and no empty values. It also checks a few rules a validator would (required
//! elements, required value sets such as `gender`, periods that end before they start).
//!
//! Status codes, following the FHIR RESTful API page: 400 when the body is not a FHIR resource
//! of the right type or fails the basic format rules, 422 when it is one but breaks a rule of
//! the specification (cardinality, required binding, invariant). Unknown elements are a 400, as
//! with HAPI's strict parser, where [`super::r4`] has the type's table (the common resource
//! types, the complex datatypes, Extension); elsewhere (other types, backbone elements) names
//! are not checked. So is a choice element with two values (`valueString` and `valueInteger`).

use serde_json::{Map, Value};

use super::datetime::{self, Kind};
use super::outcome::{CdrError, Issue};
use super::r4::{
    binding, choices, datatype_fields, required, resource_fields, type_by_name, Ty, F, RESOURCE,
};
use Ty::*;

pub use super::r4::{is_resource_type, R4_TYPES};

/// Is `id` a valid FHIR id (`[A-Za-z0-9\-\.]{1,64}`)?
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Checks the syntax of a `Reference.reference`: `Type/id`, `Type/id/_history/vid`,
/// `urn:uuid:<uuid>`, `urn:oid:<oid>`, an absolute `http(s)` URL, `#local`, or a conditional
/// reference `Type?criteria` (resolved when written).
pub fn check_reference(r: &str) -> Result<(), String> {
    if r.is_empty() || r.chars().any(char::is_whitespace) {
        return Err("a reference must be non-empty and contain no whitespace".into());
    }
    if let Some(local) = r.strip_prefix('#') {
        let _ = local;
        return Ok(());
    }
    if let Some(uuid) = r.strip_prefix("urn:uuid:") {
        return if is_uuid(uuid) {
            Ok(())
        } else {
            Err(format!("'{r}' is not a valid urn:uuid"))
        };
    }
    if let Some(oid) = r.strip_prefix("urn:oid:") {
        return if is_oid(oid) {
            Ok(())
        } else {
            Err(format!("'{r}' is not a valid urn:oid"))
        };
    }
    if let Some(rest) = r
        .strip_prefix("http://")
        .or_else(|| r.strip_prefix("https://"))
    {
        return if rest.is_empty() {
            Err(format!("'{r}' is not a valid URL"))
        } else {
            Ok(())
        };
    }
    if let Some((ty, query)) = r.split_once('?') {
        return if is_resource_type(ty) && !query.is_empty() {
            Ok(())
        } else {
            Err(format!("'{r}' is not a valid conditional reference"))
        };
    }
    let parts: Vec<&str> = r.split('/').collect();
    let ok = match parts.as_slice() {
        [ty, id] => is_resource_type(ty) && valid_id(id),
        [ty, id, "_history", vid] => is_resource_type(ty) && valid_id(id) && valid_id(vid),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{r}' is not a valid reference (expected Type/id, urn:uuid:..., an absolute URL or #id)"
        ))
    }
}

/// Is `s` a UUID in its 8-4-4-4-12 hex form?
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_oid(s: &str) -> bool {
    let mut arcs = s.split('.');
    let first_ok = matches!(arcs.next(), Some("0" | "1" | "2"));
    let mut n = 0;
    let rest_ok = arcs.all(|a| {
        n += 1;
        !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()) && (a == "0" || !a.starts_with('0'))
    });
    first_ok && rest_ok && n > 0
}

/// Checks a resource. `expected_type` is the type named by the URL, when there is one.
pub fn check_resource(resource: &Value, expected_type: Option<&str>) -> Result<(), CdrError> {
    let ty = resource_frame(resource, expected_type)?;
    let mut c = Checker::default();
    if let Some(obj) = resource.as_object() {
        c.resource(ty, &At::Root(ty), obj, false);
    }
    if !c.invalid.is_empty() {
        return Err(CdrError::Invalid(c.invalid));
    }
    if !c.rules.is_empty() {
        return Err(CdrError::Unprocessable(c.rules));
    }
    Ok(())
}

/// The resource-level checks (object, resourceType, id); returns the type.
fn resource_frame<'a>(resource: &'a Value, expected: Option<&str>) -> Result<&'a str, CdrError> {
    let bad =
        |expr: &str, text: String| CdrError::Invalid(vec![Issue::at("structure", expr, text)]);
    let Some(obj) = resource.as_object() else {
        return Err(bad(
            "",
            "the body must be a JSON object (a FHIR resource)".into(),
        ));
    };
    let ty = match obj.get("resourceType") {
        Some(Value::String(t)) => t.as_str(),
        _ => {
            return Err(bad(
                "resourceType",
                "resourceType is missing or not a string".into(),
            ))
        }
    };
    if !is_resource_type(ty) {
        return Err(bad(
            "resourceType",
            format!("unknown resource type '{ty}' (not in FHIR R4)"),
        ));
    }
    if let Some(expected) = expected {
        if ty != expected {
            return Err(bad(
                "resourceType",
                format!("resourceType '{ty}' does not match the type in the URL ('{expected}')"),
            ));
        }
    }
    match obj.get("id") {
        None => {}
        Some(Value::String(id)) if valid_id(id) => {}
        Some(other) => {
            return Err(CdrError::Invalid(vec![Issue::at(
                "value",
                format!("{ty}.id"),
                format!("{other} is not a valid id ([A-Za-z0-9-.]{{1,64}})"),
            )]))
        }
    }
    Ok(ty)
}

/// Where an element is (`Patient.name[0].given`), as links on the stack: the text is only
/// written when an issue names it. Formatting every element's path up front was half the
/// checker's cost on valid resources.
#[derive(Clone, Copy)]
enum At<'a> {
    Root(&'a str),
    Key(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Root(name) => f.write_str(name),
            At::Key(parent, key) => write!(f, "{parent}.{key}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Collects issues: `invalid` ones make a 400, `rules` ones a 422.
#[derive(Default)]
struct Checker {
    invalid: Vec<Issue>,
    rules: Vec<Issue>,
}

const MAX_ISSUES: usize = 50;
const MAX_DEPTH: usize = 64;

impl Checker {
    fn bad(&mut self, code: &'static str, path: &At<'_>, text: String) {
        if self.invalid.len() < MAX_ISSUES {
            self.invalid.push(Issue::at(code, path.to_string(), text));
        }
    }

    fn rule(&mut self, code: &'static str, path: &At<'_>, text: String) {
        if self.rules.len() < MAX_ISSUES {
            self.rules.push(Issue::at(code, path.to_string(), text));
        }
    }

    /// A resource at `path` (its type name for the root, `X.contained[0]` for contained ones).
    fn resource(&mut self, ty: &str, path: &At<'_>, obj: &Map<String, Value>, contained: bool) {
        let fields = resource_fields(ty);
        for (key, value) in obj {
            let child = At::Key(path, key);
            if key == "contained" {
                self.contained(ty, &child, value, contained);
                continue;
            }
            if key == "resourceType" || key == "id" {
                continue; // checked by resource_frame
            }
            if key == "meta" {
                // versionId and lastUpdated are the server's; the rest is checked generically.
                if !value.is_object() {
                    self.bad("structure", &child, "meta must be an object".into());
                }
                continue;
            }
            let field = RESOURCE
                .iter()
                .chain(fields.iter())
                .find(|f| f.name == key.as_str());
            if field.is_none() && !fields.is_empty() && !is_extension_of(key, RESOURCE, fields) {
                self.unknown(&child, key);
                continue;
            }
            self.element(obj, key, &child, value, field, 1);
            if let (Some(allowed), Some(f)) = (binding(ty, key), field) {
                self.check_binding(&child, value, allowed, f.many);
            }
        }
        for prefix in choices(ty) {
            self.one_choice(path, obj, prefix);
        }
        for req in required(ty) {
            let present = match req.strip_suffix("[x]") {
                Some(prefix) => obj.keys().any(|k| {
                    k.strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
                }),
                None => obj.contains_key(*req),
            };
            if !present {
                self.rule(
                    "required",
                    &At::Key(path, req),
                    format!("{ty}.{req} is required (minimum cardinality 1)"),
                );
            }
        }
    }

    fn unknown(&mut self, path: &At<'_>, key: &str) {
        self.bad(
            "structure",
            path,
            format!("unknown element '{key}' (not in FHIR R4 here)"),
        );
    }

    /// At most one of the `prefixType` names of choice element `prefix[x]`.
    fn one_choice(&mut self, path: &At<'_>, obj: &Map<String, Value>, prefix: &str) {
        let mut names = obj.keys().filter(|k| is_choice_of(k, prefix));
        if let (Some(a), Some(b)) = (names.next(), names.next()) {
            let name = format!("{prefix}[x]");
            self.bad(
                "structure",
                &At::Key(path, &name),
                format!("{prefix}[x] has more than one value ('{a}' and '{b}')"),
            );
        }
    }

    fn contained(&mut self, parent: &str, path: &At<'_>, value: &Value, nested: bool) {
        let Some(items) = value.as_array() else {
            self.bad(
                "structure",
                path,
                "contained must be an array of resources".into(),
            );
            return;
        };
        if nested {
            self.bad(
                "structure",
                path,
                "a contained resource cannot contain other resources".into(),
            );
            return;
        }
        for (i, item) in items.iter().enumerate() {
            let p = At::Index(path, i);
            match resource_frame(item, None) {
                Err(e) => {
                    for mut issue in e.issues() {
                        issue.expression = Some(p.to_string());
                        self.invalid.push(issue);
                    }
                }
                Ok(ty) => {
                    if item.get("id").is_none() {
                        self.bad(
                            "required",
                            &p,
                            format!("a resource contained in {parent} needs an id"),
                        );
                    }
                    if let Some(obj) = item.as_object() {
                        self.resource(ty, &p, obj, true);
                    }
                }
            }
        }
    }

    fn check_binding(&mut self, path: &At<'_>, value: &Value, allowed: &[&str], many: bool) {
        let values: Vec<&Value> = match (many, value) {
            (true, Value::Array(items)) => items.iter().collect(),
            (false, v) => vec![v],
            _ => return,
        };
        for v in values {
            if let Some(code) = v.as_str() {
                if !allowed.contains(&code) {
                    self.rule(
                        "code-invalid",
                        path,
                        format!(
                            "'{code}' is not one of the allowed codes ({})",
                            allowed.join(", ")
                        ),
                    );
                }
            }
        }
    }

    /// One element `key` of `parent`, with its table entry when there is one.
    fn element(
        &mut self,
        parent: &Map<String, Value>,
        key: &str,
        path: &At<'_>,
        value: &Value,
        field: Option<&F>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            self.bad(
                "structure",
                path,
                "the resource is nested too deeply".into(),
            );
            return;
        }
        if let Some(base) = key.strip_prefix('_') {
            // The extension/id part of a primitive: objects (or an array of objects and nulls).
            self.primitive_extension(base, path, value, depth);
            return;
        }
        let (many, ty) = match field {
            Some(f) => (Some(f.many), Some(f.ty)),
            None => (None, type_by_name(key)),
        };
        // A type guessed from the name only applies to values of the matching JSON kind (some
        // `start`s are integers).
        let guessed = field.is_none();
        match value {
            Value::Array(items) => {
                if many == Some(false) {
                    self.bad(
                        "structure",
                        path,
                        format!("'{key}' must be a single value, not an array"),
                    );
                    return;
                }
                if items.is_empty() {
                    self.bad(
                        "structure",
                        path,
                        format!("'{key}' is an empty array (omit it instead)"),
                    );
                    return;
                }
                let has_extensions = parent.keys().any(|k| k.strip_prefix('_') == Some(key));
                for (i, item) in items.iter().enumerate() {
                    let p = At::Index(path, i);
                    match item {
                        Value::Null if has_extensions => {}
                        Value::Array(_) => {
                            self.bad("structure", &p, "arrays cannot contain arrays".into());
                        }
                        _ => self.single(key, &p, item, soft(ty, guessed, item), depth),
                    }
                }
            }
            _ => {
                if many == Some(true) {
                    self.bad("structure", path, format!("'{key}' must be an array"));
                    return;
                }
                self.single(key, path, value, soft(ty, guessed, value), depth);
            }
        }
    }

    fn primitive_extension(&mut self, base: &str, path: &At<'_>, value: &Value, depth: usize) {
        let check = |c: &mut Checker, p: &At<'_>, v: &Value| match v {
            Value::Object(o) if !o.is_empty() => c.object(o, p, &[], depth + 1),
            _ => c.bad(
                "structure",
                p,
                format!("'_{base}' must hold objects (id, extension)"),
            ),
        };
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.is_null() {
                        check(self, &At::Index(path, i), item);
                    }
                }
            }
            v => check(self, path, v),
        }
    }

    /// One value (not an array) of element `key`, of type `ty` when known.
    fn single(&mut self, key: &str, path: &At<'_>, value: &Value, ty: Option<Ty>, depth: usize) {
        if value.is_null() {
            self.bad(
                "structure",
                path,
                format!("'{key}' is null (omit it instead)"),
            );
            return;
        }
        if let Value::String(s) = value {
            if s.is_empty() {
                self.bad(
                    "value",
                    path,
                    format!("'{key}' is an empty string (omit it instead)"),
                );
                return;
            }
        }
        if key == "reference" {
            match value.as_str() {
                Some(r) => {
                    if let Err(e) = check_reference(r) {
                        self.bad("value", path, e);
                    }
                }
                None => self.bad("structure", path, "reference must be a string".into()),
            }
            return;
        }
        let Some(ty) = ty else {
            if let Value::Object(o) = value {
                self.untyped_object(key, path, o, depth);
            }
            return;
        };
        let expect = |c: &mut Checker, what: &str| {
            c.bad(
                "structure",
                path,
                format!("'{key}' must be {what}, found {}", kind_of(value)),
            );
        };
        match ty {
            Str => {
                if !value.is_string() {
                    expect(self, "a string");
                }
            }
            Code => match value.as_str() {
                Some(s) if s.trim() != s || s.contains("  ") => {
                    self.bad(
                        "value",
                        path,
                        format!("'{s}' is not a valid code (whitespace)"),
                    );
                }
                Some(_) => {}
                None => expect(self, "a code (string)"),
            },
            Uri => match value.as_str() {
                Some(s) if s.chars().any(char::is_whitespace) => {
                    self.bad(
                        "value",
                        path,
                        format!("'{s}' is not a valid uri (whitespace)"),
                    );
                }
                Some(_) => {}
                None => expect(self, "a uri (string)"),
            },
            Bool => {
                if !value.is_boolean() {
                    expect(self, "a boolean");
                }
            }
            Dec => {
                if !value.is_number() {
                    expect(self, "a number");
                }
            }
            Int => {
                if value.as_i64().is_none_or(|n| i32::try_from(n).is_err()) {
                    expect(self, "a 32-bit integer");
                }
            }
            Date | DateTime | Instant => {
                let (kind, name) = match ty {
                    Date => (Kind::Date, "date (YYYY, YYYY-MM or YYYY-MM-DD)"),
                    DateTime => (
                        Kind::DateTime,
                        "dateTime (a date, or date and time with zone)",
                    ),
                    _ => (
                        Kind::Instant,
                        "instant (date and time to the second, with zone)",
                    ),
                };
                match value.as_str() {
                    Some(s) if datetime::parse(s, kind).is_some() => {}
                    Some(s) => self.bad("value", path, format!("'{s}' is not a valid {name}")),
                    None => expect(self, "a string"),
                }
            }
            Obj => match value {
                Value::Object(o) => self.untyped_object(key, path, o, depth),
                _ => expect(self, "an object"),
            },
            complex => match value {
                Value::Object(o) => {
                    if o.is_empty() {
                        self.bad("structure", path, format!("'{key}' is an empty object"));
                        return;
                    }
                    self.object(o, path, datatype_fields(complex), depth + 1);
                    self.known_names(path, o, datatype_fields(complex));
                    if complex == Period {
                        self.period_order(path, o);
                    }
                }
                _ => expect(self, "an object"),
            },
        }
    }

    fn untyped_object(&mut self, key: &str, path: &At<'_>, o: &Map<String, Value>, depth: usize) {
        if o.is_empty() {
            self.bad("structure", path, format!("'{key}' is an empty object"));
            return;
        }
        if o.contains_key("resourceType") {
            // A resource inside a resource (Bundle.entry.resource, Parameters.parameter.resource).
            match resource_frame(&Value::Object(o.clone()), None) {
                Ok(ty) => self.resource(ty, path, o, false),
                Err(e) => {
                    for mut issue in e.issues() {
                        issue.expression = Some(path.to_string());
                        self.invalid.push(issue);
                    }
                }
            }
            return;
        }
        if key == "extension" || key == "modifierExtension" {
            if !o.get("url").is_some_and(Value::is_string) {
                self.bad("required", path, "an extension needs a url".into());
            }
            // Extension: id, url, extension and one value[x].
            for k in o.keys() {
                let name = k.strip_prefix('_').unwrap_or(k);
                if !matches!(name, "id" | "url" | "extension") && !is_choice_of(name, "value") {
                    self.unknown(&At::Key(path, k), k);
                }
            }
            self.one_choice(path, o, "value");
        }
        self.object(o, path, &[], depth + 1);
    }

    fn object(&mut self, o: &Map<String, Value>, path: &At<'_>, fields: &[F], depth: usize) {
        for (k, v) in o {
            let field = fields.iter().find(|f| f.name == k.as_str());
            self.element(o, k, &At::Key(path, k), v, field, depth);
        }
    }

    /// Refuses names not in `fields` (nor `id`, `extension`, every element's) in a complex
    /// datatype's object.
    fn known_names(&mut self, path: &At<'_>, o: &Map<String, Value>, fields: &[F]) {
        for k in o.keys() {
            if !fields.iter().any(|f| f.name == k.as_str())
                && !is_extension_of(k, ELEMENT, fields)
                && !ELEMENT.iter().any(|f| f.name == k.as_str())
            {
                self.unknown(&At::Key(path, k), k);
            }
        }
    }

    fn period_order(&mut self, path: &At<'_>, o: &Map<String, Value>) {
        let get = |k: &str| {
            o.get(k)
                .and_then(Value::as_str)
                .and_then(|s| datetime::parse(s, Kind::DateTime))
        };
        if let (Some(start), Some(end)) = (get("start"), get("end")) {
            if start.low > end.high {
                self.rule(
                    "invariant",
                    path,
                    "per-1: the period ends before it starts".into(),
                );
            }
        }
    }
}

/// What every element has besides its own children.
const ELEMENT: &[F] = &[
    F {
        name: "id",
        many: false,
        ty: Str,
    },
    F {
        name: "extension",
        many: true,
        ty: Obj,
    },
];

/// `_name`, the extensions of a primitive `name` of one of the tables.
fn is_extension_of(key: &str, a: &[F], b: &[F]) -> bool {
    key.strip_prefix('_')
        .is_some_and(|name| a.iter().chain(b).any(|f| f.name == name))
}

/// `prefixType`: one of the names of choice element `prefix[x]`.
fn is_choice_of(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// Drops a guessed type when the value's JSON kind does not fit it.
fn soft(ty: Option<Ty>, guessed: bool, value: &Value) -> Option<Ty> {
    match ty {
        Some(Period) if guessed && !value.is_object() => None,
        Some(Date | DateTime | Instant) if guessed && !value.is_string() => None,
        t => t,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    fn status(v: Value) -> u16 {
        match check_resource(&v, None) {
            Ok(()) => 200,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn types_are_sorted_for_binary_search() {
        assert!(R4_TYPES.windows(2).all(|w| w[0] < w[1]));
        assert!(is_resource_type("Patient") && !is_resource_type("Patients"));
    }

    #[test]
    fn ids_and_references() {
        assert!(
            valid_id("a-B.9") && !valid_id("a_b") && !valid_id("") && !valid_id(&"x".repeat(65))
        );
        for ok in [
            "Patient/1",
            "Patient/1/_history/2",
            "#c1",
            "urn:uuid:0f6e2a1c-3c2a-4b6e-9d8e-7a1b2c3d4e5f",
            "urn:oid:1.2.3",
            "http://x/fhir/Patient/1",
            "Patient?identifier=a|b",
        ] {
            assert!(check_reference(ok).is_ok(), "{ok}");
        }
        for bad in [
            "Patient",
            "Foo/1",
            "Patient/1 ",
            "urn:uuid:zz",
            "Patient/a_b",
            "urn:oid:1",
            "/Patient/1",
        ] {
            assert!(check_reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn good_resources_pass() {
        let p = json!({
            "resourceType": "Patient", "id": "p1",
            "meta": {"versionId": "9", "tag": [{"code": "x"}]},
            "identifier": [{"system": "urn:oid:1.2.3", "value": "42"}],
            "name": [{"family": "Dupont", "given": ["Jean", null], "_given": [null, {"extension": [{"url": "u", "valueString": "v"}]}]}],
            "gender": "male", "birthDate": "1970-01",
            "contained": [{"resourceType": "Organization", "id": "o", "name": "Org"}],
            "managingOrganization": {"reference": "#o"},
            "extension": [{"url": "http://e", "valueDateTime": "2020-01-01T00:00:00Z"}]
        });
        assert_eq!(status(p), 200);
        let o = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "urn:uuid:0f6e2a1c-3c2a-4b6e-9d8e-7a1b2c3d4e5f"},
            "effectivePeriod": {"start": "2020-01-01", "end": "2020-01-02T10:00:00+02:00"},
            "valueQuantity": {"value": 72, "unit": "/min"}
        });
        assert_eq!(status(o), 200);
    }

    #[test]
    fn format_errors_are_400_and_rule_errors_422() {
        assert_eq!(status(json!([1])), 400);
        assert_eq!(status(json!({"resourceType": "Patientx"})), 400);
        assert_eq!(status(json!({"resourceType": "Patient", "id": "a b"})), 400);
        assert_eq!(
            status(json!({"resourceType": "Patient", "birthDate": "1970-13-01"})),
            400
        );
        assert_eq!(
            status(json!({"resourceType": "Patient", "name": {"family": "x"}})),
            400
        );
        assert_eq!(
            status(json!({"resourceType": "Patient", "name": [{"family": ["x"]}]})),
            400
        );
        assert_eq!(
            status(json!({"resourceType": "Patient", "active": null})),
            400
        );
        assert_eq!(
            status(json!({"resourceType": "Patient", "identifier": []})),
            400
        );
        assert_eq!(
            status(
                json!({"resourceType": "Patient", "generalPractitioner": [{"reference": "Doc 1"}]})
            ),
            400
        );
        assert_eq!(
            status(json!({"resourceType": "Basic", "code": {}, "created": "yesterday"})),
            400
        );
        assert_eq!(
            status(json!({"resourceType": "Patient", "gender": "M"})),
            422
        );
        assert_eq!(
            status(json!({"resourceType": "Observation", "status": "final"})),
            422
        );
        assert_eq!(
            status(
                json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "IMP"},
                "period": {"start": "2020-02-01", "end": "2020-01-01"}})
            ),
            422
        );
        let e = check_resource(
            &json!({"resourceType": "Patient", "birthDate": "x"}),
            Some("Patient"),
        )
        .unwrap_err();
        assert_eq!(
            e.issues()[0].expression.as_deref(),
            Some("Patient.birthDate")
        );
        assert_eq!(
            status(json!({"resourceType": "Patient", "contained": [{"resourceType": "Patient"}]})),
            400
        );
    }
}
