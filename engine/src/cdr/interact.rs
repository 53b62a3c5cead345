//! The FHIR REST interactions: create, read, vread, update, delete, history, search, and their
//! conditional forms, plus [`handle`], which routes one [`FhirRequest`] to them.
//!
//! Writes take a [`Writer`] so that a transaction Bundle can run many of them under one lock
//! and commit them together; a plain REST write is a transaction of one. Every write validates
//! the resource, resolves conditional references (`Patient?identifier=a|b`), sets `id` and
//! `meta.versionId`/`meta.lastUpdated` (keeping the client's tags, profiles and security
//! labels), and stages a new version, except when the content equals the current version,
//! `meta` aside: then nothing is written and the current version is answered, so that replaying
//! the same update (a retried delivery, a rerun message) changes nothing.

use serde_json::{json, Map, Value};

use super::bundle;
use super::capability;
use super::datetime;
use super::outcome::{self, CdrError};
use super::plan;
use super::request::{encode_query, parse_etag, FhirRequest, FhirResponse, Method, Return, Target};
use super::search;
use super::searchset;
use super::store::{new_id, Stamp, Store, Writer};
use super::validate::{check_resource, valid_id};

/// What a write did.
#[derive(Debug, Clone)]
pub struct Written {
    /// 201 created, 200 updated/unchanged/matched/deleted.
    pub status: u16,
    /// The resource type.
    pub ty: String,
    /// The resource id.
    pub id: String,
    /// The version now current (for deletes, the deletion's).
    pub vid: u64,
    /// When that version was written.
    pub last_updated: i64,
    /// The resource as stored (None for deletes and no-op deletes).
    pub resource: Option<Value>,
    /// False when nothing was written (unchanged update, matched conditional create, delete of
    /// a missing resource).
    pub changed: bool,
    /// For deletes: the informational message.
    pub message: Option<String>,
}

impl Written {
    /// `Type/id/_history/vid`.
    pub fn location(&self) -> String {
        format!("{}/{}/_history/{}", self.ty, self.id, self.vid)
    }

    /// The REST response for this write, honouring `Prefer: return=`.
    pub fn response(&self, prefer: Return) -> FhirResponse {
        let body = if let Some(m) = &self.message {
            Some(outcome::message("information", "informational", m))
        } else {
            match prefer {
                Return::Representation => self.resource.clone(),
                Return::Minimal => None,
                Return::OperationOutcome => Some(outcome::message(
                    "information",
                    "informational",
                    &format!("{} {}", outcome::status_line(self.status), self.location()),
                )),
            }
        };
        FhirResponse {
            status: self.status,
            body,
            location: (self.vid > 0).then(|| self.location()),
            version: (self.vid > 0).then_some(self.vid),
            last_modified: (self.vid > 0).then_some(self.last_updated),
        }
    }
}

/// Answers one interaction. `base` is the server's base URL (for links and fullUrls).
pub fn handle(store: &Store, req: &FhirRequest, base: &str) -> FhirResponse {
    match dispatch(store, req, base) {
        Ok(r) => r,
        Err(e) => FhirResponse::error(&e),
    }
}

fn dispatch(store: &Store, req: &FhirRequest, base: &str) -> Result<FhirResponse, CdrError> {
    let method = req.method.unwrap_or(Method::Get);
    let target = super::request::parse_target(&req.path)?;
    let if_match = match &req.if_match {
        Some(s) => Some(parse_etag(s).ok_or_else(|| {
            CdrError::BadRequest(format!("If-Match '{s}' is not a version ETag like W/\"3\""))
        })?),
        None => None,
    };
    let not_allowed = |what: &str| {
        Err(CdrError::MethodNotAllowed(format!(
            "{} is not supported on {what}",
            method.as_str()
        )))
    };
    match (method, target) {
        (Method::Get | Method::Head, Target::Metadata) => {
            Ok(FhirResponse::body(200, capability::statement(base)))
        }
        (Method::Post, Target::Base) => {
            let body = req.body.as_ref().ok_or_else(|| {
                CdrError::BadRequest("POST to the base needs a batch or transaction Bundle".into())
            })?;
            let (status, body) =
                bundle::process(store, std::borrow::Cow::Borrowed(body), base, req.prefer);
            Ok(FhirResponse::body(status, body))
        }
        (_, Target::Base) => {
            not_allowed("the base (system-level search and history are not supported)")
        }
        (Method::Get | Method::Head, Target::Type(ty) | Target::Search(ty))
        | (Method::Post, Target::Search(ty)) => {
            let q = search::parse(&ty, &req.query, req.strict, base)?;
            Ok(FhirResponse::body(
                200,
                searchset::searchset(store, &q, base)?,
            ))
        }
        (Method::Post, Target::Type(ty)) => {
            let body = body_of(req)?;
            write(store, req.prefer, |w| match &req.if_none_exist {
                Some(criteria) => conditional_create(w, &ty, body, criteria, None, base),
                None => create(w, &ty, body, None, false, base),
            })
        }
        (Method::Put, Target::Type(ty)) if !req.query.is_empty() => {
            let body = body_of(req)?;
            let criteria = encode_query(&req.query);
            write(store, req.prefer, |w| {
                conditional_update(w, &ty, &criteria, body, if_match, base)
            })
        }
        (Method::Delete, Target::Type(ty)) if !req.query.is_empty() => {
            let criteria = encode_query(&req.query);
            write(store, Return::Representation, |w| {
                conditional_delete(w, &ty, &criteria, base)
            })
        }
        (Method::Get | Method::Head, Target::Instance(ty, id)) => read(store, &ty, &id),
        (Method::Put, Target::Instance(ty, id)) => {
            let body = body_of(req)?;
            write(store, req.prefer, |w| {
                update(w, &ty, &id, body, if_match, false, base)
            })
        }
        (Method::Delete, Target::Instance(ty, id)) => write(store, Return::Representation, |w| {
            delete(w, &ty, &id, if_match)
        }),
        (Method::Get | Method::Head, Target::History(ty, id)) => {
            history(store, &ty, &id, &req.query, base)
        }
        (Method::Get | Method::Head, Target::Version(ty, id, vid)) => vread(store, &ty, &id, &vid),
        (_, Target::TypeHistory(ty)) => not_allowed(&format!(
            "{ty}/_history (type-level history is not supported)"
        )),
        (Method::Patch, _) => not_allowed("this server (PATCH is not supported)"),
        (_, Target::Metadata) => not_allowed("metadata"),
        (_, Target::Type(ty) | Target::Search(ty)) => not_allowed(&ty),
        (_, Target::Instance(ty, id) | Target::History(ty, id) | Target::Version(ty, id, _)) => {
            not_allowed(&format!("{ty}/{id}"))
        }
    }
}

fn body_of(req: &FhirRequest) -> Result<Value, CdrError> {
    req.body
        .clone()
        .ok_or_else(|| CdrError::BadRequest("this interaction needs a resource in the body".into()))
}

/// Runs one write under the lock, commits it and waits until it is durable.
fn write(
    store: &Store,
    prefer: Return,
    op: impl FnOnce(&mut Writer<'_>) -> Result<Written, CdrError>,
) -> Result<FhirResponse, CdrError> {
    let mut w = store.writer();
    let written = op(&mut w)?;
    let seq = w.commit()?;
    store.wait_durable(seq)?;
    Ok(written.response(prefer))
}

/// Builds the stored form: `resourceType`, `id`, `meta` first, the server's versionId and
/// lastUpdated in `meta`, the rest as given.
fn prepare(body: Value, ty: &str, id: &str, vid: u64, now: i64) -> Value {
    let Value::Object(mut src) = body else {
        return body;
    };
    let mut meta = match src.remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.remove("versionId");
    meta.remove("lastUpdated");
    let mut m = Map::with_capacity(meta.len() + 2);
    m.insert("versionId".into(), Value::String(vid.to_string()));
    m.insert(
        "lastUpdated".into(),
        Value::String(datetime::format_instant(now)),
    );
    m.extend(meta);
    let mut out = Map::with_capacity(src.len() + 3);
    out.insert("resourceType".into(), Value::String(ty.to_string()));
    out.insert("id".into(), Value::String(id.to_string()));
    out.insert("meta".into(), Value::Object(m));
    src.remove("resourceType");
    src.remove("id");
    out.extend(src);
    Value::Object(out)
}

/// Equal as resources, ignoring `meta.versionId` and `meta.lastUpdated` (key order never
/// matters: serde_json maps compare as maps).
pub fn same_content(a: &Value, b: &Value) -> bool {
    fn strip(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(obj) = v.as_object_mut() {
            let empty = match obj.get_mut("meta").and_then(Value::as_object_mut) {
                Some(meta) => {
                    meta.remove("versionId");
                    meta.remove("lastUpdated");
                    meta.is_empty()
                }
                None => false,
            };
            if empty {
                obj.remove("meta");
            }
        }
        v
    }
    strip(a) == strip(b)
}

/// Replaces conditional references (`Patient?identifier=a|b`) by the one resource they match.
pub fn resolve_conditional_references(
    store: &Store,
    resource: &mut Value,
    base: &str,
) -> Result<(), CdrError> {
    let mut err = None;
    walk_references(resource, &mut |r: &mut String| {
        if err.is_some() {
            return;
        }
        let Some((ty, criteria)) = r.split_once('?') else {
            return;
        };
        if !super::validate::is_resource_type(ty) {
            return;
        }
        match plan::conditional_ids(store, ty, criteria, base) {
            Ok(ids) if ids.len() == 1 => *r = format!("{ty}/{}", ids[0]),
            Ok(ids) if ids.is_empty() => {
                err = Some(CdrError::BadRequest(format!(
                    "conditional reference '{r}' matches no resource"
                )))
            }
            Ok(ids) => {
                err = Some(CdrError::PreconditionFailed(format!(
                    "conditional reference '{r}' matches {} resources",
                    ids.len()
                )))
            }
            Err(e) => err = Some(e),
        }
    });
    err.map_or(Ok(()), Err)
}

/// Calls `f` on every `reference` string in `v`.
pub fn walk_references(v: &mut Value, f: &mut impl FnMut(&mut String)) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match child {
                    Value::String(s) if k == "reference" => f(s),
                    other => walk_references(other, f),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                walk_references(item, f);
            }
        }
        _ => {}
    }
}

/// Validates (unless the caller already did, outside the write lock), then resolves
/// conditional references (which become valid `Type/id`s).
fn check(
    store: &Store,
    ty: &str,
    body: &mut Value,
    validated: bool,
    base: &str,
) -> Result<(), CdrError> {
    if !validated {
        check_resource(body, Some(ty))?;
    }
    resolve_conditional_references(store, body, base)
}

/// Creates a resource with a server-assigned id (or `id`, assigned earlier by a transaction).
pub fn create(
    w: &mut Writer<'_>,
    ty: &str,
    mut body: Value,
    id: Option<String>,
    validated: bool,
    base: &str,
) -> Result<Written, CdrError> {
    check(w.store(), ty, &mut body, validated, base)?;
    let id = match id {
        Some(id) => id,
        None => loop {
            let id = new_id();
            if w.store().current(ty, &id)?.is_none() {
                break id;
            }
        },
    };
    let now = datetime::now_ms();
    let stored = prepare(body, ty, &id, 1, now);
    w.stage(
        ty,
        &id,
        Stamp {
            vid: 1,
            method: Method::Post,
            last_updated: now,
        },
        Some(&stored),
        None,
    )?;
    Ok(Written {
        status: 201,
        ty: ty.to_string(),
        id,
        vid: 1,
        last_updated: now,
        resource: Some(stored),
        changed: true,
        message: None,
    })
}

/// The outcome of a conditional create that matched `id`: nothing written.
pub fn matched(store: &Store, ty: &str, id: &str) -> Result<Written, CdrError> {
    let (cur, resource) = store
        .read_live(ty, id)?
        .ok_or_else(|| CdrError::Conflict(format!("{ty}/{id} changed during the request")))?;
    Ok(Written {
        status: 200,
        ty: ty.to_string(),
        id: id.to_string(),
        vid: cur.vid,
        last_updated: cur.last_updated,
        resource: Some(resource),
        changed: false,
        message: None,
    })
}

/// Create unless `criteria` match: 0 matches create, 1 returns it (200), more is a 412.
pub fn conditional_create(
    w: &mut Writer<'_>,
    ty: &str,
    body: Value,
    criteria: &str,
    id: Option<String>,
    base: &str,
) -> Result<Written, CdrError> {
    let ids = plan::conditional_ids(w.store(), ty, criteria, base)?;
    match ids.as_slice() {
        [] => create(w, ty, body, id, false, base),
        [one] => matched(w.store(), ty, one),
        _ => Err(CdrError::PreconditionFailed(format!(
            "If-None-Exist '{criteria}' matches {} {ty} resources",
            ids.len()
        ))),
    }
}

/// Updates (or creates with the client's id) `ty/id`.
pub fn update(
    w: &mut Writer<'_>,
    ty: &str,
    id: &str,
    mut body: Value,
    if_match: Option<u64>,
    validated: bool,
    base: &str,
) -> Result<Written, CdrError> {
    match body.get("id") {
        Some(Value::String(body_id)) if body_id == id => {}
        Some(Value::String(body_id)) => {
            return Err(CdrError::BadRequest(format!(
                "the id in the body ('{body_id}') does not match the id in the URL ('{id}')"
            )))
        }
        Some(_) => {
            check_resource(&body, Some(ty))?;
        }
        None => {
            return Err(CdrError::BadRequest(format!(
                "an update needs the resource's id in the body (expected \"id\": \"{id}\")"
            )))
        }
    }
    if !valid_id(id) {
        return Err(CdrError::BadRequest(format!("'{id}' is not a valid id")));
    }
    check(w.store(), ty, &mut body, validated, base)?;
    let current = w.store().current(ty, id)?;
    if let Some(expected) = if_match {
        match current {
            Some(c) if !c.deleted && c.vid == expected => {}
            Some(c) => {
                return Err(CdrError::PreconditionFailed(format!(
                    "If-Match W/\"{expected}\" but {ty}/{id} is at version {}{}",
                    c.vid,
                    if c.deleted { " (deleted)" } else { "" }
                )))
            }
            None => {
                return Err(CdrError::PreconditionFailed(format!(
                    "If-Match W/\"{expected}\" but {ty}/{id} does not exist"
                )))
            }
        }
    }
    let previous = match current {
        Some(c) if !c.deleted => w.store().version(ty, id, c.vid)?.and_then(|v| v.body),
        _ => None,
    };
    let previous: Option<Value> = match previous {
        Some(b) => Some(serde_json::from_slice(&b).map_err(|e| CdrError::Corrupt(e.to_string()))?),
        None => None,
    };
    let now = datetime::now_ms().max(current.map_or(0, |c| c.last_updated));
    let vid = current.map_or(1, |c| c.vid.saturating_add(1));
    let stored = prepare(body, ty, id, vid, now);
    if let (Some(prev), Some(cur)) = (&previous, current) {
        if same_content(prev, &stored) {
            return Ok(Written {
                status: 200,
                ty: ty.to_string(),
                id: id.to_string(),
                vid: cur.vid,
                last_updated: cur.last_updated,
                resource: previous.clone(),
                changed: false,
                message: None,
            });
        }
    }
    let stamp = Stamp {
        vid,
        method: Method::Put,
        last_updated: now,
    };
    w.stage(ty, id, stamp, Some(&stored), previous.as_ref())?;
    Ok(Written {
        status: if previous.is_some() { 200 } else { 201 },
        ty: ty.to_string(),
        id: id.to_string(),
        vid,
        last_updated: now,
        resource: Some(stored),
        changed: true,
        message: None,
    })
}

/// `PUT Type?criteria`: 0 matches create (with the body's id, if any), 1 updates it, more 412.
pub fn conditional_update(
    w: &mut Writer<'_>,
    ty: &str,
    criteria: &str,
    mut body: Value,
    if_match: Option<u64>,
    base: &str,
) -> Result<Written, CdrError> {
    let ids = plan::conditional_ids(w.store(), ty, criteria, base)?;
    let body_id = body.get("id").and_then(Value::as_str).map(str::to_string);
    match ids.as_slice() {
        [] => match body_id {
            Some(id) => {
                if w.store().current(ty, &id)?.is_some_and(|c| !c.deleted) {
                    return Err(CdrError::Conflict(format!(
                        "{ty}/{id} exists but does not match '{criteria}'"
                    )));
                }
                update(w, ty, &id, body, if_match, false, base)
            }
            None => create(w, ty, body, None, false, base),
        },
        [one] => {
            if let Some(bid) = &body_id {
                if bid != one {
                    return Err(CdrError::BadRequest(format!(
                        "the body's id '{bid}' differs from the matched {ty}/{one}"
                    )));
                }
            }
            if let Some(obj) = body.as_object_mut() {
                obj.insert("id".into(), Value::String(one.clone()));
            }
            update(w, ty, one, body, if_match, false, base)
        }
        _ => Err(CdrError::PreconditionFailed(format!(
            "conditional update '{ty}?{criteria}' matches {} resources",
            ids.len()
        ))),
    }
}

/// Deletes `ty/id`. Deleting what does not exist (or is already deleted) writes nothing and
/// succeeds, so a replayed delete is harmless.
pub fn delete(
    w: &mut Writer<'_>,
    ty: &str,
    id: &str,
    if_match: Option<u64>,
) -> Result<Written, CdrError> {
    let current = w.store().current(ty, id)?;
    let nothing = |vid: u64, last_updated: i64| Written {
        status: 200,
        ty: ty.to_string(),
        id: id.to_string(),
        vid,
        last_updated,
        resource: None,
        changed: false,
        message: Some(format!(
            "{ty}/{id} does not exist or is already deleted: nothing to delete"
        )),
    };
    let cur = match current {
        Some(c) if !c.deleted => c,
        Some(c) => return Ok(nothing(c.vid, c.last_updated)),
        None => return Ok(nothing(0, 0)),
    };
    if let Some(expected) = if_match {
        if expected != cur.vid {
            return Err(CdrError::PreconditionFailed(format!(
                "If-Match W/\"{expected}\" but {ty}/{id} is at version {}",
                cur.vid
            )));
        }
    }
    let previous = w
        .store()
        .version(ty, id, cur.vid)?
        .ok_or_else(|| CdrError::Corrupt(format!("{ty}/{id}: current version missing")))?
        .resource()?;
    let now = datetime::now_ms().max(cur.last_updated);
    let vid = cur.vid.saturating_add(1);
    w.stage(
        ty,
        id,
        Stamp {
            vid,
            method: Method::Delete,
            last_updated: now,
        },
        None,
        previous.as_ref(),
    )?;
    Ok(Written {
        status: 200,
        ty: ty.to_string(),
        id: id.to_string(),
        vid,
        last_updated: now,
        resource: None,
        changed: true,
        message: Some(format!("deleted {ty}/{id} (version {vid})")),
    })
}

/// `DELETE Type?criteria`: 0 matches is a no-op, 1 deletes it, more is a 412.
pub fn conditional_delete(
    w: &mut Writer<'_>,
    ty: &str,
    criteria: &str,
    base: &str,
) -> Result<Written, CdrError> {
    let ids = plan::conditional_ids(w.store(), ty, criteria, base)?;
    match ids.as_slice() {
        [] => Ok(Written {
            status: 200,
            ty: ty.to_string(),
            id: String::new(),
            vid: 0,
            last_updated: 0,
            resource: None,
            changed: false,
            message: Some(format!("no {ty} matches '{criteria}': nothing to delete")),
        }),
        [one] => delete(w, ty, one, None),
        _ => Err(CdrError::PreconditionFailed(format!(
            "conditional delete '{ty}?{criteria}' matches {} resources",
            ids.len()
        ))),
    }
}

/// Reads the current version: 404 if it never existed, 410 if deleted.
pub fn read(store: &Store, ty: &str, id: &str) -> Result<FhirResponse, CdrError> {
    match store.read(ty, id)? {
        None => Err(CdrError::NotFound(format!("{ty}/{id} is not known"))),
        Some((cur, None)) => Err(CdrError::Gone(format!(
            "{ty}/{id} was deleted (version {})",
            cur.vid
        ))),
        Some((cur, Some(resource))) => Ok(FhirResponse {
            status: 200,
            body: Some(resource),
            location: Some(format!("{ty}/{id}/_history/{}", cur.vid)),
            version: Some(cur.vid),
            last_modified: Some(cur.last_updated),
        }),
    }
}

/// Reads one version: 404 if there is no such version, 410 if it is a deletion.
pub fn vread(store: &Store, ty: &str, id: &str, vid: &str) -> Result<FhirResponse, CdrError> {
    let not_found = || CdrError::NotFound(format!("{ty}/{id} has no version '{vid}'"));
    let n: u64 = vid.parse().map_err(|_| not_found())?;
    let v = store.version(ty, id, n)?.ok_or_else(not_found)?;
    match v.resource()? {
        None => Err(CdrError::Gone(format!(
            "{ty}/{id} version {n} is a deletion"
        ))),
        Some(resource) => Ok(FhirResponse {
            status: 200,
            body: Some(resource),
            location: Some(format!("{ty}/{id}/_history/{n}")),
            version: Some(n),
            last_modified: Some(v.last_updated),
        }),
    }
}

/// The history Bundle of `ty/id`, newest first; `_count`, `_offset` and `_since` apply
/// (`_at` is refused).
pub fn history(
    store: &Store,
    ty: &str,
    id: &str,
    query: &[(String, String)],
    base: &str,
) -> Result<FhirResponse, CdrError> {
    let mut count = search::DEFAULT_COUNT;
    let mut offset = 0usize;
    let mut since = None;
    for (k, v) in query {
        let num = || {
            v.parse::<usize>()
                .map_err(|_| CdrError::BadRequest(format!("{k} must be a number")))
        };
        match k.as_str() {
            "_count" => count = num()?.clamp(1, search::MAX_COUNT),
            "_offset" => offset = num()?,
            "_since" => {
                since = Some(
                    datetime::parse(v, datetime::Kind::Instant)
                        .ok_or_else(|| {
                            CdrError::BadRequest(format!("_since '{v}' is not an instant"))
                        })?
                        .low,
                )
            }
            // Refused rather than ignored: ignoring it would answer versions the client
            // excluded.
            "_at" => return Err(CdrError::BadRequest("_at is not supported".into())),
            _ => {}
        }
    }
    let mut versions = store.history(ty, id)?;
    if versions.is_empty() {
        return Err(CdrError::NotFound(format!("{ty}/{id} is not known")));
    }
    if let Some(s) = since {
        versions.retain(|v| v.last_updated >= s);
    }
    let total = versions.len();
    let mut entries = Vec::new();
    for v in versions.iter().skip(offset).take(count) {
        let url = format!("{ty}/{id}");
        let status = match v.method {
            Method::Post => 201,
            _ if v.vid == 1 => 201,
            _ => 200,
        };
        let mut entry = json!({
            "fullUrl": format!("{base}/{url}"),
            "request": {"method": v.method.as_str(), "url": url},
            "response": {
                "status": outcome::status_line(status),
                "etag": super::request::etag(v.vid),
                "lastModified": datetime::format_instant(v.last_updated),
            }
        });
        if let Some(r) = v.resource()? {
            entry["resource"] = r;
        }
        entries.push(entry);
    }
    // Every other parameter (`_since`) is kept: following a link must not widen the history.
    let kept: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| k != "_count" && k != "_offset")
        .cloned()
        .collect();
    let page_url = |off: usize| {
        let mut pairs = kept.clone();
        pairs.push(("_count".into(), count.to_string()));
        pairs.push(("_offset".into(), off.to_string()));
        format!("{base}/{ty}/{id}/_history?{}", encode_query(&pairs))
    };
    let mut links = vec![json!({"relation": "self", "url": page_url(offset)})];
    if offset.saturating_add(count) < total {
        links.push(json!({"relation": "next", "url": page_url(offset.saturating_add(count))}));
    }
    if offset > 0 {
        links.push(json!({"relation": "previous", "url": page_url(offset.saturating_sub(count))}));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": new_id(),
        "meta": {"lastUpdated": datetime::format_instant(datetime::now_ms())},
        "type": "history",
        "total": total,
        "link": links,
    });
    // FHIR JSON has no empty arrays: a page past the end has no `entry` at all.
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    Ok(FhirResponse::body(200, bundle))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn prepare_puts_server_meta_first_and_keeps_tags() {
        let body = json!({"name": [{"family": "X"}], "meta": {"versionId": "9", "tag": [{"code": "t"}]},
            "resourceType": "Patient", "id": "old"});
        let p = prepare(body, "Patient", "p1", 3, 0);
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["resourceType", "id", "meta", "name"]);
        assert_eq!(p["meta"]["versionId"], "3");
        assert_eq!(p["meta"]["lastUpdated"], "1970-01-01T00:00:00.000Z");
        assert_eq!(p["meta"]["tag"][0]["code"], "t");
        let q = prepare(
            json!({"resourceType": "Patient", "name": [{"family": "X"}], "meta": {"tag": [{"code": "t"}]}}),
            "Patient",
            "p1",
            4,
            5,
        );
        assert!(same_content(&p, &q));
        let r = prepare(
            json!({"resourceType": "Patient", "name": [{"family": "Y"}]}),
            "Patient",
            "p1",
            4,
            5,
        );
        assert!(!same_content(&p, &r));
    }
}
