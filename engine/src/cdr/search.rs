//! Search queries: parsing `Type?param=value&...` into conditions, and what each condition
//! means for one indexed value.
//!
//! A query is a list of conditions that must all hold (parameters are ANDed, comma-separated
//! values within one are ORed). Evaluation over the indexes is in [`super::plan`]; the
//! searchset Bundle in [`super::searchset`].
//!
//! Unknown parameters are ignored with a warning in an OperationOutcome entry of the searchset
//! (the FHIR default, `Prefer: handling=lenient`); with `Prefer: handling=strict` they are a 400.
//! Conditional operations (`If-None-Exist`, conditional update/delete, conditional references)
//! are always strict, because ignoring a criterion there would widen the match and change the
//! wrong resource. Unknown modifiers and malformed values are always a 400.

use super::datetime::{self, Range};
use super::index;
use super::outcome::CdrError;
use super::params::{self, IndexValue, ParamDef, ParamType};
use super::request::strip_base;
use super::validate::{is_resource_type, valid_id};

/// Default page size (as HAPI).
pub const DEFAULT_COUNT: usize = 20;
/// Largest page size honoured.
pub const MAX_COUNT: usize = 1000;

/// A parsed search.
#[derive(Debug)]
pub struct SearchQuery {
    /// The resource type searched.
    pub ty: String,
    /// The conditions, all of which must hold.
    pub conds: Vec<Cond>,
    /// Page size.
    pub count: usize,
    /// Index of the first match of the page.
    pub offset: usize,
    /// Sort keys, each descending or not.
    pub sort: Vec<(SortKey, bool)>,
    /// `_include`: a reference parameter of the searched type, and an optional target type.
    pub include: Vec<(&'static ParamDef, Option<String>)>,
    /// `_revinclude`: a type and its reference parameter pointing at the matches.
    pub revinclude: Vec<(String, &'static ParamDef)>,
    /// `_summary=count` (or `_count=0`): the total only.
    pub summary_count: bool,
    /// Warnings for ignored parameters.
    pub warnings: Vec<String>,
    /// The parameters used, for the links.
    pub used: Vec<(String, String)>,
}

/// One condition of a query.
#[derive(Debug)]
pub enum Cond {
    /// `_id`: one of these ids.
    Ids(Vec<String>),
    /// `param:missing=true|false`: the resource has no value (true) or some value (false).
    Missing(&'static ParamDef, bool),
    /// Any of the alternatives holds (or, negated, none does: `:not`).
    Any {
        /// The parameter.
        def: &'static ParamDef,
        /// The comma-separated values, ORed.
        alts: Vec<Alt>,
        /// `:not`.
        negate: bool,
    },
}

/// One alternative of a condition (one comma-separated value).
#[derive(Debug)]
pub enum Alt {
    /// A string value.
    Str {
        /// The normalised search text (starts-with, or contained with `:contains`).
        norm: String,
        /// `:exact`: the text to equal, as given.
        exact: Option<String>,
        /// `:contains`.
        contains: bool,
    },
    /// A token value.
    Token {
        /// None: any system; `Some("")`: no system (`|code`); otherwise that system.
        system: Option<String>,
        /// None: any code (`system|`).
        code: Option<String>,
    },
    /// A reference value.
    Ref {
        /// The normalised reference (`Type/id`, a URL), or just the id when `bare`.
        value: String,
        /// `subject=123`: an id of any type.
        bare: bool,
        /// The request's base: absolute references under it are the relative ones.
        base: String,
    },
    /// A date value.
    Date {
        /// The comparison.
        prefix: Prefix,
        /// The searched range (from the value's precision).
        range: Range,
    },
}

/// A date search prefix (FHIR search, section 3.1.1.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// The value's range is within the searched one (the default).
    Eq,
    /// Not `eq`.
    Ne,
    /// Ends after the searched range ends.
    Gt,
    /// Starts before the searched range starts.
    Lt,
    /// `gt` or `eq`.
    Ge,
    /// `lt` or `eq`.
    Le,
    /// Starts after the searched range ends.
    Sa,
    /// Ends before the searched range starts.
    Eb,
    /// Overlaps the searched range widened by 10% of its distance from now.
    Ap,
}

/// What `_sort` sorts by.
#[derive(Debug)]
pub enum SortKey {
    /// The id.
    Id,
    /// `meta.lastUpdated`.
    LastUpdated,
    /// A string, token or date parameter (its smallest value).
    Param(&'static ParamDef),
}

/// Parses `pairs` as a search on `ty`. `strict`: unknown parameters are errors.
pub fn parse(
    ty: &str,
    pairs: &[(String, String)],
    strict: bool,
    base: &str,
) -> Result<SearchQuery, CdrError> {
    let mut q = SearchQuery {
        ty: ty.to_string(),
        conds: Vec::new(),
        count: DEFAULT_COUNT,
        offset: 0,
        sort: Vec::new(),
        include: Vec::new(),
        revinclude: Vec::new(),
        summary_count: false,
        warnings: Vec::new(),
        used: Vec::new(),
    };
    for (key, value) in pairs {
        let (name, modifier) = match key.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (key.as_str(), None),
        };
        let bad = |m: String| CdrError::BadRequest(m);
        let used = (key.clone(), value.clone());
        match name {
            "_count" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| bad(format!("_count must be a number, not '{value}'")))?;
                q.count = n.min(MAX_COUNT);
                if n == 0 {
                    q.summary_count = true;
                }
            }
            "_offset" => {
                q.offset = value
                    .parse()
                    .map_err(|_| bad(format!("_offset must be a number, not '{value}'")))?;
            }
            "_sort" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let (desc, pname) = match part.strip_prefix('-') {
                        Some(p) => (true, p),
                        None => (false, part),
                    };
                    let key = match pname {
                        "_id" => SortKey::Id,
                        "_lastUpdated" => SortKey::LastUpdated,
                        other => match params::find(ty, other) {
                            Some(def) if def.kind != ParamType::Reference => SortKey::Param(def),
                            _ => return Err(bad(format!("cannot sort {ty} by '{other}'"))),
                        },
                    };
                    q.sort.push((key, desc));
                }
                q.used.push(used);
            }
            "_include" | "_revinclude" => {
                if modifier.is_some() {
                    q.warnings.push(format!(
                        "{key} is not supported (only plain {name}); ignored"
                    ));
                    continue;
                }
                let parts: Vec<&str> = value.split(':').collect();
                let (src, pname, target) = match parts.as_slice() {
                    [s, p] => (*s, *p, None),
                    [s, p, t] => (*s, *p, Some(t.to_string())),
                    _ => {
                        return Err(bad(format!(
                            "{name}={value}: expected Type:parameter[:Target]"
                        )))
                    }
                };
                if pname == "*" {
                    q.warnings
                        .push(format!("{name}={value}: '*' is not supported; ignored"));
                    continue;
                }
                let def = match params::find(src, pname) {
                    Some(d) if d.kind == ParamType::Reference => d,
                    _ => {
                        return Err(bad(format!(
                            "{name}={value}: {src} has no reference parameter '{pname}'"
                        )))
                    }
                };
                if name == "_include" {
                    if src != ty {
                        q.warnings
                            .push(format!("_include={value} does not apply to {ty}; ignored"));
                        continue;
                    }
                    q.include.push((def, target));
                } else {
                    q.revinclude.push((src.to_string(), def));
                }
                q.used.push(used);
            }
            "_summary" => match value.as_str() {
                "count" => q.summary_count = true,
                "false" => {}
                other => q.warnings.push(format!(
                    "_summary={other} is not supported; full resources are returned"
                )),
            },
            "_total" | "_format" | "_pretty" => {}
            "_elements" | "_contained" | "_containedType" => {
                q.warnings.push(format!("{name} is not supported; ignored"));
            }
            _ if value.is_empty() => {}
            "_id" => {
                if modifier.is_some() {
                    return Err(bad(format!(
                        "modifier ':{}' is not supported on _id",
                        modifier.unwrap_or("")
                    )));
                }
                let ids = split_values(value);
                for id in &ids {
                    if !valid_id(id) {
                        return Err(bad(format!("_id: '{id}' is not a valid id")));
                    }
                }
                q.conds.push(Cond::Ids(ids));
                q.used.push(used);
            }
            _ => {
                let Some(def) = params::find(ty, name) else {
                    let msg = format!("unknown search parameter '{key}' for {ty}");
                    if strict {
                        return Err(bad(format!("{msg} (supported: {})", supported(ty))));
                    }
                    q.warnings.push(format!("{msg}; ignored"));
                    continue;
                };
                q.conds.push(parse_cond(def, modifier, value, base)?);
                q.used.push(used);
            }
        }
    }
    Ok(q)
}

fn supported(ty: &str) -> String {
    let mut names: Vec<&str> = vec!["_id"];
    names.extend(params::all(ty).map(|p| p.name));
    names.join(", ")
}

/// Splits on commas not escaped with a backslash, and unescapes `\,` `\|` `\$` `\\`.
fn split_values(v: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => {
                    if !matches!(n, ',' | '|' | '$' | '\\') {
                        cur.push('\\');
                    }
                    cur.push(n);
                }
                None => cur.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.retain(|s| !s.is_empty());
    out
}

/// Splits a token at its first unescaped `|`.
fn split_token(v: &str) -> (Option<&str>, &str) {
    let b = v.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'|' => return (Some(&v[..i]), &v[i + 1..]),
            _ => i += 1,
        }
    }
    (None, v)
}

fn parse_cond(
    def: &'static ParamDef,
    modifier: Option<&str>,
    value: &str,
    base: &str,
) -> Result<Cond, CdrError> {
    let bad = |m: String| CdrError::BadRequest(m);
    if modifier == Some("missing") {
        return match value {
            "true" => Ok(Cond::Missing(def, true)),
            "false" => Ok(Cond::Missing(def, false)),
            _ => Err(bad(format!("{}:missing must be true or false", def.name))),
        };
    }
    let values = split_values(value);
    let mut alts = Vec::with_capacity(values.len());
    let mut negate = false;
    match def.kind {
        ParamType::String => {
            let (exact, contains) = match modifier {
                None => (false, false),
                Some("exact") => (true, false),
                Some("contains") => (false, true),
                Some(m) => {
                    return Err(bad(format!(
                        "modifier ':{m}' is not supported on {}",
                        def.name
                    )))
                }
            };
            for v in values {
                alts.push(Alt::Str {
                    norm: params::normalize_str(&v),
                    exact: exact.then_some(v),
                    contains,
                });
            }
        }
        ParamType::Token => {
            match modifier {
                None => {}
                Some("not") => negate = true,
                Some(m) => {
                    return Err(bad(format!(
                        "modifier ':{m}' is not supported on {}",
                        def.name
                    )))
                }
            }
            for v in values {
                let (system, code) = split_token(&v);
                let code = (!code.is_empty()).then(|| code.replace("\\|", "|"));
                if system.is_none() && code.is_none() {
                    continue;
                }
                alts.push(Alt::Token {
                    system: system.map(str::to_string),
                    code,
                });
            }
        }
        ParamType::Reference => {
            let type_mod = match modifier {
                None => None,
                Some(m) if is_resource_type(m) => Some(m),
                Some(m) => {
                    return Err(bad(format!(
                        "modifier ':{m}' is not supported on {}",
                        def.name
                    )))
                }
            };
            for v in values {
                let v = strip_base(&v, base).to_string();
                let (value, bare) = match (type_mod, v.contains('/') || v.contains(':')) {
                    (Some(t), false) => (format!("{t}/{v}"), false),
                    (None, false) => (v, true),
                    (_, true) => match params::normalize_reference(&v) {
                        Some(n) => (n, false),
                        None => return Err(bad(format!("{}: '{v}' is not a reference", def.name))),
                    },
                };
                if bare && !valid_id(&value) {
                    return Err(bad(format!("{}: '{value}' is not a valid id", def.name)));
                }
                if !bare && !value.contains(':') {
                    let ok = value
                        .split_once('/')
                        .is_some_and(|(t, id)| is_resource_type(t) && valid_id(id));
                    if !ok {
                        return Err(bad(format!(
                            "{}: '{value}' is not a valid reference",
                            def.name
                        )));
                    }
                }
                // `patient` only refers to Patients: `patient=123` is `Patient/123`.
                let (value, bare) = match def.target {
                    Some(t) if bare => (format!("{t}/{value}"), false),
                    Some(t) if params::reference_type(&value) != Some(t) => {
                        return Err(bad(format!(
                            "{}: '{value}' is not a {t} reference",
                            def.name
                        )))
                    }
                    _ => (value, bare),
                };
                alts.push(Alt::Ref {
                    value,
                    bare,
                    base: base.to_string(),
                });
            }
        }
        ParamType::Date => {
            if let Some(m) = modifier {
                return Err(bad(format!(
                    "modifier ':{m}' is not supported on {}",
                    def.name
                )));
            }
            for v in values {
                let (prefix, rest) = parse_prefix(&v);
                let range = datetime::parse_search(rest).ok_or_else(|| {
                    bad(format!(
                        "{}: '{v}' is not a valid date search value",
                        def.name
                    ))
                })?;
                alts.push(Alt::Date { prefix, range });
            }
        }
    }
    if alts.is_empty() {
        return Err(bad(format!("{}: no value to search for", def.name)));
    }
    Ok(Cond::Any { def, alts, negate })
}

fn parse_prefix(v: &str) -> (Prefix, &str) {
    let p = match v.get(..2) {
        Some("eq") => Prefix::Eq,
        Some("ne") => Prefix::Ne,
        Some("gt") => Prefix::Gt,
        Some("lt") => Prefix::Lt,
        Some("ge") => Prefix::Ge,
        Some("le") => Prefix::Le,
        Some("sa") => Prefix::Sa,
        Some("eb") => Prefix::Eb,
        Some("ap") => Prefix::Ap,
        _ => return (Prefix::Eq, v),
    };
    (p, &v[2..])
}

impl Alt {
    /// Whether one indexed value of a resource satisfies this alternative.
    pub fn matches(&self, value: &IndexValue, now: i64) -> bool {
        match (self, value) {
            (
                Alt::Str {
                    norm,
                    exact,
                    contains,
                },
                IndexValue::Str(s),
            ) => match exact {
                Some(e) => s == e,
                None if *contains => params::normalize_str(s).contains(norm.as_str()),
                None => params::normalize_str(s).starts_with(norm.as_str()),
            },
            (Alt::Token { system, code }, IndexValue::Token(vs, vc)) => {
                let system_ok = match system.as_deref() {
                    None => true,
                    Some("") => vs.is_none(),
                    Some(s) => vs.as_deref() == Some(s),
                };
                system_ok && code.as_ref().is_none_or(|c| c == vc)
            }
            (Alt::Ref { value, bare, base }, IndexValue::Ref(r)) => {
                let r = strip_base(r, base);
                if *bare {
                    params::reference_id(r) == Some(value.as_str())
                } else {
                    r == value
                }
            }
            (Alt::Date { prefix, range }, IndexValue::Date(t)) => {
                date_matches(*prefix, *range, *t, now)
            }
            _ => false,
        }
    }

    /// Whether index candidates must be checked on the resources: `:exact` (the index holds
    /// normalised text) and values long enough to have been cut in the index.
    pub fn needs_check(&self) -> bool {
        match self {
            Alt::Str { norm, exact, .. } => exact.is_some() || norm.len() >= index::MAX_VALUE,
            Alt::Token { system, code } => {
                system.as_ref().is_some_and(|s| s.len() >= index::MAX_VALUE)
                    || code.as_ref().is_some_and(|c| c.len() >= index::MAX_VALUE)
            }
            Alt::Ref { value, base, .. } => {
                value.len() >= index::MAX_VALUE || base.len() >= index::MAX_VALUE
            }
            Alt::Date { .. } => false,
        }
    }
}

/// FHIR's date prefixes, with `t` the target's range and `s` the searched one.
pub fn date_matches(prefix: Prefix, s: Range, t: Range, now: i64) -> bool {
    let eq = t.low >= s.low && t.high <= s.high;
    match prefix {
        Prefix::Eq => eq,
        Prefix::Ne => !eq,
        Prefix::Gt => t.high > s.high,
        Prefix::Lt => t.low < s.low,
        Prefix::Ge => t.high > s.high || eq,
        Prefix::Le => t.low < s.low || eq,
        Prefix::Sa => t.low > s.high,
        Prefix::Eb => t.high < s.low,
        Prefix::Ap => {
            let (low, high) = approximate(s, now);
            t.low <= high && t.high >= low
        }
    }
}

/// `ap`: the searched range widened by 10% of its distance from now (at least a day).
pub fn approximate(s: Range, now: i64) -> (i64, i64) {
    let distance = (now.saturating_sub(s.low)).saturating_abs();
    let margin = (distance / 10).max(86_400_000);
    (s.low.saturating_sub(margin), s.high.saturating_add(margin))
}

#[cfg(test)]
mod unit {
    use super::super::request::parse_query;
    use super::*;

    fn day(s: &str) -> Range {
        datetime::parse_search(s).unwrap()
    }

    #[test]
    fn date_prefixes_follow_the_spec() {
        let s = day("2020");
        let inside = day("2020-06-01");
        let before = day("2019-06-01");
        let straddle = Range {
            low: day("2019-12").low,
            high: day("2020-01").high,
        };
        let now = datetime::now_ms();
        let m = |p, t| date_matches(p, s, t, now);
        assert!(m(Prefix::Eq, inside) && !m(Prefix::Eq, straddle) && !m(Prefix::Eq, before));
        assert!(m(Prefix::Ne, before) && !m(Prefix::Ne, inside));
        assert!(m(Prefix::Ge, inside) && !m(Prefix::Ge, before) && !m(Prefix::Ge, straddle));
        assert!(m(Prefix::Le, inside) && m(Prefix::Le, before) && m(Prefix::Le, straddle));
        assert!(m(Prefix::Lt, before) && !m(Prefix::Lt, inside));
        assert!(!m(Prefix::Gt, inside) && m(Prefix::Gt, day("2021-01-01")));
        assert!(m(Prefix::Eb, before) && !m(Prefix::Eb, straddle));
        assert!(m(Prefix::Sa, day("2021")) && !m(Prefix::Sa, inside));
        assert!(m(Prefix::Ap, inside) && !m(Prefix::Ap, day("1990")));
    }

    #[test]
    fn values_split_and_unescape() {
        assert_eq!(split_values("a,b\\,c,,d\\|e"), vec!["a", "b,c", "d|e"]);
        assert_eq!(split_token("s|c"), (Some("s"), "c"));
        assert_eq!(split_token("|c"), (Some(""), "c"));
        assert_eq!(split_token("c"), (None, "c"));
        assert_eq!(split_token("a\\|b|c"), (Some("a\\|b"), "c"));
    }

    #[test]
    fn parse_errors_and_warnings() {
        let p = |q: &str, strict| parse("Patient", &parse_query(q), strict, "http://x/fhir");
        assert!(p("birthdate=gt2020-13", false).is_err());
        assert!(p("name:foo=x", false).is_err());
        assert!(p("_count=x", false).is_err());
        assert_eq!(p("foo=1", false).unwrap().warnings.len(), 1);
        assert!(p("foo=1", true).is_err());
        assert!(p("_sort=family,-birthdate", false).is_ok());
        assert!(p("_include=Patient:organization", false).is_ok());
        assert!(p("_include=Patient:name", false).is_err());
        let q = p("general-practitioner=http://x/fhir/Practitioner/1", false).unwrap();
        assert!(
            matches!(&q.conds[0], Cond::Any { alts, .. } if matches!(&alts[0], Alt::Ref { value, bare: false, .. } if value == "Practitioner/1"))
        );
    }
}
