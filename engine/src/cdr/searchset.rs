//! The searchset Bundle: one page of matches, `_include`/`_revinclude`d resources, the
//! paging links (`self`, `first`, `previous`, `next`, `last`, built from the parameters
//! actually used plus `_count`/`_offset`), and a warning entry for ignored parameters.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::datetime;
use super::index;
use super::outcome::{self, CdrError};
use super::params::{self, IndexValue};
use super::plan::matching_ids;
use super::request::{encode_query, strip_base};
use super::search::SearchQuery;
use super::store::Store;

/// At most this many resources are added by `_include`/`_revinclude` per page.
const MAX_INCLUDED: usize = 1000;

/// The searchset Bundle for `q`. `request_base` is the server base for fullUrls and links.
pub fn searchset(store: &Store, q: &SearchQuery, base: &str) -> Result<Value, CdrError> {
    let ids = matching_ids(store, q)?;
    let total = ids.len();
    let mut entries = Vec::new();
    let mut links = vec![link("self", base, q, q.offset)];
    if !q.summary_count {
        let page: Vec<&String> = ids.iter().skip(q.offset).take(q.count).collect();
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut page_resources = Vec::with_capacity(page.len());
        for id in page {
            if let Some((_, resource)) = store.read_live(&q.ty, id)? {
                seen.insert((q.ty.clone(), id.clone()));
                entries.push(json!({
                    "fullUrl": format!("{base}/{}/{id}", q.ty),
                    "resource": resource,
                    "search": {"mode": "match"}
                }));
                page_resources.push((id.clone(), resource));
            }
        }
        let mut included = 0;
        for (def, target) in &q.include {
            for (_, resource) in &page_resources {
                for value in params::extract(def, resource) {
                    let IndexValue::Ref(r) = value else { continue };
                    let r = strip_base(&r, base).to_string();
                    let (Some(rt), Some(rid)) =
                        (params::reference_type(&r), params::reference_id(&r))
                    else {
                        continue;
                    };
                    if target.as_deref().is_some_and(|t| t != rt) || included >= MAX_INCLUDED {
                        continue;
                    }
                    if seen.insert((rt.to_string(), rid.to_string())) {
                        if let Some((_, inc)) = store.read_live(rt, rid)? {
                            included += 1;
                            entries.push(include_entry(base, rt, rid, inc));
                        }
                    }
                }
            }
        }
        for (src, def) in &q.revinclude {
            // `Observation:patient` is answered from `subject`, for Patients only.
            if def.target.is_some_and(|t| t != q.ty) {
                continue;
            }
            let indexed = params::alias_of(src, def).unwrap_or(def);
            // Referred to relatively or by this base's absolute URL (see `index`).
            let prefixes = page_resources.iter().flat_map(|(id, _)| {
                [format!("{}/{id}", q.ty), format!("{base}/{}/{id}", q.ty)].map(|r| {
                    let mut prefix = index::param_prefix(src, indexed.name);
                    prefix.extend_from_slice(&index::value_bytes(b'r', &index::reference_key(&r)));
                    prefix.push(0);
                    prefix
                })
            });
            for prefix in prefixes {
                for key in store.tree()?.scan_prefix(&prefix).keys() {
                    let key = key?;
                    let Some(rid) = index::id_of_index_key(&key) else {
                        continue;
                    };
                    if included >= MAX_INCLUDED {
                        break;
                    }
                    if seen.insert((src.clone(), rid.to_string())) {
                        if let Some((_, inc)) = store.read_live(src, rid)? {
                            included += 1;
                            entries.push(include_entry(base, src, rid, inc));
                        }
                    }
                }
            }
        }
        if q.count > 0 {
            links.push(link("first", base, q, 0));
            if q.offset > 0 {
                links.push(link("previous", base, q, q.offset.saturating_sub(q.count)));
            }
            if q.offset.saturating_add(q.count) < total {
                links.push(link("next", base, q, q.offset.saturating_add(q.count)));
            }
            let last = if total == 0 {
                0
            } else {
                (total - 1) / q.count * q.count
            };
            links.push(link("last", base, q, last));
        }
    }
    if !q.warnings.is_empty() {
        entries.push(json!({
            "resource": outcome::message("warning", "not-supported", &q.warnings.join("; ")),
            "search": {"mode": "outcome"}
        }));
    }
    let mut bundle = json!({
        "resourceType": "Bundle",
        "id": super::store::new_id(),
        "meta": {"lastUpdated": datetime::format_instant(datetime::now_ms())},
        "type": "searchset",
        "total": total,
        "link": links,
    });
    if !entries.is_empty() {
        bundle["entry"] = Value::Array(entries);
    }
    Ok(bundle)
}

fn include_entry(base: &str, ty: &str, id: &str, resource: Value) -> Value {
    json!({
        "fullUrl": format!("{base}/{ty}/{id}"),
        "resource": resource,
        "search": {"mode": "include"}
    })
}

fn link(relation: &str, base: &str, q: &SearchQuery, offset: usize) -> Value {
    let mut pairs = q.used.clone();
    if q.summary_count {
        pairs.push(("_summary".into(), "count".into()));
    } else {
        pairs.push(("_count".into(), q.count.to_string()));
    }
    if offset > 0 {
        pairs.push(("_offset".into(), offset.to_string()));
    }
    json!({"relation": relation, "url": format!("{base}/{}?{}", q.ty, encode_query(&pairs))})
}
