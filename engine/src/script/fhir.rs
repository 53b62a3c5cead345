//! FHIR helpers for scripts: transaction bundles, conditional entries, references, ids.
//!
//! Resources are plain Rhai maps (`#{resourceType: "Patient", ...}`), so authors see FHIR JSON
//! as it is. The helpers cover what a mapping gets wrong by hand: the shape of a transaction
//! entry, conditional create (`ifNoneExist`) versus conditional update (`PUT Patient?identifier=`,
//! which is what makes an A08 update the Patient an A01 created), search-value escaping, and
//! `urn:uuid` full URLs that are deterministic (derived from the entry's conditional key, or
//! from the message and the entry's rank) so that a replayed message yields the same Bundle.

use std::cell::RefCell;
use std::rc::Rc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map};

use serde_json::value::RawValue;

use super::json::{raw_json, to_json, to_json_at, write_json_at, write_str};
use super::output::{check_entries, EntryCheck};

use super::state;
use super::util::{det_hash, det_id_of, hex, part_text, push_uuid, url_encode};

type Res<T> = Result<T, Box<EvalAltResult>>;

fn s(v: &str) -> Dynamic {
    Dynamic::from(ImmutableString::from(v))
}

/// The `resourceType` of a resource map.
fn resource_type(fn_name: &str, r: &Map) -> Res<String> {
    match r.get("resourceType").map(super::util::part_text) {
        Some(t) if !t.is_empty() => Ok(t),
        _ => Err(format!("{fn_name}: the resource has no resourceType").into()),
    }
}

fn text_field(r: &Map, key: &str) -> Option<String> {
    r.get(key)
        .map(super::util::part_text)
        .filter(|t| !t.trim().is_empty())
}

/// A transaction/batch entry as the helpers build it. Scripts get it as a map
/// (`update_entry(...)`); a [`Transaction`] turns it into JSON directly, converting only the
/// resource (the entry and request maps cost as much again to build, convert and drop).
struct Entry {
    full_url: String,
    resource: Map,
    method: &'static str,
    url: String,
    if_none_exist: Option<String>,
}

impl Entry {
    fn new(full_url: String, resource: Map, method: &'static str, url: String) -> Entry {
        Entry {
            full_url,
            resource,
            method,
            url,
            if_none_exist: None,
        }
    }

    /// `#{fullUrl, resource, request: #{method, url, ifNoneExist}}`.
    fn into_map(self) -> Map {
        let mut request = Map::new();
        request.insert("method".into(), s(self.method));
        request.insert("url".into(), s(&self.url));
        if let Some(c) = &self.if_none_exist {
            request.insert("ifNoneExist".into(), s(c));
        }
        let mut e = Map::new();
        e.insert("fullUrl".into(), s(&self.full_url));
        e.insert("resource".into(), Dynamic::from_map(self.resource));
        e.insert("request".into(), Dynamic::from_map(request));
        e
    }

    /// The entry's JSON as a tree, keys in the order [`Entry::write_json`] writes them.
    fn into_json(self) -> Result<serde_json::Value, String> {
        use serde_json::Value;
        let resource = to_json_at(&Dynamic::from_map(self.resource), ".resource")?;
        let mut request = serde_json::Map::with_capacity(3);
        request.insert("method".into(), Value::from(self.method));
        request.insert("url".into(), Value::from(self.url));
        if let Some(c) = self.if_none_exist {
            request.insert("ifNoneExist".into(), Value::from(c));
        }
        let mut e = serde_json::Map::with_capacity(3);
        e.insert("fullUrl".into(), Value::from(self.full_url));
        e.insert("request".into(), Value::Object(request));
        if let Some(r) = resource {
            e.insert("resource".into(), r);
        }
        Ok(Value::Object(e))
    }

    /// Writes the entry's JSON (`fullUrl`, `request`, then the pruned `resource`) into `out`;
    /// returns what the Bundle's check needs. On error, `out` is as it was.
    fn write_json(self, out: &mut Vec<u8>) -> Result<EntryCheck, String> {
        let start = out.len();
        out.extend_from_slice(b"{\"fullUrl\":");
        write_str(&self.full_url, out);
        out.extend_from_slice(b",\"request\":{\"method\":");
        write_str(self.method, out);
        out.extend_from_slice(b",\"url\":");
        write_str(&self.url, out);
        if let Some(c) = &self.if_none_exist {
            out.extend_from_slice(b",\"ifNoneExist\":");
            write_str(c, out);
        }
        out.extend_from_slice(b"}");
        let before_resource = out.len();
        out.extend_from_slice(b",\"resource\":");
        let at = out.len();
        match write_json_at(&Dynamic::from_map(self.resource), ".resource", out) {
            Ok(true) => {}
            Ok(false) => out.truncate(before_resource),
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        }
        // `resourceType` is written first when the resource kept one.
        let has_resource = out.len() > at && out[at..].starts_with(b"{\"resourceType\":");
        out.push(b'}');
        Ok(EntryCheck {
            method: self.method.to_owned(),
            url: self.url,
            has_resource,
        })
    }
}

/// `urn:uuid:` + a deterministic UUID of the parts.
pub fn urn_uuid_of(parts: &[Dynamic]) -> String {
    format!("urn:uuid:{}", det_id_of(parts))
}

fn urn_of(parts: &[&str]) -> String {
    let mut urn = String::with_capacity(45);
    urn.push_str("urn:uuid:");
    push_uuid(&mut urn, &det_hash(parts.iter().copied()));
    urn
}

/// `create_entry(resource)`: unconditional POST.
fn create_entry(resource: Map) -> Res<Entry> {
    let rt = resource_type("create_entry", &resource)?;
    let full_url = match text_field(&resource, "id") {
        Some(id) => urn_of(&[&rt, &id]),
        None => {
            let (seed, n) = state::next_sequence();
            urn_of(&["entry", &hex(&seed), &n.to_string(), &rt])
        }
    };
    Ok(Entry::new(full_url, resource, "POST", rt))
}

/// `create_entry(resource, "identifier=sys|val")`: POST with `ifNoneExist`.
fn create_entry_if_none(resource: Map, condition: &str) -> Res<Entry> {
    let rt = resource_type("create_entry", &resource)?;
    let cond = condition
        .strip_prefix(rt.as_str())
        .and_then(|c| c.strip_prefix('?'))
        .unwrap_or(condition);
    if cond.trim().is_empty() {
        return create_entry(resource);
    }
    let full_url = urn_of(&[&format!("{rt}?{cond}")]);
    let if_none_exist = Some(cond.to_owned());
    Ok(Entry {
        if_none_exist,
        ..Entry::new(full_url, resource, "POST", rt)
    })
}

/// `update_entry(resource, url)`: PUT to `Type?search` (conditional) or `Type/id`.
fn update_entry_at(mut resource: Map, url: &str) -> Res<Entry> {
    let rt = resource_type("update_entry", &resource)?;
    let url = url.trim();
    let typed = url
        .strip_prefix(rt.as_str())
        .is_some_and(|rest| rest.starts_with(['?', '/']));
    let url = if typed {
        url.to_owned()
    } else if !url.is_empty() && !url.contains('/') && !url.contains('?') && url.contains('=') {
        // "identifier=sys|val": the search part alone.
        format!("{rt}?{url}")
    } else {
        return Err(format!(
            "update_entry: url {url:?} must be {rt}?<search> (conditional update) or {rt}/<id>"
        )
        .into());
    };
    if let Some(id) = url
        .strip_prefix(rt.as_str())
        .and_then(|r| r.strip_prefix('/'))
    {
        if id.is_empty() || id.contains(['/', '?']) {
            return Err(format!("update_entry: bad url {url:?}").into());
        }
        if text_field(&resource, "id").is_none() {
            resource.insert("id".into(), s(id));
        }
    }
    let full_url = urn_of(&[&url]);
    Ok(Entry::new(full_url, resource, "PUT", url))
}

/// `update_entry(resource)`: PUT `Type/id`, the resource must have an id.
fn update_entry(resource: Map) -> Res<Entry> {
    let rt = resource_type("update_entry", &resource)?;
    let Some(id) = text_field(&resource, "id") else {
        return Err(
            "update_entry(resource) needs resource.id; for a conditional update pass the url: update_entry(r, \"Patient?identifier=...\")"
                .into(),
        );
    };
    update_entry_at(resource, &format!("{rt}/{id}"))
}

/// Escapes a FHIR search token part (`\`, `|`, `,`, `$`) and percent-encodes it.
pub fn search_escape(v: &str) -> String {
    let mut e = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            e.push('\\');
        }
        e.push(c);
    }
    url_encode(&e)
}

/// `Type?identifier=system|value`, escaped.
fn identifier_url(rt: &str, system: &str, value: &str) -> Res<String> {
    if value.trim().is_empty() {
        return Err(format!(
            "identifier_url({rt:?}, {system:?}, ...): the identifier has no value"
        )
        .into());
    }
    Ok(format!(
        "{rt}?identifier={}|{}",
        search_escape(system.trim()),
        search_escape(value.trim())
    ))
}

/// The reference to an entry (its fullUrl) or a resource (`Type/id`).
fn map_target(m: &Map) -> Res<String> {
    if let Some(u) = text_field(m, "fullUrl") {
        Ok(u)
    } else if let (Some(rt), Some(id)) = (text_field(m, "resourceType"), text_field(m, "id")) {
        Ok(format!("{rt}/{id}"))
    } else {
        Err("reference(): the map is neither an entry (fullUrl) nor a resource with an id".into())
    }
}

fn reference_to_map(m: &Map) -> Res<Map> {
    let url = map_target(m)?;
    let mut r = Map::new();
    r.insert("reference".into(), s(&url));
    Ok(r)
}

/// `reference(entry_or_resource_or_url)`.
fn reference(target: Dynamic) -> Res<Map> {
    let url = if let Ok(u) = target.as_immutable_string_ref() {
        u.to_string()
    } else if let Ok(m) = target.as_map_ref() {
        map_target(&m)?
    } else {
        return Err(format!(
            "reference(): expected an entry, a resource or a URL, got {}",
            target.type_name()
        )
        .into());
    };
    if url.trim().is_empty() {
        return Err("reference(): empty reference".into());
    }
    let mut r = Map::new();
    r.insert("reference".into(), s(&url));
    Ok(r)
}

fn bundle(kind: &str, entries: Array) -> Map {
    let mut b = Map::new();
    b.insert("resourceType".into(), s("Bundle"));
    b.insert("type".into(), s(kind));
    b.insert("entry".into(), Dynamic::from_array(entries));
    b
}

/// A transaction (or batch) being built: `let tx = transaction(); tx.update(r, url); tx`.
///
/// The fast way to build a Bundle. Each entry is converted to JSON when it is added, so the
/// script never copies resources around (Rhai copies a map whenever a variable holding it is
/// passed or returned, and re-measures maps and arrays after every call), and a resource that
/// cannot be converted fails at the line that added it. A `Transaction` is a handle: copies of
/// it share the same entries.
#[derive(Clone)]
pub struct Transaction {
    inner: Rc<RefCell<TxInner>>,
}

struct TxInner {
    kind: &'static str,
    /// The entries' JSON text, comma-separated: written once, when added (unless `tree`).
    entries: Vec<u8>,
    /// The entries as trees instead, when the run's output is delivered (a destination takes
    /// the tree: building it and then writing it once costs less than parsing the text).
    tree: Option<Vec<serde_json::Value>>,
    /// What the Bundle's check needs of each entry, in order.
    checks: Vec<EntryCheck>,
    /// Bytes of JSON the entries take, against the run's limit.
    budget: Budget,
}

/// Bytes of JSON a transaction holds (measured on the trees when they are kept as trees), and
/// [`super::ScriptLimits::max_output_bytes`] of the run that made it (0: none).
struct Budget {
    used: usize,
    max: usize,
}

impl Budget {
    /// Takes `bytes` more; an error naming the limit, and nothing taken, past it.
    fn take(&mut self, bytes: usize) -> Res<()> {
        let used = self.used + bytes;
        if self.max > 0 && used > self.max {
            return Err(format!(
                "the transaction holds more than {} bytes of JSON (max_output_bytes)",
                self.max
            )
            .into());
        }
        self.used = used;
        Ok(())
    }
}

/// About how many bytes `value` takes as JSON, without writing it: string lengths plus a few
/// bytes a node. Close enough to bound memory, and a walk costs far less than writing.
fn json_size(value: &serde_json::Value) -> usize {
    use serde_json::Value;
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(map) => {
            2 + map
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size(v))
                .sum::<usize>()
        }
    }
}

impl TxInner {
    /// Adds an entry's JSON as the run keeps them: as a tree (measured by a walk) or as text
    /// (measured as written); taken from the budget and noted for the Bundle's check. Past
    /// the budget, nothing is added.
    fn push_value(&mut self, value: serde_json::Value) -> Res<()> {
        let check = EntryCheck::of(&value);
        if let Some(tree) = &mut self.tree {
            self.budget.take(json_size(&value))?;
            tree.push(value);
        } else {
            let start = self.begin_text_entry();
            serde_json::to_writer(&mut self.entries, &value).expect("writing to a Vec cannot fail");
            self.take_text_since(start)?;
        }
        self.checks.push(check);
        Ok(())
    }

    /// Takes the text written since `start` from the budget; past it, the text is removed.
    fn take_text_since(&mut self, start: usize) -> Res<()> {
        let taken = self.budget.take(self.entries.len() - start);
        if taken.is_err() {
            self.entries.truncate(start);
        }
        taken
    }

    /// Where the next entry's text starts, after the comma that separates it from the last.
    fn begin_text_entry(&mut self) -> usize {
        let start = self.entries.len();
        if !self.checks.is_empty() {
            self.entries.push(b',');
        }
        start
    }
}

impl Transaction {
    fn new(kind: &'static str) -> Self {
        Transaction {
            inner: Rc::new(RefCell::new(TxInner {
                kind,
                entries: Vec::new(),
                tree: super::state::output_tree().then(Vec::new),
                checks: Vec::new(),
                budget: Budget {
                    used: 0,
                    max: super::state::max_output_bytes(),
                },
            })),
        }
    }

    /// Adds an entry a helper built; returns its fullUrl.
    fn add_entry(&self, entry: Entry) -> Res<ImmutableString> {
        let url = ImmutableString::from(entry.full_url.as_str());
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        if inner.tree.is_some() {
            let value = entry
                .into_json()
                .map_err(|e| format!("cannot add the entry: {e}"))?;
            inner.push_value(value)?;
            return Ok(url);
        }
        let start = inner.begin_text_entry();
        match entry.write_json(&mut inner.entries) {
            Ok(check) => {
                inner.take_text_since(start)?;
                inner.checks.push(check);
            }
            Err(e) => {
                inner.entries.truncate(start);
                return Err(format!("cannot add the entry: {e}").into());
            }
        }
        Ok(url)
    }

    /// Adds an entry map; returns its fullUrl.
    fn add(&self, entry: Map) -> Res<ImmutableString> {
        let url = entry
            .get("fullUrl")
            .map(super::util::part_text)
            .unwrap_or_default();
        let value = match to_json(&Dynamic::from_map(entry)) {
            Ok(Some(v)) => v,
            Ok(None) => return Err("the entry is empty".into()),
            Err(e) => return Err(format!("cannot add the entry: {e}").into()),
        };
        self.inner.borrow_mut().push_value(value)?;
        Ok(url.into())
    }

    /// The Bundle (`resourceType`, `type`, `entry`) as JSON text, its entries checked, and as
    /// a tree when the entries were kept as trees (moved out, not copied, when this is the
    /// last handle).
    pub fn into_bundle_json(self) -> Result<(Box<RawValue>, Option<serde_json::Value>), String> {
        let tree = match Rc::try_unwrap(self.inner) {
            Ok(cell) => {
                let mut inner = cell.into_inner();
                let tree = inner.tree.take();
                return Self::bundle_of(&inner, tree);
            }
            Err(shared) => shared,
        };
        let inner = tree.borrow();
        Self::bundle_of(&inner, inner.tree.clone())
    }

    fn bundle_of(
        inner: &TxInner,
        tree: Option<Vec<serde_json::Value>>,
    ) -> Result<(Box<RawValue>, Option<serde_json::Value>), String> {
        check_entries(inner.kind, &inner.checks)?;
        if let Some(entries) = tree {
            let mut b = serde_json::Map::with_capacity(3);
            b.insert("resourceType".into(), "Bundle".into());
            b.insert("type".into(), inner.kind.into());
            b.insert("entry".into(), serde_json::Value::Array(entries));
            let bundle = serde_json::Value::Object(b);
            let text = serde_json::value::to_raw_value(&bundle).expect("a JSON value serializes");
            return Ok((text, Some(bundle)));
        }
        let mut out = Vec::with_capacity(inner.entries.len() + 64);
        out.extend_from_slice(b"{\"resourceType\":\"Bundle\",\"type\":");
        write_str(inner.kind, &mut out);
        out.extend_from_slice(b",\"entry\":[");
        out.extend_from_slice(&inner.entries);
        out.extend_from_slice(b"]}");
        // Every piece came from `&str`s and `write_str`: UTF-8 by construction.
        let text = String::from_utf8(out).map_err(|e| format!("the Bundle is not UTF-8: {e}"))?;
        Ok((raw_json(text), None))
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.inner.borrow().checks.len()
    }

    /// Whether nothing was added to it.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Registers the FHIR helpers.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Transaction>("Transaction");
    engine.register_fn("transaction", || Transaction::new("transaction"));
    engine.register_fn("batch", || Transaction::new("batch"));
    engine.register_fn("create", |t: &mut Transaction, r: Map| {
        t.add_entry(create_entry(r)?)
    });
    engine.register_fn("create", |t: &mut Transaction, r: Map, c: &str| {
        t.add_entry(create_entry_if_none(r, c)?)
    });
    engine.register_fn("update", |t: &mut Transaction, r: Map| {
        t.add_entry(update_entry(r)?)
    });
    engine.register_fn("update", |t: &mut Transaction, r: Map, url: &str| {
        t.add_entry(update_entry_at(r, url)?)
    });
    engine.register_fn("add", |t: &mut Transaction, e: Map| t.add(e));
    engine.register_get("len", |t: &mut Transaction| t.len() as rhai::INT);
    engine.register_fn("to_debug", |t: &mut Transaction| {
        format!("Transaction({} entries)", t.len())
    });

    // The entries are moved into the Bundle (the variable is left empty): copying a whole
    // Bundle's worth of resources costs more than the rest of a typical mapping.
    engine.register_fn("bundle_transaction", |e: &mut Array| {
        bundle("transaction", std::mem::take(e))
    });
    engine.register_fn("bundle_batch", |e: &mut Array| {
        bundle("batch", std::mem::take(e))
    });
    engine.register_fn("create_entry", |r: Map| {
        create_entry(r).map(Entry::into_map)
    });
    engine.register_fn("create_entry", |r: Map, c: &str| {
        create_entry_if_none(r, c).map(Entry::into_map)
    });
    engine.register_fn("update_entry", |r: Map| {
        update_entry(r).map(Entry::into_map)
    });
    engine.register_fn("update_entry", |r: Map, url: &str| {
        update_entry_at(r, url).map(Entry::into_map)
    });
    engine.register_fn("identifier_url", |rt: &str, sys: Dynamic, val: Dynamic| {
        identifier_url(rt, &part_text(&sys), &part_text(&val))
    });
    engine.register_fn("search_escape", |v: &str| search_escape(v));
    // By reference for maps: an entry variable is read, not copied.
    engine.register_fn("reference", |m: &mut Map| reference_to_map(m));
    engine.register_fn("reference", reference);
    engine.register_fn("reference", |m: &mut Map, display: &str| {
        let mut r = reference_to_map(m)?;
        if !display.trim().is_empty() {
            r.insert("display".into(), s(display));
        }
        Ok::<_, Box<EvalAltResult>>(r)
    });
    engine.register_fn("reference", |t: Dynamic, display: &str| {
        let mut r = reference(t)?;
        if !display.trim().is_empty() {
            r.insert("display".into(), s(display));
        }
        Ok::<_, Box<EvalAltResult>>(r)
    });

    super::util::register_variadic(engine, "urn_uuid", urn_uuid_of);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_values_are_escaped() {
        assert_eq!(search_escape("urn:oid:1.2"), "urn:oid:1.2");
        assert_eq!(search_escape("a|b,c"), "a%5C%7Cb%5C%2Cc");
        assert_eq!(
            identifier_url("Patient", "urn:id:GENHOSP", "MRN 1").unwrap(),
            "Patient?identifier=urn:id:GENHOSP|MRN%201"
        );
        assert!(identifier_url("Patient", "x", " ").is_err());
    }
}
