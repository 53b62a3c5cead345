//! Code lookup tables shipped beside a script (`lookup("gender.csv", code)`).
//!
//! Mappings translate local codes through small tables the channel owns; reading a file per
//! message would be slow and would give scripts a way to read files. So a table is named
//! relative to the script's directory (no absolute paths, no `..`), must be `.csv` or `.json`
//! and at most 8 MiB, and is loaded once per [`super::ScriptHost`] and cached. An edited table
//! is picked up by the next lookup after [`RECHECK`]: each host checks the file's size and
//! modification time at most that often (a `stat`, not a read), so every worker thread, and
//! `orbiter try`, see the same table within a second of the edit. A missing key gives `()`; a
//! missing or malformed table is a runtime error naming the file and line (a table that goes
//! bad after loading keeps failing until it is fixed: lookups never silently use stale data
//! the author has replaced).
//!
//! CSV: two columns, `key,value`; a first row that reads `key,value` is a header; quoted cells
//! (`"a,b"`, `""` for a quote) are understood; blank lines are skipped; a duplicate key is an
//! error. JSON: one object whose members are the keys; values may be any JSON (a map gives a
//! Rhai map).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString};

use super::json::from_json;
use super::state;
use super::util::part_text;

/// Tables larger than this are refused.
const MAX_TABLE_BYTES: u64 = 8 << 20;

/// How often a cached table's file is checked for an edit.
pub const RECHECK: Duration = Duration::from_secs(1);

type Table = HashMap<String, Dynamic>;

/// What identifies the content a table was loaded from: its size and modification time.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
        }
    }
}

struct Cached {
    table: Rc<Table>,
    stamp: Stamp,
    checked: Instant,
}

/// The tables a host has loaded, by full path.
#[derive(Default)]
pub struct Tables {
    cache: RefCell<HashMap<PathBuf, Cached>>,
}

impl Tables {
    /// An empty cache.
    pub fn new() -> Self {
        Tables::default()
    }

    /// The table `name` beside the running script, loaded on first use.
    fn get(&self, dir: &Path, name: &str) -> Result<Rc<Table>, String> {
        let rel = checked_name(name)?;
        let path = dir.join(rel);
        let now = Instant::now();
        if let Some(c) = self.cache.borrow_mut().get_mut(&path) {
            if now.duration_since(c.checked) < RECHECK {
                return Ok(c.table.clone());
            }
            let meta = std::fs::metadata(&path)
                .map_err(|e| format!("lookup table {}: {e}", path.display()))?;
            if Stamp::of(&meta) == c.stamp {
                c.checked = now;
                return Ok(c.table.clone());
            }
        }
        let (table, stamp) = load(&path)?;
        let table = Rc::new(table);
        self.cache.borrow_mut().insert(
            path,
            Cached {
                table: table.clone(),
                stamp,
                checked: now,
            },
        );
        Ok(table)
    }
}

fn checked_name(name: &str) -> Result<&Path, String> {
    let p = Path::new(name);
    let plain = !name.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !name.contains('\\');
    if !plain {
        return Err(format!(
            "lookup table {name:?}: name a file beside the script (no absolute path, no ..)"
        ));
    }
    let ext = p
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") | Some("json") => Ok(p),
        _ => Err(format!(
            "lookup table {name:?}: must be a .csv or .json file"
        )),
    }
}

/// Reads and parses a table, with the stamp of the file it read (taken before the read: an edit
/// during the read is seen at the next check).
fn load(path: &Path) -> Result<(Table, Stamp), String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("lookup table {shown}: {e}"))?;
    let stamp = Stamp::of(&meta);
    if meta.len() > MAX_TABLE_BYTES {
        return Err(format!(
            "lookup table {shown}: {} bytes, more than the {MAX_TABLE_BYTES} allowed",
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("lookup table {shown}: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let table = if is_json {
        parse_json(text).map_err(|e| format!("lookup table {shown}: {e}"))
    } else {
        parse_csv(text).map_err(|e| format!("lookup table {shown}:{e}"))
    }?;
    Ok((table, stamp))
}

fn parse_json(text: &str) -> Result<Table, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(o) = v else {
        return Err("expected one JSON object whose members are the keys".into());
    };
    Ok(o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
}

/// Splits CSV text into rows of cells (RFC 4180 quoting), with each row's 1-based line.
fn csv_rows(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut line = 1;
    let mut row_line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cell.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    cell.push(c);
                }
                _ => cell.push(c),
            }
            continue;
        }
        match c {
            '"' if cell.trim().is_empty() => {
                cell.clear();
                quoted = true;
            }
            ',' => row.push(std::mem::take(&mut cell)),
            '\r' => {}
            '\n' => {
                row.push(std::mem::take(&mut cell));
                rows.push((row_line, std::mem::take(&mut row)));
                line += 1;
                row_line = line;
            }
            _ => cell.push(c),
        }
    }
    if quoted {
        return Err(format!("{row_line}: unterminated quoted cell"));
    }
    if !cell.is_empty() || !row.is_empty() {
        row.push(cell);
        rows.push((row_line, row));
    }
    Ok(rows)
}

fn parse_csv(text: &str) -> Result<Table, String> {
    let mut table = Table::new();
    for (i, (line, row)) in csv_rows(text)?.into_iter().enumerate() {
        if row.iter().all(|c| c.trim().is_empty()) {
            continue;
        }
        let cells: Vec<&str> = row.iter().map(|c| c.trim()).collect();
        if i == 0
            && cells.len() == 2
            && cells[0].eq_ignore_ascii_case("key")
            && cells[1].eq_ignore_ascii_case("value")
        {
            continue;
        }
        if cells.len() != 2 {
            return Err(format!(
                "{line}: expected 2 columns (key,value), found {}",
                cells.len()
            ));
        }
        let value = Dynamic::from(ImmutableString::from(cells[1]));
        if table.insert(cells[0].to_owned(), value).is_some() {
            return Err(format!("{line}: duplicate key {:?}", cells[0]));
        }
    }
    Ok(table)
}

fn lookup(tables: &Tables, name: &str, key: &Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
    let table = tables.get(&state::script_dir(), name)?;
    Ok(table.get(&part_text(key)).cloned().unwrap_or(Dynamic::UNIT))
}

/// Registers `lookup(table, key)` and `lookup(table, key, default)`.
pub fn register(engine: &mut Engine, tables: Rc<Tables>) {
    let t = tables.clone();
    engine.register_fn("lookup", move |name: &str, key: Dynamic| {
        lookup(&t, name, &key)
    });
    engine.register_fn(
        "lookup",
        move |name: &str, key: Dynamic, default: Dynamic| {
            let v = lookup(&tables, name, &key)?;
            Ok::<_, Box<EvalAltResult>>(if v.is_unit() { default } else { v })
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_parsing() {
        let t = parse_csv("key,value\r\nM,male\n\"F\",\"fe\"\"male, really\"\n\nU , unknown\n")
            .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t["M"].to_string(), "male");
        assert_eq!(t["F"].to_string(), "fe\"male, really");
        assert_eq!(t["U"].to_string(), "unknown");
        let t = parse_csv("A,1\nB,2").unwrap();
        assert_eq!(t["B"].to_string(), "2");
        assert_eq!(parse_csv("A,1\nA,2").unwrap_err(), "2: duplicate key \"A\"");
        assert_eq!(
            parse_csv("A,1\nB\n").unwrap_err(),
            "2: expected 2 columns (key,value), found 1"
        );
        assert!(parse_csv("A,\"1\n").is_err());
    }

    #[test]
    fn an_edited_table_is_read_again_after_the_recheck_interval() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sex.csv");
        std::fs::write(&file, "M,male-v1\n").unwrap();
        let tables = Tables::new();
        let value = |tables: &Tables| tables.get(dir.path(), "sex.csv").unwrap()["M"].to_string();
        assert_eq!(value(&tables), "male-v1");
        // A different size, so the edit shows even where mtime has a coarse granularity.
        std::fs::write(&file, "M,male-v2 edited\n").unwrap();
        assert_eq!(
            value(&tables),
            "male-v1",
            "within RECHECK: the cached table"
        );
        for c in tables.cache.borrow_mut().values_mut() {
            c.checked -= RECHECK;
        }
        assert_eq!(value(&tables), "male-v2 edited");
        // A table that goes bad is an error, not the old content.
        std::fs::write(&file, "M,1\nM,2\n").unwrap();
        for c in tables.cache.borrow_mut().values_mut() {
            c.checked -= RECHECK;
        }
        let err = tables.get(dir.path(), "sex.csv").unwrap_err();
        assert!(err.contains("duplicate key"), "{err}");
    }

    #[test]
    fn names_are_confined() {
        assert!(checked_name("codes.csv").is_ok());
        assert!(checked_name("tables/codes.JSON").is_ok());
        for bad in [
            "../x.csv",
            "/etc/passwd.csv",
            "a/../../b.csv",
            "x.txt",
            "",
            "a\\b.csv",
        ] {
            assert!(checked_name(bad).is_err(), "{bad}");
        }
    }
}
