//! Evaluating a search over the indexes: the planner.
//!
//! The most selective condition is evaluated first from the index (an `_id`, a token or a
//! reference is usually a handful of ids), then intersected with the next ones; once the
//! candidates are few, the remaining conditions are checked on the resources themselves instead
//! of scanning more index ranges. Nothing scans every resource except a search without
//! conditions, `:missing=true` and `:not`, which need the set of all ids of the type.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::datetime::{self, Range};
use super::index;
use super::outcome::CdrError;
use super::params::{self, ParamDef, ParamType};
use super::request::parse_query;
use super::search::{approximate, date_matches, parse, Alt, Cond, Prefix, SearchQuery, SortKey};
use super::store::Store;

/// Below this many candidates, remaining conditions are checked on the resources.
const CHECK_IN_MEMORY_BELOW: usize = 64;

/// Evaluation of a query against the store.
struct Eval<'a> {
    store: &'a Store,
    ty: &'a str,
    now: i64,
    /// Resources loaded for in-memory checks.
    loaded: HashMap<String, Option<Value>>,
}

impl Eval<'_> {
    fn resource(&mut self, id: &str) -> Result<Option<&Value>, CdrError> {
        if !self.loaded.contains_key(id) {
            let r = self.store.read_live(self.ty, id)?.map(|(_, v)| v);
            self.loaded.insert(id.to_string(), r);
        }
        Ok(self.loaded.get(id).and_then(Option::as_ref))
    }

    fn cond_matches(&mut self, cond: &Cond, id: &str) -> Result<bool, CdrError> {
        let now = self.now;
        if let Cond::Ids(ids) = cond {
            return Ok(ids.iter().any(|i| i == id));
        }
        let Some(resource) = self.resource(id)? else {
            return Ok(false);
        };
        Ok(match cond {
            Cond::Ids(_) => false,
            Cond::Missing(def, missing) => params::extract(def, resource).is_empty() == *missing,
            Cond::Any { def, alts, negate } => {
                let values = params::extract(def, resource);
                let any = alts
                    .iter()
                    .any(|a| values.iter().any(|v| a.matches(v, now)));
                any != *negate
            }
        })
    }

    /// All ids satisfying `cond`, from the index.
    fn cond_ids(&mut self, cond: &Cond) -> Result<BTreeSet<String>, CdrError> {
        match cond {
            Cond::Ids(ids) => {
                let mut out = BTreeSet::new();
                for id in ids {
                    if let Some(cur) = self.store.current(self.ty, id)? {
                        if !cur.deleted {
                            out.insert(id.clone());
                        }
                    }
                }
                Ok(out)
            }
            Cond::Missing(def, missing) => {
                let has = self.has_param(def)?;
                if *missing {
                    let all = self.store.live_ids(self.ty)?;
                    Ok(all.difference(&has).cloned().collect())
                } else {
                    Ok(has)
                }
            }
            Cond::Any { def, alts, negate } => {
                let mut out = BTreeSet::new();
                for alt in alts {
                    let mut found = self.alt_ids(def, alt)?;
                    if alt.needs_check() || params::is_part_alias(self.ty, def) {
                        let mut kept = BTreeSet::new();
                        for id in found {
                            let ok = match self.resource(&id)? {
                                Some(r) => params::extract(def, r)
                                    .iter()
                                    .any(|v| alt.matches(v, self.now)),
                                None => false,
                            };
                            if ok {
                                kept.insert(id);
                            }
                        }
                        found = kept;
                    }
                    out.append(&mut found);
                }
                if *negate {
                    let all = self.store.live_ids(self.ty)?;
                    Ok(all.difference(&out).cloned().collect())
                } else {
                    Ok(out)
                }
            }
        }
    }

    /// Ids having at least one value of `def`.
    fn has_param(&mut self, def: &'static ParamDef) -> Result<BTreeSet<String>, CdrError> {
        let mut out = BTreeSet::new();
        if def.kind == ParamType::Date {
            let prefix = index::date_prefix(self.ty, def.name, b'L');
            for key in self.store.tree()?.scan_prefix(&prefix).keys() {
                let key = key?;
                if let Some(id) = key
                    .get(prefix.len() + 8..)
                    .and_then(|b| std::str::from_utf8(b).ok())
                {
                    out.insert(id.to_string());
                }
            }
            return Ok(out);
        }
        let (src, only) = source(self.ty, def);
        let prefix = index::param_prefix(self.ty, src.name);
        let start = prefix.len() + 1;
        let found = self.scan_ids(&prefix, |v| {
            only.is_none_or(|t| v.get(start..).is_some_and(|r| keyed_type(r) == Some(t)))
        })?;
        if !params::is_part_alias(self.ty, def) {
            return Ok(found);
        }
        // A name with no family has `name` keys but no `family`: checked on the resources.
        let mut kept = BTreeSet::new();
        for id in found {
            if self
                .resource(&id)?
                .is_some_and(|r| !params::extract(def, r).is_empty())
            {
                kept.insert(id);
            }
        }
        Ok(kept)
    }

    /// Ids of the `I` entries under `prefix` (whose value bytes, kind byte and all after the
    /// prefix, pass `keep`).
    fn scan_ids(
        &self,
        prefix: &[u8],
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<BTreeSet<String>, CdrError> {
        let mut out = BTreeSet::new();
        for key in self.store.tree()?.scan_prefix(prefix).keys() {
            let key = key?;
            let Some(pos) = key.iter().rposition(|&b| b == 0) else {
                continue;
            };
            if !keep(&key[..pos]) {
                continue;
            }
            if let Ok(id) = std::str::from_utf8(&key[pos + 1..]) {
                out.insert(id.to_string());
            }
        }
        Ok(out)
    }

    /// Candidate ids for one alternative, from the index (see [`index`] for the layout).
    fn alt_ids(&self, def: &'static ParamDef, alt: &Alt) -> Result<BTreeSet<String>, CdrError> {
        let (src, _) = source(self.ty, def);
        let base = index::param_prefix(self.ty, src.name);
        let with = |kind: u8, text: &str, terminated: bool| {
            let mut p = base.clone();
            p.extend_from_slice(&index::value_bytes(kind, text));
            if terminated {
                p.push(0);
            }
            p
        };
        let sep = index::SEP;
        match alt {
            Alt::Str {
                norm,
                exact: Some(_),
                ..
            } => {
                // Candidates equal once normalised; the exact text is checked on the resources.
                let cut = norm.len() >= index::MAX_VALUE;
                self.scan_ids(&with(b'n', &index::clean(norm), !cut), |_| true)
            }
            Alt::Str {
                norm,
                contains: true,
                ..
            } => {
                let prefix = with(b'n', "", false);
                let start = prefix.len();
                self.scan_ids(&prefix, |v| {
                    v.get(start..)
                        .and_then(|t| std::str::from_utf8(t).ok())
                        .is_some_and(|s| s.contains(norm.as_str()))
                })
            }
            Alt::Str { norm, .. } => {
                self.scan_ids(&with(b'n', &index::clean(norm), false), |_| true)
            }
            Alt::Token { system, code } => match (system.as_deref(), code.as_deref()) {
                (None, Some(c)) => self.scan_ids(
                    &with(b'c', &format!("{}{sep}", index::clean(c)), false),
                    |_| true,
                ),
                (Some(s), Some(c)) => {
                    let text = index::token_key((!s.is_empty()).then_some(s), c);
                    self.scan_ids(&with(b'c', &text, true), |_| true)
                }
                (Some(s), None) => {
                    // `system|`: every code of the parameter, filtered by system.
                    let prefix = with(b'c', "", false);
                    let start = prefix.len();
                    let system = index::clean(s);
                    self.scan_ids(&prefix, |v| {
                        v.get(start..)
                            .and_then(|t| std::str::from_utf8(t).ok())
                            .and_then(|t| t.rsplit_once(sep))
                            .is_some_and(|(_, sys)| sys == system)
                    })
                }
                (None, None) => Ok(BTreeSet::new()),
            },
            Alt::Ref {
                value,
                bare: true,
                base,
            } => {
                // `id 1F Type`, or `id 1F Type 1F base` under this request's base only.
                let prefix = with(b'r', &format!("{}{sep}", index::clean(value)), false);
                let start = prefix.len();
                let own = index::clean(base);
                self.scan_ids(&prefix, |v| {
                    let rest = v.get(start..).unwrap_or_default();
                    match rest.iter().position(|&b| b == sep as u8) {
                        None => true,
                        Some(i) => rest[i + 1..] == *own.as_bytes(),
                    }
                })
            }
            Alt::Ref {
                value,
                bare: false,
                base,
            } => {
                let lookup = |norm: &str| {
                    // Only a URL or a base is ever cut (ids and types are short).
                    let cut = params::split_absolute(norm)
                        .map_or(norm, |(b, _, _)| b)
                        .len()
                        >= index::MAX_VALUE;
                    self.scan_ids(&with(b'r', &index::reference_key(norm), !cut), |_| true)
                };
                let mut ids = lookup(value)?;
                // A relative reference is also written as an absolute one under this base.
                if params::reference_id(value).is_some() && !base.is_empty() {
                    ids.append(&mut lookup(&format!("{base}/{value}"))?);
                }
                Ok(ids)
            }
            Alt::Date { prefix, range } => self.date_ids(def, *prefix, *range),
        }
    }

    /// Scans the date index over the key ranges that can hold matches (by start, plus by end
    /// for wide values when the prefix is about ends) and keeps the ids whose (low, high)
    /// pass the prefix.
    fn date_ids(
        &self,
        def: &ParamDef,
        prefix: Prefix,
        s: Range,
    ) -> Result<BTreeSet<String>, CdrError> {
        let after = |x: i64| Some(x.saturating_add(1));
        // A narrow value starts less than NARROW before it ends.
        let narrow_from = |end: i64| Some(end.saturating_sub(index::NARROW));
        let scans: Vec<(u8, Option<i64>, Option<i64>)> = match prefix {
            Prefix::Eq => vec![(b'L', Some(s.low), after(s.high))],
            Prefix::Ne => vec![(b'L', None, None)],
            Prefix::Gt => vec![
                (b'L', narrow_from(s.high), None),
                (b'W', after(s.high), None),
            ],
            Prefix::Ge => vec![(b'L', narrow_from(s.low), None), (b'W', Some(s.low), None)],
            Prefix::Lt | Prefix::Eb => vec![(b'L', None, Some(s.low))],
            Prefix::Le => vec![(b'L', None, after(s.high))],
            Prefix::Sa => vec![(b'L', after(s.high), None)],
            Prefix::Ap => {
                let (_, high) = approximate(s, self.now);
                vec![(b'L', None, after(high))]
            }
        };
        let mut out = BTreeSet::new();
        for (bound, from, to) in scans {
            let prefix_key = index::date_prefix(self.ty, def.name, bound);
            let mut start = prefix_key.clone();
            if let Some(f) = from {
                start.extend_from_slice(&index::encode_i64(f));
            }
            let mut end = prefix_key.clone();
            match to {
                Some(t) => end.extend_from_slice(&index::encode_i64(t)),
                None => {
                    if let Some(last) = end.last_mut() {
                        *last += 1;
                    }
                }
            }
            let n = prefix_key.len();
            for item in self.store.tree()?.range(start..end) {
                let (k, v) = item?;
                let (Some(this), Some(other)) = (
                    k.get(n..n + 8).and_then(index::decode_i64),
                    index::decode_i64(&v),
                ) else {
                    continue;
                };
                let (low, high) = if bound == b'L' {
                    (this, other)
                } else {
                    (other, this)
                };
                if date_matches(prefix, s, Range { low, high }, self.now) {
                    if let Some(id) = k.get(n + 8..).and_then(|b| std::str::from_utf8(b).ok()) {
                        out.insert(id.to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The parameter whose index entries answer `def` ([`params::alias_of`]), and the reference
/// type they must have: `patient` is answered from `subject`, keeping references to Patients;
/// `family` from `name`, its candidates checked on the resources.
fn source(ty: &str, def: &'static ParamDef) -> (&'static ParamDef, Option<&'static str>) {
    match params::alias_of(ty, def) {
        Some(src) => (src, def.target),
        None => (def, None),
    }
}

/// The type in a keyed reference value (`id 1F Type`, or an absolute URL).
fn keyed_type(value: &[u8]) -> Option<&str> {
    let v = std::str::from_utf8(value).ok()?;
    match v.split_once(index::SEP) {
        Some((_, ty)) => Some(ty),
        None => params::reference_type(v),
    }
}

/// Roughly how many ids a condition yields (lower first).
fn cost(cond: &Cond) -> u8 {
    match cond {
        Cond::Ids(_) => 0,
        Cond::Missing(..) => 9,
        Cond::Any { negate: true, .. } => 9,
        Cond::Any { alts, .. } => alts
            .iter()
            .map(|a| match a {
                Alt::Token {
                    code: Some(_),
                    system: Some(_),
                } => 1,
                Alt::Ref { bare: false, .. } => 1,
                Alt::Token { code: Some(_), .. } | Alt::Ref { .. } => 2,
                Alt::Str { exact: Some(_), .. } => 2,
                Alt::Str { contains: true, .. } => 8,
                Alt::Str { .. } => 3,
                Alt::Token { .. } => 5,
                Alt::Date {
                    prefix: Prefix::Eq, ..
                } => 4,
                Alt::Date {
                    prefix: Prefix::Ne, ..
                } => 8,
                Alt::Date { .. } => 6,
            })
            .max()
            .unwrap_or(9),
    }
}

/// The ids matching `q`, sorted as asked (by id by default).
pub fn matching_ids(store: &Store, q: &SearchQuery) -> Result<Vec<String>, CdrError> {
    let mut eval = Eval {
        store,
        ty: &q.ty,
        now: datetime::now_ms(),
        loaded: HashMap::new(),
    };
    let mut order: Vec<&Cond> = q.conds.iter().collect();
    order.sort_by_key(|c| cost(c));
    let mut candidates: Option<BTreeSet<String>> = None;
    for cond in order {
        candidates = Some(match candidates {
            None => eval.cond_ids(cond)?,
            Some(set) if set.len() < CHECK_IN_MEMORY_BELOW => {
                let mut kept = BTreeSet::new();
                for id in set {
                    if eval.cond_matches(cond, &id)? {
                        kept.insert(id);
                    }
                }
                kept
            }
            Some(set) => {
                let found = eval.cond_ids(cond)?;
                set.intersection(&found).cloned().collect()
            }
        });
        if candidates.as_ref().is_some_and(BTreeSet::is_empty) {
            break;
        }
    }
    let ids = match candidates {
        Some(set) => set,
        None => store.live_ids(&q.ty)?,
    };
    let mut ids: Vec<String> = ids.into_iter().collect();
    if !q.sort.is_empty() {
        sort(store, q, &mut ids)?;
    }
    Ok(ids)
}

fn sort(store: &Store, q: &SearchQuery, ids: &mut [String]) -> Result<(), CdrError> {
    // One key vector per sort criterion: missing values sort last whatever the direction.
    let mut keys: Vec<HashMap<String, Vec<u8>>> = Vec::new();
    for (key, _) in &q.sort {
        let mut map = HashMap::new();
        match key {
            SortKey::Id => {
                for id in ids.iter() {
                    map.insert(id.clone(), id.as_bytes().to_vec());
                }
            }
            SortKey::LastUpdated => {
                for id in ids.iter() {
                    if let Some(cur) = store.current(&q.ty, id)? {
                        map.insert(id.clone(), index::encode_i64(cur.last_updated).to_vec());
                    }
                }
            }
            SortKey::Param(def) => {
                let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
                if def.kind == ParamType::Date {
                    let prefix = index::date_prefix(&q.ty, def.name, b'L');
                    for key in store.tree()?.scan_prefix(&prefix).keys() {
                        let key = key?;
                        let n = prefix.len();
                        if let Some(id) = key.get(n + 8..).and_then(|b| std::str::from_utf8(b).ok())
                        {
                            if wanted.contains(id) && !map.contains_key(id) {
                                map.insert(id.to_string(), key[n..n + 8].to_vec());
                            }
                        }
                    }
                } else if params::is_part_alias(&q.ty, def) {
                    // No keys of its own (`family` is in `name`'s): the lowest value, as the
                    // first key of a scan would be.
                    for id in ids.iter() {
                        if let Some((_, r)) = store.read_live(&q.ty, id)? {
                            let lowest = params::extract(def, &r)
                                .iter()
                                .filter_map(|v| match v {
                                    params::IndexValue::Str(s) => {
                                        Some(index::clean(&params::normalize_str(s)).into_bytes())
                                    }
                                    _ => None,
                                })
                                .min();
                            if let Some(key) = lowest {
                                map.insert(id.clone(), key);
                            }
                        }
                    }
                } else {
                    let kind = if def.kind == ParamType::String {
                        b'n'
                    } else {
                        b'c'
                    };
                    let mut prefix = index::param_prefix(&q.ty, def.name);
                    prefix.push(kind);
                    for key in store.tree()?.scan_prefix(&prefix).keys() {
                        let key = key?;
                        let Some(pos) = key.iter().rposition(|&b| b == 0) else {
                            continue;
                        };
                        if let Ok(id) = std::str::from_utf8(&key[pos + 1..]) {
                            if wanted.contains(id) && !map.contains_key(id) {
                                map.insert(id.to_string(), key[prefix.len()..pos].to_vec());
                            }
                        }
                    }
                }
            }
        }
        keys.push(map);
    }
    ids.sort_by(|a, b| {
        for ((_, desc), map) in q.sort.iter().zip(&keys) {
            let ord = match (map.get(a), map.get(b)) {
                (Some(x), Some(y)) if *desc => y.cmp(x),
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        a.cmp(b)
    });
    Ok(())
}

/// The ids matching conditional-operation criteria (`identifier=a|b&...`): strict, and at
/// least one real condition is required.
pub fn conditional_ids(
    store: &Store,
    ty: &str,
    criteria: &str,
    base: &str,
) -> Result<Vec<String>, CdrError> {
    let pairs = parse_query(criteria);
    let q = parse(ty, &pairs, true, base)?;
    if q.conds.is_empty() {
        return Err(CdrError::BadRequest(format!(
            "conditional criteria '{criteria}' contain no search parameter"
        )));
    }
    if !q.warnings.is_empty() {
        return Err(CdrError::BadRequest(q.warnings.join("; ")));
    }
    matching_ids(store, &q)
}
