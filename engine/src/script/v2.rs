//! HL7 v2 data types → FHIR data types, natively: `v2_identifier(cx)`, `v2_human_name(xpn)`, ...
//!
//! Why native: every ADT, ORU or ORM mapping converts the same handful of data types, and a
//! Rhai function call plus a dozen component reads per conversion cost ~10 µs each in the
//! interpreter, which alone would miss the 20,000 transforms/s target. In Rust a conversion is a
//! few hundred nanoseconds. `scripts/lib/datatypes.rhai` wraps these under readable names and is
//! where a site adjusts them (e.g. its identifier systems). Each function takes a `Field` (one
//! repetition) and returns a map, or `()` when the field carries nothing; passed an array of
//! fields (`msg.repetitions("PID-3")`) it returns the array of results, empty ones left out.
//! Only non-empty elements are written, so the maps are already what the output keeps.

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use super::dates::Dtm;
use super::message::ScriptField;

type Res<T> = Result<T, Box<EvalAltResult>>;

const V2: &str = "http://terminology.hl7.org/CodeSystem/v2-";

fn s(v: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(v))
}

/// A component's text, borrowed from the message when it needs no decoding (`""` when absent,
/// empty or null): reads allocate only what ends up in the output.
fn t(f: &ScriptField, comp: usize, sub: Option<usize>) -> Cow<'_, str> {
    f.value(comp, sub).into_text().unwrap_or(Cow::Borrowed(""))
}

thread_local! {
    /// The words the conversions write, allocated once per thread and shared (a new
    /// `ImmutableString` per element is an allocation, and allocations dominate these
    /// conversions). Per thread: script strings are not `Send`.
    static WORDS: HashMap<&'static str, ImmutableString> =
        [
            "official",
            "usual",
            "maiden",
            "nickname",
            "anonymous",
            "temp",
            "old",
            "home",
            "work",
            "postal",
            "physical",
            "phone",
            "fax",
            "pager",
            "email",
            "other",
            "mobile",
            "http://hl7.org/fhir/sid/us-ssn",
            "http://hl7.org/fhir/sid/us-npi",
            "http://loinc.org",
            "http://snomed.info/sct",
            "http://unitsofmeasure.org",
            "Medical record number",
            "Social Security number",
            "Account number",
            "Visit number",
            "Patient internal identifier",
            "Patient external identifier",
            "National provider identifier",
        ]
        .into_iter()
        .map(|w| (w, ImmutableString::from(w)))
        .collect();

    /// The system of table 0203, shared rather than allocated per identifier.
    static V2_0203: ImmutableString = format!("{V2}0203").into();
}

/// A constant word as a script value, shared when it is a known one.
fn word(w: &'static str) -> Dynamic {
    match WORDS.with(|words| words.get(w).cloned()) {
        Some(v) => Dynamic::from(v),
        None => s(w),
    }
}

/// Inserts `v` under `k` unless it is blank.
fn put(m: &mut Map, k: &str, v: ImmutableString) {
    if !v.trim().is_empty() {
        m.insert(k.into(), Dynamic::from(v));
    }
}

/// An array of the non-blank texts, or nothing.
fn put_list(m: &mut Map, k: &str, items: &[ImmutableString]) {
    let a: Array = items
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| Dynamic::from(t.clone()))
        .collect();
    if !a.is_empty() {
        m.insert(k.into(), Dynamic::from_array(a));
    }
}

fn map_or_unit(m: Map) -> Dynamic {
    if m.is_empty() {
        Dynamic::UNIT
    } else {
        Dynamic::from_map(m)
    }
}

/// HD (namespace, universal id, universal id type) → a system URI: the universal id when it is
/// typed ISO (an OID), UUID or URI; else well-known namespaces (SSA, NPI); else
/// `urn:id:<namespace>`. `None` when the HD is empty.
pub fn hd_system(namespace: &str, universal_id: &str, id_type: &str) -> Option<String> {
    if !universal_id.is_empty() {
        match id_type {
            "ISO" => return Some(format!("urn:oid:{universal_id}")),
            "UUID" => return Some(format!("urn:uuid:{universal_id}")),
            "URI" | "URL" => return Some(universal_id.to_owned()),
            _ => {}
        }
    }
    match namespace {
        "" if universal_id.is_empty() => None,
        "" => Some(format!("urn:id:{universal_id}")),
        "USSSA" | "SSA" => Some("http://hl7.org/fhir/sid/us-ssn".into()),
        "NPI" => Some("http://hl7.org/fhir/sid/us-npi".into()),
        ns => Some(format!("urn:id:{ns}")),
    }
}

/// The site's table of assigning authorities (`site::AUTHORITIES`): HD.1 namespace → identifier
/// system URI, built once from a map by `authority_table(#{...})` when `site.rhai` loads.
///
/// A handle rather than a map: conversions take it on every identifier, and passing a Rhai map
/// copies it. Its values are checked when it is built, so a site's mistake fails `orbiter
/// check` and reloads, not messages.
#[derive(Clone)]
pub struct AuthorityTable(Rc<HashMap<String, ImmutableString>>);

impl AuthorityTable {
    fn from_map(m: Map) -> Res<AuthorityTable> {
        let mut table = HashMap::with_capacity(m.len());
        for (namespace, system) in m {
            let Some(uri) = system.read_lock::<ImmutableString>().map(|s| s.clone()) else {
                return Err(format!(
                    "authority_table: {namespace:?} maps to a {}, not a system URI string",
                    system.type_name()
                )
                .into());
            };
            if uri.trim().is_empty() {
                return Err(
                    format!("authority_table: {namespace:?} maps to an empty system").into(),
                );
            }
            table.insert(namespace.to_string(), uri);
        }
        Ok(AuthorityTable(Rc::new(table)))
    }

    /// The system an HD sent without a universal id gets; `None` when the table does not list
    /// its namespace. An HD with its own universal id keeps it, whatever the table says.
    fn system(&self, namespace: &str, universal_id: &str) -> Option<Dynamic> {
        if !universal_id.is_empty() {
            return None;
        }
        self.0.get(namespace).map(|uri| Dynamic::from(uri.clone()))
    }
}

/// An HD's system: the site's table first (when given), then the built-in rules of
/// [`hd_system`].
fn system_of(
    authorities: Option<&AuthorityTable>,
    namespace: &str,
    universal_id: &str,
    id_type: &str,
) -> Option<Dynamic> {
    authorities
        .and_then(|a| a.system(namespace, universal_id))
        .or_else(|| hd_system(namespace, universal_id, id_type).map(|v| s(&v)))
}

/// HL7 table 0203 → display text.
pub fn identifier_type_display(code: &str) -> Option<&'static str> {
    Some(match code {
        "MR" => "Medical record number",
        "SS" => "Social Security number",
        "AN" => "Account number",
        "VN" => "Visit number",
        "PI" => "Patient internal identifier",
        "PT" => "Patient external identifier",
        "NPI" => "National provider identifier",
        "DL" => "Driver's license number",
        "PPN" => "Passport number",
        "PRN" => "Provider number",
        "EN" => "Employer number",
        _ => return None,
    })
}

/// HL7 table 0200 (name type) → HumanName.use.
pub fn name_use(code: &str) -> Option<&'static str> {
    Some(match code {
        "L" | "R" | "C" => "official",
        "D" | "A" | "T" => "usual",
        "M" => "maiden",
        "N" => "nickname",
        "S" => "anonymous",
        "TEMP" => "temp",
        "B" | "BAD" | "NOUSE" => "old",
        _ => return None,
    })
}

/// HL7 table 0190 (address type) → Address.use and Address.type.
pub fn address_use_type(code: &str) -> (Option<&'static str>, Option<&'static str>) {
    match code {
        "H" => (Some("home"), None),
        "B" | "O" => (Some("work"), None),
        "C" => (Some("temp"), None),
        "BA" => (Some("old"), None),
        "M" => (None, Some("postal")),
        "SH" => (None, Some("physical")),
        _ => (None, None),
    }
}

/// HL7 table 0201 (telecommunication use) → ContactPoint.use.
pub fn telecom_use(code: &str) -> Option<&'static str> {
    match code {
        "PRN" | "ORN" | "VHN" => Some("home"),
        "WPN" => Some("work"),
        _ => None,
    }
}

/// HL7 table 0202 (telecommunication equipment) → ContactPoint.system.
pub fn telecom_system(code: &str) -> &'static str {
    match code {
        "PH" | "CP" | "SAT" | "" => "phone",
        "FX" => "fax",
        "BP" => "pager",
        "Internet" | "X.400" => "email",
        _ => "other",
    }
}

/// HL7 table 0396 (coding system name) → code system URI.
pub fn system_uri(name: &str) -> Option<String> {
    let uri = match name {
        "" => return None,
        "LN" => "http://loinc.org",
        "SCT" | "SNM" => "http://snomed.info/sct",
        "I10" => "http://hl7.org/fhir/sid/icd-10",
        "I10C" => "http://hl7.org/fhir/sid/icd-10-cm",
        "I9C" => "http://hl7.org/fhir/sid/icd-9-cm",
        "UCUM" => "http://unitsofmeasure.org",
        "RXN" | "RXNORM" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        "CVX" => "http://hl7.org/fhir/sid/cvx",
        "NDC" => "http://hl7.org/fhir/sid/ndc",
        "C4" | "CPT" => "http://www.ama-assn.org/go/cpt",
        "CDCREC" => "urn:oid:2.16.840.1.113883.6.238",
        // Routes (RXR-1) and manufacturers in US immunization messages: without these they
        // became urn:id:NCIT / urn:id:MVX, which no terminology server knows.
        "NCIT" => "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
        "MVX" => "http://terminology.hl7.org/CodeSystem/MVX",
        "HCPCS" => "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "NUCC" => "http://nucc.org/provider-taxonomy",
        n if n.len() == 7 && n.starts_with("HL7") && n[3..].bytes().all(|b| b.is_ascii_digit()) => {
            return Some(format!("{V2}{}", &n[3..]));
        }
        n => return Some(format!("urn:id:{n}")),
    };
    Some(uri.to_owned())
}

/// A dateTime, or its date when the value has a time but no zone (which a FHIR dateTime could
/// not carry): for validity periods, where the day is what counts.
fn datetime(what: &str, v: &str) -> Res<Option<String>> {
    match Dtm::parse(v) {
        Ok(d) => Ok(d.map(|d| {
            d.to_fhir_datetime(None)
                .unwrap_or_else(|_| d.to_fhir_date())
        })),
        Err(e) => Err(format!("{what}: {e}").into()),
    }
}

/// `{coding: [{system, code, display}]}` for a table code.
fn table_concept(table: &str, code: &str, display: Option<&'static str>) -> Dynamic {
    let mut c = Map::new();
    let system = if table == "0203" {
        V2_0203.with(ImmutableString::clone)
    } else {
        format!("{V2}{table}").into()
    };
    c.insert("system".into(), Dynamic::from(system));
    c.insert("code".into(), s(code));
    if let Some(d) = display {
        c.insert("display".into(), word(d));
    }
    let mut cc = Map::new();
    cc.insert(
        "coding".into(),
        Dynamic::from_array(vec![Dynamic::from_map(c)]),
    );
    Dynamic::from_map(cc)
}

/// CX → Identifier (type from CX.5, or `default_type` when CX.5 is empty).
pub fn identifier(
    cx: &ScriptField,
    default_type: &str,
    authorities: Option<&AuthorityTable>,
) -> Res<Dynamic> {
    let value = t(cx, 1, None);
    if value.trim().is_empty() {
        return Ok(Dynamic::UNIT);
    }
    let mut m = Map::new();
    let ty = t(cx, 5, None);
    let ty = if ty.is_empty() { default_type } else { &ty };
    if !ty.is_empty() {
        m.insert(
            "type".into(),
            table_concept("0203", ty, identifier_type_display(ty)),
        );
    }
    let (namespace, universal_id) = (t(cx, 4, Some(1)), t(cx, 4, Some(2)));
    // The id type only qualifies a universal id.
    let id_type = if universal_id.is_empty() {
        Cow::Borrowed("")
    } else {
        t(cx, 4, Some(3))
    };
    if let Some(sys) = system_of(authorities, &namespace, &universal_id, &id_type) {
        m.insert("system".into(), sys);
    }
    m.insert("value".into(), s(&value));
    let (from, to) = (t(cx, 7, None), t(cx, 8, None));
    if !from.is_empty() || !to.is_empty() {
        let mut period = Map::new();
        if let Some(start) = datetime("CX.7", &from)? {
            period.insert("start".into(), s(&start));
        }
        if let Some(end) = datetime("CX.8", &to)? {
            period.insert("end".into(), s(&end));
        }
        if !period.is_empty() {
            m.insert("period".into(), Dynamic::from_map(period));
        }
    }
    Ok(Dynamic::from_map(m))
}

/// XPN → HumanName: family XPN.1.1, given XPN.2 and XPN.3, suffix XPN.4 and XPN.6 (degree),
/// prefix XPN.5, use from XPN.7.
pub fn human_name(xpn: &ScriptField) -> Dynamic {
    let family = xpn.text(1, Some(1));
    let given = [xpn.text(2, None), xpn.text(3, None)];
    if family.trim().is_empty() && given.iter().all(|g| g.trim().is_empty()) {
        return Dynamic::UNIT;
    }
    let mut m = Map::new();
    if let Some(u) = name_use(&xpn.text(7, None)) {
        m.insert("use".into(), word(u));
    }
    put(&mut m, "family", family);
    put_list(&mut m, "given", &given);
    put_list(&mut m, "prefix", &[xpn.text(5, None)]);
    put_list(&mut m, "suffix", &[xpn.text(4, None), xpn.text(6, None)]);
    Dynamic::from_map(m)
}

/// XAD → Address: line XAD.1.1 and XAD.2, city, state, postalCode, country, district
/// (XAD.9), use/type from XAD.7.
pub fn address(xad: &ScriptField) -> Dynamic {
    let line = [xad.text(1, Some(1)), xad.text(2, None)];
    let mut m = Map::new();
    let (u, t) = address_use_type(&xad.text(7, None));
    put_list(&mut m, "line", &line);
    put(&mut m, "city", xad.text(3, None));
    put(&mut m, "state", xad.text(4, None));
    put(&mut m, "postalCode", xad.text(5, None));
    put(&mut m, "country", xad.text(6, None));
    put(&mut m, "district", xad.text(9, None));
    if m.is_empty() {
        return Dynamic::UNIT;
    }
    if let Some(u) = u {
        m.insert("use".into(), word(u));
    }
    if let Some(t) = t {
        m.insert("type".into(), word(t));
    }
    Dynamic::from_map(m)
}

/// XTN → the number as text: `+<country> <area> <local> ext <extension>`, else XTN.12
/// (unformatted) or XTN.1 (the pre-2.5 formatted number).
fn phone_number(xtn: &ScriptField) -> String {
    let local = xtn.text(7, None);
    if local.is_empty() {
        let unformatted = xtn.text(12, None);
        return if unformatted.is_empty() {
            xtn.text(1, None).to_string()
        } else {
            unformatted.to_string()
        };
    }
    let mut n = String::new();
    let country = xtn.text(5, None);
    if !country.is_empty() {
        n.push('+');
        n.push_str(&country);
        n.push(' ');
    }
    let area = xtn.text(6, None);
    if !area.is_empty() {
        n.push_str(&area);
        n.push(' ');
    }
    n.push_str(&local);
    let ext = xtn.text(8, None);
    if !ext.is_empty() {
        n.push_str(" ext ");
        n.push_str(&ext);
    }
    n
}

/// XTN → ContactPoint; `default_use` applies when XTN.2 gives none (e.g. "work" for PID-14).
pub fn contact_point(xtn: &ScriptField, default_use: &str) -> Dynamic {
    let use_code = xtn.text(2, None);
    let equipment = xtn.text(3, None);
    let email = xtn.text(4, None);
    let mut m = Map::new();
    let is_email = !email.is_empty()
        || matches!(equipment.as_str(), "Internet" | "X.400")
        || use_code == "NET";
    let (system, value) = if is_email {
        let v = if email.is_empty() {
            xtn.text(1, None)
        } else {
            email
        };
        ("email", v.to_string())
    } else {
        (telecom_system(&equipment), phone_number(xtn))
    };
    if value.trim().is_empty() {
        return Dynamic::UNIT;
    }
    m.insert("system".into(), word(system));
    m.insert("value".into(), s(&value));
    let u = if equipment == "CP" {
        Some("mobile")
    } else {
        telecom_use(&use_code)
    };
    match u {
        Some(u) => {
            m.insert("use".into(), word(u));
        }
        None if !default_use.is_empty() => {
            m.insert("use".into(), s(default_use));
        }
        None => {}
    }
    Dynamic::from_map(m)
}

fn coding(code: ImmutableString, display: ImmutableString, system: &str) -> Option<Dynamic> {
    if code.trim().is_empty() {
        return None;
    }
    let mut c = Map::new();
    if let Some(sys) = system_uri(system) {
        c.insert("system".into(), s(&sys));
    }
    c.insert("code".into(), Dynamic::from(code));
    put(&mut c, "display", display);
    Some(Dynamic::from_map(c))
}

/// CWE/CE → CodeableConcept: the identifier triplet (1-3), the alternate triplet (4-6), the
/// original text (CWE.9).
pub fn codeable_concept(cwe: &ScriptField) -> Dynamic {
    let codings: Array = [
        coding(cwe.text(1, None), cwe.text(2, None), &cwe.text(3, None)),
        coding(cwe.text(4, None), cwe.text(5, None), &cwe.text(6, None)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut m = Map::new();
    if !codings.is_empty() {
        m.insert("coding".into(), Dynamic::from_array(codings));
    }
    put(&mut m, "text", cwe.text(9, None));
    map_or_unit(m)
}

/// XCN → a logical Reference: `identifier` (XCN.1, system from XCN.9) and `display` (prefix,
/// given, middle, family).
pub fn practitioner_reference(xcn: &ScriptField) -> Dynamic {
    let id = xcn.text(1, None);
    let parts = [
        xcn.text(6, None),
        xcn.text(3, None),
        xcn.text(4, None),
        xcn.text(2, Some(1)),
    ];
    let display = parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut m = Map::new();
    if !id.trim().is_empty() {
        let mut ident = Map::new();
        if let Some(sys) = hd_system(
            &xcn.text(9, Some(1)),
            &xcn.text(9, Some(2)),
            &xcn.text(9, Some(3)),
        ) {
            ident.insert("system".into(), s(&sys));
        }
        ident.insert("value".into(), Dynamic::from(id));
        m.insert("identifier".into(), Dynamic::from_map(ident));
    }
    if !display.is_empty() {
        m.insert("display".into(), s(&display));
    }
    map_or_unit(m)
}

/// Applies `f` to a Field, or to each Field of an array (dropping `()` results).
fn each(arg: Dynamic, f: &dyn Fn(&ScriptField) -> Res<Dynamic>) -> Res<Dynamic> {
    if let Some(field) = arg.read_lock::<ScriptField>() {
        return f(&field);
    }
    if arg.is_unit() {
        return Ok(Dynamic::UNIT);
    }
    let Ok(items) = arg.as_array_ref() else {
        return Err(format!(
            "expected a Field (msg.field(...)) or an array of Fields (msg.repetitions(...)), got {}",
            arg.type_name()
        )
        .into());
    };
    let mut out = Array::with_capacity(items.len());
    for item in items.iter() {
        let Some(field) = item.read_lock::<ScriptField>() else {
            return Err(format!("expected an array of Fields, found {}", item.type_name()).into());
        };
        let v = f(&field)?;
        if !v.is_unit() {
            out.push(v);
        }
    }
    Ok(Dynamic::from_array(out))
}

/// Registers the `v2_*` conversions.
pub fn register(engine: &mut Engine) {
    engine.register_fn("v2_identifier", |x: Dynamic| {
        each(x, &|f| identifier(f, "", None))
    });
    engine.register_fn("v2_identifier", |x: Dynamic, default_type: &str| {
        each(x, &|f| identifier(f, default_type, None))
    });
    // With the site's table of assigning authorities (`site::AUTHORITIES`), so that
    // datatypes.rhai applies it without a script call per identifier.
    engine.register_type_with_name::<AuthorityTable>("AuthorityTable");
    engine.register_fn("authority_table", AuthorityTable::from_map);
    // `site::AUTHORITIES["GENHOSP"]`: the system, () when not listed.
    engine.register_indexer_get(|t: &mut AuthorityTable, namespace: &str| {
        t.system(namespace, "").unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn(
        "v2_identifier",
        |x: Dynamic, default_type: &str, authorities: AuthorityTable| {
            each(x, &|f| identifier(f, default_type, Some(&authorities)))
        },
    );
    engine.register_fn("v2_human_name", |x: Dynamic| {
        each(x, &|f| Ok(human_name(f)))
    });
    engine.register_fn("v2_address", |x: Dynamic| each(x, &|f| Ok(address(f))));
    engine.register_fn("v2_contact_point", |x: Dynamic| {
        each(x, &|f| Ok(contact_point(f, "")))
    });
    engine.register_fn("v2_contact_point", |x: Dynamic, default_use: &str| {
        let u = default_use.to_owned();
        each(x, &move |f| Ok(contact_point(f, &u)))
    });
    engine.register_fn("v2_codeable_concept", |x: Dynamic| {
        each(x, &|f| Ok(codeable_concept(f)))
    });
    engine.register_fn("v2_practitioner_reference", |x: Dynamic| {
        each(x, &|f| Ok(practitioner_reference(f)))
    });
    engine.register_fn("v2_system", |ns: &str, uid: &str, uid_type: &str| {
        system_of(None, ns, uid, uid_type).unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn(
        "v2_system",
        |ns: &str, uid: &str, uid_type: &str, authorities: AuthorityTable| {
            system_of(Some(&authorities), ns, uid, uid_type).unwrap_or(Dynamic::UNIT)
        },
    );
    engine.register_fn("v2_coding_system", |name: &str| {
        system_uri(name).map_or(Dynamic::UNIT, |v| s(&v))
    });
    engine.register_fn("v2_table_concept", |table: &str, code: &str| {
        if code.trim().is_empty() {
            Dynamic::UNIT
        } else {
            table_concept(table, code, None)
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systems() {
        assert_eq!(
            hd_system("H", "1.2.3", "ISO").as_deref(),
            Some("urn:oid:1.2.3")
        );
        assert_eq!(
            hd_system("H", "http://x/y", "URI").as_deref(),
            Some("http://x/y")
        );
        assert_eq!(
            hd_system("USSSA", "", "").as_deref(),
            Some("http://hl7.org/fhir/sid/us-ssn")
        );
        assert_eq!(
            hd_system("GENHOSP", "", "").as_deref(),
            Some("urn:id:GENHOSP")
        );
        assert_eq!(hd_system("", "X1", "L").as_deref(), Some("urn:id:X1"));
        assert_eq!(hd_system("", "", ""), None);
        assert_eq!(system_uri("LN").as_deref(), Some("http://loinc.org"));
        assert_eq!(
            system_uri("HL70203").as_deref(),
            Some("http://terminology.hl7.org/CodeSystem/v2-0203")
        );
        assert_eq!(
            system_uri("NCIT").as_deref(),
            Some("http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl")
        );
        assert_eq!(system_uri("99LOCAL").as_deref(), Some("urn:id:99LOCAL"));
        assert_eq!(system_uri(""), None);
    }
}
