//! Batch and transaction Bundles.
//!
//! Resources are validated before the write lock is taken (a `urn:uuid` reference is a valid
//! reference, and rewriting it keeps the resource valid). A transaction then runs under one
//! [`Writer`]: ids are assigned first (new ones for creates, the matches of `ifNoneExist` and
//! of conditional updates), every `urn:uuid:` (and other `fullUrl`) reference anywhere in the
//! Bundle is rewritten to the assigned `Type/id`, then the writes are staged in FHIR's order
//! (DELETE, POST, PUT) and committed as one atomic sled batch. Any entry that fails drops the
//! writer, so nothing is written, and the answer is that entry's error as an OperationOutcome
//! (with `Bundle.entry[n]` in its expression). GET entries run after the commit and see its
//! writes.
//!
//! A batch uses the same steps but applies entry by entry, so each entry succeeds or fails
//! alone and later entries see earlier ones; one flush makes the whole batch durable before the
//! answer. Either way the answer only comes once the writes are on disk.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::datetime;
use super::interact::{self, Written};
use super::outcome::{self, CdrError};
use super::plan;
use super::request::{self, parse_etag, FhirRequest, Method, Return, Target};
use super::store::{new_id, Store, Writer};
use super::validate::check_resource;

/// At most this many entries per Bundle.
pub const MAX_ENTRIES: usize = 10_000;

/// One parsed entry.
#[derive(Debug)]
struct Entry {
    index: usize,
    full_url: Option<String>,
    method: Method,
    /// Path relative to the base (`Patient`, `Patient/1`).
    path: String,
    query: Vec<(String, String)>,
    resource: Option<Value>,
    if_match: Option<u64>,
    if_none_exist: Option<String>,
}

/// What an entry will do, decided before anything is written.
#[derive(Debug, Clone)]
enum Plan {
    /// Create with this id.
    Create { ty: String, id: String },
    /// `ifNoneExist` matched an existing resource.
    Matched { ty: String, id: String },
    /// Same `ifNoneExist` as an earlier entry: answer like it.
    SameAs(usize),
    /// Update (or create-on-update) this id.
    Update { ty: String, id: String },
    /// Delete this id (None: a conditional delete that matched nothing).
    Delete { ty: String, id: Option<String> },
    /// A read or search, run after the writes.
    Get,
}

/// When a Bundle's writes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the answer is returned.
    Now,
    /// By the caller, which waits ([`Store::wait_durable`]) for the sequence number returned
    /// before it passes the answer on: one wait for the Bundles of several callers.
    ByCaller,
}

/// Processes a batch or transaction Bundle; returns the HTTP status and the response Bundle
/// (or an OperationOutcome). An owned Bundle gives its resources up to the writes; a borrowed
/// one has them copied.
pub fn process(store: &Store, bundle: Cow<'_, Value>, base: &str, prefer: Return) -> (u16, Value) {
    let (status, answer, _) = process_with(store, bundle, base, prefer, Durability::Now);
    (status, answer)
}

/// [`process`], with the sequence number the answer depends on: with
/// [`Durability::ByCaller`] the answer must not be passed on before that is durable.
pub fn process_with(
    store: &Store,
    bundle: Cow<'_, Value>,
    base: &str,
    prefer: Return,
    durability: Durability,
) -> (u16, Value, u64) {
    match run(store, bundle, base, prefer, durability) {
        Ok((v, seq)) => (200, v, seq),
        // An error claims nothing written; waiting for all applied so far is harmless.
        Err(e) => (e.status(), e.to_outcome(), store.applied()),
    }
}

fn run(
    store: &Store,
    bundle: Cow<'_, Value>,
    base: &str,
    prefer: Return,
    durability: Durability,
) -> Result<(Value, u64), CdrError> {
    let bad = |m: &str| CdrError::BadRequest(m.to_string());
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(bad(
            "POST to the base needs a Bundle of type batch or transaction",
        ));
    }
    let transaction = match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => true,
        Some("batch") => false,
        other => {
            return Err(CdrError::BadRequest(format!(
                "Bundle.type must be batch or transaction, not {}",
                other.map_or("missing".to_string(), |t| format!("'{t}'"))
            )))
        }
    };
    let raw = match bundle {
        Cow::Borrowed(b) => match b.get("entry") {
            None => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(bad("Bundle.entry must be an array")),
        },
        Cow::Owned(mut b) => match b.get_mut("entry").map(Value::take) {
            None => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(bad("Bundle.entry must be an array")),
        },
    };
    if raw.len() > MAX_ENTRIES {
        return Err(CdrError::TooLarge(format!(
            "the Bundle has {} entries; at most {MAX_ENTRIES} are accepted",
            raw.len()
        )));
    }
    let mut entries = Vec::with_capacity(raw.len());
    let mut failed: HashMap<usize, CdrError> = HashMap::new();
    let count = raw.len();
    for (i, e) in raw.into_iter().enumerate() {
        match parse_entry(i, e, base) {
            Ok(entry) => entries.push(entry),
            Err(err) if transaction => return Err(err.in_entry(i)),
            Err(err) => {
                failed.insert(i, err);
            }
        }
    }
    let mut seen_urls = HashSet::new();
    for e in &entries {
        if let Some(u) = &e.full_url {
            if !seen_urls.insert(u.clone()) && transaction {
                return Err(
                    CdrError::BadRequest(format!("fullUrl '{u}' appears twice")).in_entry(e.index)
                );
            }
        }
    }
    let kind = if transaction {
        "transaction-response"
    } else {
        "batch-response"
    };
    let mut responses: Vec<Option<Value>> = vec![None; count];
    for (i, err) in failed.drain() {
        responses[i] = Some(error_entry(&err));
    }
    let run_entries = if transaction {
        transaction_run
    } else {
        batch_run
    };
    let seq = run_entries(
        store,
        &mut entries,
        base,
        prefer,
        &mut responses,
        durability,
    )?;
    let mut out = json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": datetime::format_instant(datetime::now_ms())},
        "type": kind,
        "link": [{"relation": "self", "url": base}],
    });
    // FHIR JSON has no empty arrays: an empty Bundle's response has no `entry` at all.
    if !responses.is_empty() {
        out["entry"] = responses
            .into_iter()
            .map(|r| r.unwrap_or_else(|| json!({})))
            .collect();
    }
    Ok((out, seq))
}

fn parse_entry(index: usize, mut e: Value, base: &str) -> Result<Entry, CdrError> {
    let bad = |m: String| CdrError::BadRequest(m);
    let resource = e.get_mut("resource").map(Value::take);
    let request = e
        .get("request")
        .ok_or_else(|| bad("the entry has no request".into()))?;
    let method_name = request.get("method").and_then(Value::as_str).unwrap_or("");
    let method = Method::parse(method_name).ok_or_else(|| {
        bad(format!(
            "request.method '{method_name}' is not an HTTP method"
        ))
    })?;
    if method == Method::Patch {
        return Err(CdrError::MethodNotAllowed("PATCH is not supported".into()));
    }
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the entry has no request.url".into()))?;
    let r = FhirRequest::new(method, url, base);
    if matches!(method, Method::Post | Method::Put) && resource.is_none() {
        return Err(bad(format!("{method_name} {url} needs a resource")));
    }
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        Some(s) => {
            Some(parse_etag(s).ok_or_else(|| bad(format!("ifMatch '{s}' is not a version ETag")))?)
        }
        None => None,
    };
    let if_none_exist = request
        .get("ifNoneExist")
        .and_then(Value::as_str)
        .map(|s| s.split_once('?').map_or(s, |(_, q)| q).to_string())
        .filter(|s| !s.is_empty());
    Ok(Entry {
        index,
        full_url: e.get("fullUrl").and_then(Value::as_str).map(str::to_string),
        method,
        path: r.path,
        query: r.query,
        resource,
        if_match,
        if_none_exist,
    })
}

/// Checks the resource of a POST or PUT entry against the type of its URL. Done before the
/// write lock is taken: `urn:uuid` references are valid references, and rewriting them to
/// `Type/id` later keeps the resource valid.
fn validate_entry(e: &Entry) -> Result<(), CdrError> {
    let (Some(resource), Method::Post | Method::Put) = (&e.resource, e.method) else {
        return Ok(());
    };
    let ty = match request::parse_target(&e.path)? {
        Target::Type(ty) | Target::Instance(ty, _) => ty,
        _ => return Ok(()), // refused later, with the right status
    };
    check_resource(resource, Some(&ty))
}

/// Order of processing: DELETE, POST, PUT, GET (stable within each).
fn rank(m: Method) -> u8 {
    match m {
        Method::Delete => 0,
        Method::Post => 1,
        Method::Put | Method::Patch => 2,
        Method::Get | Method::Head => 3,
    }
}

/// Replaces fullUrls (`urn:uuid:...`) in criteria values by the ids they were given.
fn resolve_criteria(
    query: &[(String, String)],
    urls: &HashMap<String, String>,
) -> Result<String, CdrError> {
    let mut pairs = Vec::with_capacity(query.len());
    for (k, v) in query {
        let v = match urls.get(v) {
            Some(r) => r.clone(),
            None if v.starts_with("urn:uuid:") => {
                return Err(CdrError::BadRequest(format!(
                    "criterion {k}={v} refers to an entry not created before it"
                )))
            }
            None => v.clone(),
        };
        pairs.push((k.clone(), v));
    }
    Ok(request::encode_query(&pairs))
}

/// Decides what `e` does (its id), given the fullUrls resolved so far.
fn plan(
    store: &Store,
    e: &Entry,
    urls: &HashMap<String, String>,
    conditional_seen: &mut HashMap<(String, String), usize>,
    base: &str,
) -> Result<Plan, CdrError> {
    let target = request::parse_target(&e.path)?;
    match (e.method, target) {
        (Method::Get | Method::Head, _) => Ok(Plan::Get),
        (Method::Post, Target::Type(ty)) => match e.if_none_exist.clone() {
            None => Ok(Plan::Create { ty, id: new_id() }),
            Some(raw) => {
                let criteria = resolve_criteria(&request::parse_query(&raw), urls)?;
                if let Some(first) = conditional_seen.get(&(ty.clone(), criteria.clone())) {
                    return Ok(Plan::SameAs(*first));
                }
                conditional_seen.insert((ty.clone(), criteria.clone()), e.index);
                let ids = plan::conditional_ids(store, &ty, &criteria, base)?;
                match ids.as_slice() {
                    [] => Ok(Plan::Create { ty, id: new_id() }),
                    [one] => Ok(Plan::Matched {
                        ty,
                        id: one.clone(),
                    }),
                    _ => Err(CdrError::PreconditionFailed(format!(
                        "ifNoneExist '{raw}' matches {} {ty} resources",
                        ids.len()
                    ))),
                }
            }
        },
        (Method::Put, Target::Instance(ty, id)) => Ok(Plan::Update { ty, id }),
        (Method::Put, Target::Type(ty)) if !e.query.is_empty() => {
            let criteria = resolve_criteria(&e.query, urls)?;
            let ids = plan::conditional_ids(store, &ty, &criteria, base)?;
            let body_id = e
                .resource
                .as_ref()
                .and_then(|r| r.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            match ids.as_slice() {
                // Nothing matched and no id given: a create with a new id, as `PUT Type?criteria`
                // over HTTP does (`interact::conditional_update`); a new id has no current record
                // to look up.
                [] if body_id.is_none() && e.if_match.is_none() => {
                    Ok(Plan::Create { ty, id: new_id() })
                }
                [] => Ok(Plan::Update {
                    id: match body_id {
                        Some(id) => {
                            if store.current(&ty, &id)?.is_some_and(|c| !c.deleted) {
                                return Err(CdrError::Conflict(format!(
                                    "{ty}/{id} exists but does not match '{criteria}'"
                                )));
                            }
                            id
                        }
                        None => new_id(),
                    },
                    ty,
                }),
                [one] => {
                    if body_id.as_ref().is_some_and(|b| b != one) {
                        return Err(CdrError::BadRequest(format!(
                            "the resource's id differs from the matched {ty}/{one}"
                        )));
                    }
                    Ok(Plan::Update {
                        ty,
                        id: one.clone(),
                    })
                }
                _ => Err(CdrError::PreconditionFailed(format!(
                    "conditional update '{ty}?{criteria}' matches {} resources",
                    ids.len()
                ))),
            }
        }
        (Method::Delete, Target::Instance(ty, id)) => Ok(Plan::Delete { ty, id: Some(id) }),
        (Method::Delete, Target::Type(ty)) if !e.query.is_empty() => {
            let criteria = resolve_criteria(&e.query, urls)?;
            let ids = plan::conditional_ids(store, &ty, &criteria, base)?;
            match ids.as_slice() {
                [] => Ok(Plan::Delete { ty, id: None }),
                [one] => Ok(Plan::Delete {
                    ty,
                    id: Some(one.clone()),
                }),
                _ => Err(CdrError::PreconditionFailed(format!(
                    "conditional delete '{ty}?{criteria}' matches {} resources",
                    ids.len()
                ))),
            }
        }
        (m, _) => Err(CdrError::MethodNotAllowed(format!(
            "{} {} is not supported in a Bundle",
            m.as_str(),
            e.path
        ))),
    }
}

/// Rewrites references to fullUrls of this Bundle; a `urn:uuid:` that no entry defines is an
/// error (it would be stored dangling). As the transaction rules say (http.html#trules), links
/// in `uri`/`url` elements (`attachment.url`, `valueUri`, ...) and in the narrative's `href` and
/// `src` are rewritten too, but only where they name an entry: those elements may hold other
/// URNs legitimately.
fn rewrite_references(
    resource: &mut Value,
    urls: &HashMap<String, String>,
) -> Result<(), CdrError> {
    let mut missing = None;
    walk_links(resource, urls, &mut |r: &mut String| {
        // `urn:uuid:x/_history/1` is not a thing; plain lookups suffice.
        if let Some(to) = urls.get(r.as_str()) {
            *r = to.clone();
        } else if r.starts_with("urn:uuid:") || r.starts_with("urn:oid:") {
            missing.get_or_insert_with(|| r.clone());
        }
    });
    match missing {
        Some(r) => Err(CdrError::BadRequest(format!(
            "reference '{r}' does not match the fullUrl of any entry of this Bundle"
        ))),
        None => Ok(()),
    }
}

/// Calls `reference` on every `reference` string in `v`, and rewrites the other links to an
/// entry's fullUrl (see [`rewrite_references`]) in the same walk. Strings of string-typed
/// elements (`Identifier.value`, `display`, `text`, ...) are left alone even when they read
/// like a fullUrl.
fn walk_links(
    v: &mut Value,
    urls: &HashMap<String, String>,
    reference: &mut impl FnMut(&mut String),
) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    Value::String(s) if k == "reference" => reference(s),
                    Value::String(s) if k == "div" => {
                        if s.contains("urn:") {
                            for (from, to) in urls {
                                for attr in ["href", "src"] {
                                    let quoted = format!("{attr}=\"{from}\"");
                                    if s.contains(&quoted) {
                                        *s = s.replace(&quoted, &format!("{attr}=\"{to}\""));
                                    }
                                }
                            }
                        }
                    }
                    Value::String(s)
                        if s.starts_with("urn:")
                            && !matches!(
                                k.as_str(),
                                "value" | "id" | "display" | "text" | "code" | "fullUrl"
                            ) =>
                    {
                        if let Some(to) = urls.get(s.as_str()) {
                            *s = to.clone();
                        }
                    }
                    other => walk_links(other, urls, reference),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk_links(item, urls, reference);
            }
        }
        _ => {}
    }
}

/// Performs the write planned for `e` (its references already rewritten).
fn execute(
    w: &mut Writer<'_>,
    e: &mut Entry,
    plan: &Plan,
    base: &str,
) -> Result<Written, CdrError> {
    match plan {
        Plan::Create { ty, id } => {
            let body = e.resource.take().unwrap_or(Value::Null);
            interact::create(w, ty, body, Some(id.clone()), true, base)
        }
        Plan::Matched { ty, id } => interact::matched(w.store(), ty, id),
        Plan::Update { ty, id } => {
            let mut body = e.resource.take().unwrap_or(Value::Null);
            if e.method == Method::Put && !e.query.is_empty() {
                if let Some(obj) = body.as_object_mut() {
                    obj.insert("id".into(), Value::String(id.clone()));
                }
            }
            interact::update(w, ty, id, body, e.if_match, true, base)
        }
        Plan::Delete { ty, id: Some(id) } => interact::delete(w, ty, id, e.if_match),
        Plan::Delete { ty, id: None } => Ok(Written {
            status: 200,
            ty: ty.clone(),
            id: String::new(),
            vid: 0,
            last_updated: 0,
            resource: None,
            changed: false,
            message: Some(format!("no {ty} matches the criteria: nothing to delete")),
        }),
        Plan::SameAs(_) | Plan::Get => Err(CdrError::BadRequest("internal: not a write".into())),
    }
}

fn write_entry(w: &Written, base: &str, prefer: Return) -> Value {
    let mut response = json!({"status": outcome::status_line(w.status)});
    if w.vid > 0 {
        response["location"] = Value::String(w.location());
        response["etag"] = Value::String(request::etag(w.vid));
        response["lastModified"] = Value::String(datetime::format_instant(w.last_updated));
    }
    if let Some(m) = &w.message {
        response["outcome"] = outcome::message("information", "informational", m);
    }
    let mut entry = json!({});
    if !w.id.is_empty() {
        entry["fullUrl"] = Value::String(format!("{base}/{}/{}", w.ty, w.id));
    }
    if prefer == Return::Representation {
        if let Some(r) = &w.resource {
            entry["resource"] = r.clone();
        }
    }
    entry["response"] = response;
    entry
}

fn error_entry(e: &CdrError) -> Value {
    json!({"response": {"status": outcome::status_line(e.status()), "outcome": e.to_outcome()}})
}

fn get_entry(store: &Store, e: &Entry, base: &str) -> Value {
    let req = FhirRequest {
        method: Some(e.method),
        path: e.path.clone(),
        query: e.query.clone(),
        ..FhirRequest::default()
    };
    let r = interact::handle(store, &req, base);
    let mut response = json!({"status": outcome::status_line(r.status)});
    if let Some(v) = r.version {
        response["etag"] = Value::String(request::etag(v));
    }
    if let Some(l) = &r.location {
        response["location"] = Value::String(l.clone());
    }
    if let Some(m) = r.last_modified {
        response["lastModified"] = Value::String(datetime::format_instant(m));
    }
    let mut entry = json!({});
    match r.body {
        Some(body) if r.status >= 400 => response["outcome"] = body,
        Some(body) => entry["resource"] = body,
        None => {}
    }
    entry["response"] = response;
    entry
}

/// Records the `Type/id` given to a fullUrl.
fn map_url(full_url: Option<&String>, plan: &Plan, urls: &mut HashMap<String, String>) {
    if let (Some(u), Plan::Create { ty, id } | Plan::Matched { ty, id } | Plan::Update { ty, id }) =
        (full_url, plan)
    {
        urls.insert(u.clone(), format!("{ty}/{id}"));
    }
}

fn target_of(plan: &Plan) -> Option<(String, String)> {
    match plan {
        Plan::Create { ty, id } | Plan::Matched { ty, id } | Plan::Update { ty, id } => {
            Some((ty.clone(), id.clone()))
        }
        Plan::Delete { ty, id: Some(id) } => Some((ty.clone(), id.clone())),
        _ => None,
    }
}

/// The plan of each entry (by position in `entries`) and the `Type/id` of each fullUrl.
type Planned = (HashMap<usize, Plan>, HashMap<String, String>);

/// Whether `e` is written under an id known without a lookup: an unconditional create, or an
/// update of `Type/id`. Planned first, so that any criterion may name its fullUrl.
fn known_id(e: &Entry) -> bool {
    match e.method {
        Method::Post => e.if_none_exist.is_none(),
        Method::Put => {
            e.query.is_empty() && matches!(request::parse_target(&e.path), Ok(Target::Instance(..)))
        }
        _ => false,
    }
}

/// Plans every entry in processing order: those whose ids are known first (unconditional
/// creates, updates of `Type/id`), then conditional creates (whose criteria may name them),
/// then the rest (conditional updates, deletes, reads). (Updates of `Type/id` were planned
/// last: a conditional create whose criterion named one's fullUrl was refused, and the
/// engine's CDR destinations turn unconditional creates into such updates.)
fn plan_all(
    store: &Store,
    entries: &[Entry],
    order: &[usize],
    base: &str,
    mut on_error: impl FnMut(usize, CdrError) -> Result<(), CdrError>,
) -> Result<Planned, CdrError> {
    let mut plans: HashMap<usize, Plan> = HashMap::new();
    let mut urls: HashMap<String, String> = HashMap::new();
    let mut conditional_seen = HashMap::new();
    let passes: [&dyn Fn(&Entry) -> bool; 3] = [
        &known_id,
        &|e| e.method == Method::Post && e.if_none_exist.is_some(),
        &|e| e.method != Method::Post && !known_id(e),
    ];
    for pass in passes {
        for &i in order {
            let e = &entries[i];
            if !pass(e) {
                continue;
            }
            match plan(store, e, &urls, &mut conditional_seen, base) {
                Ok(p) => {
                    // An entry repeating an earlier conditional create gets the same id.
                    let effective = match &p {
                        Plan::SameAs(first) => plans.get(first).cloned(),
                        other => Some(other.clone()),
                    };
                    if let Some(effective) = effective {
                        map_url(e.full_url.as_ref(), &effective, &mut urls);
                    }
                    plans.insert(i, p);
                }
                Err(err) => on_error(i, err.in_entry(e.index))?,
            }
        }
    }
    Ok((plans, urls))
}

fn transaction_run(
    store: &Store,
    entries: &mut [Entry],
    base: &str,
    prefer: Return,
    responses: &mut [Option<Value>],
    durability: Durability,
) -> Result<u64, CdrError> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| rank(entries[i].method));
    for e in entries.iter() {
        validate_entry(e).map_err(|err| err.in_entry(e.index))?;
    }
    let mut w = store.writer();
    let (plans, urls) = plan_all(w.store(), entries, &order, base, |_, e| Err(e))?;
    let mut targets = HashSet::new();
    for &i in &order {
        if let Some(t) = plans.get(&i).and_then(target_of) {
            if !targets.insert(t.clone()) {
                return Err(CdrError::BadRequest(format!(
                    "{}/{} is the target of more than one entry of this transaction",
                    t.0, t.1
                ))
                .in_entry(entries[i].index));
            }
        }
    }
    let mut written: HashMap<usize, Written> = HashMap::new();
    for &i in &order {
        let Some(plan) = plans.get(&i) else { continue };
        if matches!(plan, Plan::Get | Plan::SameAs(_)) {
            continue;
        }
        let e = &mut entries[i];
        let index = e.index;
        if let Some(r) = e.resource.as_mut() {
            rewrite_references(r, &urls).map_err(|err| err.in_entry(index))?;
        }
        let result = execute(&mut w, e, plan, base).map_err(|err| err.in_entry(index))?;
        written.insert(i, result);
    }
    let seq = w.commit()?;
    for &i in &order {
        let e = &entries[i];
        responses[e.index] = Some(match plans.get(&i) {
            Some(Plan::Get) => get_entry(store, e, base),
            Some(Plan::SameAs(first)) => match written.get(first) {
                Some(w) => {
                    let mut same = w.clone();
                    same.status = 200;
                    write_entry(&same, base, prefer)
                }
                None => error_entry(&CdrError::BadRequest("internal: missing entry".into())),
            },
            Some(_) => match written.get(&i) {
                Some(w) => write_entry(w, base, prefer),
                None => error_entry(&CdrError::BadRequest("internal: missing entry".into())),
            },
            None => continue,
        });
    }
    if durability == Durability::Now {
        store.wait_durable(seq)?;
    }
    Ok(seq)
}

fn batch_run(
    store: &Store,
    entries: &mut [Entry],
    base: &str,
    prefer: Return,
    responses: &mut [Option<Value>],
    durability: Durability,
) -> Result<u64, CdrError> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| rank(entries[i].method));
    let mut errors: HashMap<usize, CdrError> = HashMap::new();
    let mut invalid = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if let Err(err) = validate_entry(e) {
            errors.insert(i, err.in_entry(e.index));
            invalid.insert(i);
        }
    }
    order.retain(|i| !invalid.contains(i));
    // One writer for the whole batch (no other write slips between planning and writing),
    // applied after each entry so that each stands alone and later ones see earlier ones.
    let mut w = store.writer();
    let (plans, urls) = plan_all(w.store(), entries, &order, base, |i, e| {
        errors.insert(i, e);
        Ok(())
    })?;
    let mut written: HashMap<usize, Written> = HashMap::new();
    for &i in &order {
        let Some(plan) = plans.get(&i) else { continue };
        if matches!(plan, Plan::Get | Plan::SameAs(_)) {
            continue;
        }
        let e = &mut entries[i];
        let result = e
            .resource
            .as_mut()
            .map_or(Ok(()), |r| rewrite_references(r, &urls))
            .and_then(|()| execute(&mut w, e, plan, base));
        match result {
            Ok(wr) => {
                // A failed entry stages nothing, so what is staged is this entry's alone.
                w.apply()?;
                written.insert(i, wr);
            }
            Err(err) => {
                errors.insert(i, err.in_entry(e.index));
            }
        }
    }
    let last_seq = w.commit()?;
    if durability == Durability::Now {
        store.wait_durable(last_seq)?;
    }
    // GETs run in processing order (after the writes); every entry gets its response.
    order.extend(invalid);
    for &i in &order {
        let e = &entries[i];
        let response = if let Some(err) = errors.get(&i) {
            error_entry(err)
        } else {
            match plans.get(&i) {
                Some(Plan::Get) => get_entry(store, e, base),
                Some(Plan::SameAs(first)) => match (written.get(first), errors.get(first)) {
                    (Some(w), _) => {
                        let mut same = w.clone();
                        same.status = 200;
                        write_entry(&same, base, prefer)
                    }
                    (None, Some(err)) => error_entry(err),
                    _ => error_entry(&CdrError::BadRequest("the entry it repeats failed".into())),
                },
                Some(_) => match written.get(&i) {
                    Some(w) => write_entry(w, base, prefer),
                    None => error_entry(&CdrError::BadRequest("internal: missing entry".into())),
                },
                None => continue,
            }
        };
        responses[e.index] = Some(response);
    }
    Ok(last_seq)
}
