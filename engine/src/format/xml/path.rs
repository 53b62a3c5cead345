//! Path queries on an [`XmlDoc`]: a small XPath subset, parsed on each call (paths are short
//! and scripts call them a handful of times per element), bounded in length and nesting.
//!
//! `a/b/c` steps by name (`*` any, `.` self, `..` parent), predicates `[@attr='v']`, `[@attr]`,
//! `[child/path='text']`, `[child/@a='v']`, `[child[@a='v']]`, `[n]` (1-based, per parent), and
//! a final `@attr` step for [`XmlDoc::value`].

use super::XmlDoc;

/// One parsed step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// An element name, `*` for any.
    Child(String, Vec<Predicate>),
    SelfNode(Vec<Predicate>),
    Parent,
    /// A final `@name`.
    Attr(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Predicate {
    /// `[n]`, 1-based among the step's matches under one parent.
    Index(usize),
    /// `[path]` exists, or `[path='value']` has that value (text, or attribute for `@a`).
    Path(Vec<Step>, Option<String>),
}

/// A path that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path {path:?}: {message}")]
pub struct PathError {
    pub path: String,
    pub message: String,
}

/// Splits on `sep` outside quotes and brackets.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut from) = (0i32, None::<char>, 0);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                parts.push(&s[from..i]);
                from = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[from..]);
    parts
}

/// Paths longer than this, or with predicates nested deeper, are refused (a script could
/// otherwise build a path that recurses the parser off its stack).
const MAX_PATH_BYTES: usize = 4096;
const MAX_PREDICATE_DEPTH: usize = 8;

fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("longer than {MAX_PATH_BYTES} bytes"));
    }
    parse_steps(path, 0)
}

fn parse_steps(path: &str, depth: usize) -> Result<Vec<Step>, String> {
    if depth > MAX_PREDICATE_DEPTH {
        return Err(format!(
            "predicates nested deeper than {MAX_PREDICATE_DEPTH}"
        ));
    }
    let path = path.trim();
    if path.is_empty() {
        return Err("empty path".into());
    }
    let parts = split_top(path, '/');
    let mut steps = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let part = part.trim();
        if part.is_empty() {
            return Err("empty step (`//` is not supported: use descendants(name))".into());
        }
        if let Some(attr) = part.strip_prefix('@') {
            if i + 1 != parts.len() {
                return Err(format!("@{attr} must be the last step"));
            }
            steps.push(Step::Attr(attr.to_owned()));
            continue;
        }
        let (name, preds) = match part.find('[') {
            Some(at) => (&part[..at], parse_predicates(&part[at..], depth)?),
            None => (part, Vec::new()),
        };
        steps.push(match name {
            "." => Step::SelfNode(preds),
            ".." if preds.is_empty() => Step::Parent,
            ".." => return Err("`..` takes no predicate".into()),
            "" => return Err(format!("step {part:?} has no name")),
            n => Step::Child(n.to_owned(), preds),
        });
    }
    Ok(steps)
}

fn parse_predicates(mut s: &str, depth: usize) -> Result<Vec<Predicate>, String> {
    let mut preds = Vec::new();
    while !s.is_empty() {
        let Some(body_and_rest) = s.strip_prefix('[') else {
            return Err(format!("expected `[` at {s:?}"));
        };
        // Find the matching `]` outside quotes (predicates may nest: `a[b[@c='1']]`).
        let mut quote = None;
        let mut end = None;
        let mut nested = 0usize;
        for (i, c) in body_and_rest.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '\'' | '"') => quote = Some(c),
                (None, '[') => nested += 1,
                (None, ']') if nested > 0 => nested -= 1,
                (None, ']') => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let Some(end) = end else {
            return Err("unclosed `[`".into());
        };
        let body = body_and_rest[..end].trim();
        s = &body_and_rest[end + 1..];
        if let Ok(n) = body.parse::<usize>() {
            if n == 0 {
                return Err("positions start at 1".into());
            }
            preds.push(Predicate::Index(n));
            continue;
        }
        let sides = split_top(body, '=');
        let pred = match sides.as_slice() {
            [p] => Predicate::Path(parse_steps(p, depth + 1)?, None),
            [p, v] => {
                let v = v.trim();
                let unquoted = v
                    .strip_prefix('\'')
                    .and_then(|v| v.strip_suffix('\''))
                    .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                    .ok_or_else(|| format!("the value in [{body}] must be quoted"))?;
                Predicate::Path(parse_steps(p, depth + 1)?, Some(unquoted.to_owned()))
            }
            _ => return Err(format!("cannot read predicate [{body}]")),
        };
        preds.push(pred);
    }
    Ok(preds)
}

impl XmlDoc {
    /// Elements a path selects from `at`, in document order. A final `@attr` step selects the
    /// elements that have that attribute.
    pub fn select(&self, at: u32, path: &str) -> Result<Vec<u32>, PathError> {
        let steps = parse_path(path).map_err(|message| PathError {
            path: path.to_owned(),
            message,
        })?;
        Ok(self.eval(at, &steps).0)
    }

    /// The value at a path: the attribute for a final `@attr` step, else the first selected
    /// element's own text (trimmed). `None` when nothing matches.
    pub fn value(&self, at: u32, path: &str) -> Result<Option<String>, PathError> {
        let steps = parse_path(path).map_err(|message| PathError {
            path: path.to_owned(),
            message,
        })?;
        let (nodes, attr) = self.eval(at, &steps);
        Ok(nodes.first().map(|n| match &attr {
            Some(a) => self.attr(*n, a).unwrap_or_default().to_owned(),
            None => self.text(*n).to_owned(),
        }))
    }

    /// Evaluates steps; returns the elements and the final attribute name, if any.
    fn eval(&self, at: u32, steps: &[Step]) -> (Vec<u32>, Option<String>) {
        let mut current = vec![at];
        for step in steps {
            let mut next = Vec::new();
            match step {
                Step::Attr(a) => {
                    current.retain(|n| self.attr(*n, a).is_some());
                    return (current, Some(a.clone()));
                }
                Step::Parent => {
                    for n in &current {
                        if let Some(p) = self.element(*n).parent {
                            if !next.contains(&p) {
                                next.push(p);
                            }
                        }
                    }
                }
                Step::SelfNode(preds) => {
                    next = self.filter(current.clone(), preds);
                }
                Step::Child(name, preds) => {
                    for n in &current {
                        let matches: Vec<u32> = self
                            .element(*n)
                            .children
                            .iter()
                            .copied()
                            .filter(|c| name == "*" || self.element(*c).name == *name)
                            .collect();
                        next.extend(self.filter(matches, preds));
                    }
                }
            }
            current = next;
            if current.is_empty() {
                break;
            }
        }
        (current, None)
    }

    fn filter(&self, mut nodes: Vec<u32>, preds: &[Predicate]) -> Vec<u32> {
        for p in preds {
            nodes = match p {
                Predicate::Index(n) => nodes.get(n - 1).copied().into_iter().collect(),
                Predicate::Path(steps, want) => nodes
                    .into_iter()
                    .filter(|n| {
                        let (found, attr) = self.eval(*n, steps);
                        match want {
                            None => !found.is_empty(),
                            Some(v) => found.iter().any(|f| match &attr {
                                Some(a) => self.attr(*f, a) == Some(v.as_str()),
                                None => self.text(*f) == v,
                            }),
                        }
                    })
                    .collect(),
            };
        }
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::super::{parse, XmlLimits};
    use super::*;

    fn doc(s: &str) -> XmlDoc {
        parse(s.as_bytes(), &XmlLimits::default()).unwrap()
    }

    #[test]
    fn paths_with_predicates() {
        let d = doc(r#"<r>
  <s><t root="1"/><x>one</x></s>
  <s><t root="2"/><t root="3"/><x>two</x></s>
  <s><x>three</x></s>
</r>"#);
        assert_eq!(d.select(0, "s").unwrap().len(), 3);
        assert_eq!(
            d.value(0, "s[t/@root='3']/x").unwrap().as_deref(),
            Some("two")
        );
        assert_eq!(
            d.value(0, "s[x='three']/x").unwrap().as_deref(),
            Some("three")
        );
        assert_eq!(d.value(0, "s[2]/x").unwrap().as_deref(), Some("two"));
        assert_eq!(d.select(0, "s[t]").unwrap().len(), 2);
        assert_eq!(d.select(0, "s/t[@root='2']").unwrap().len(), 1);
        assert_eq!(d.select(0, "*/t/@root").unwrap().len(), 3);
        assert_eq!(d.value(0, "s/t/@root").unwrap().as_deref(), Some("1"));
        assert_eq!(d.value(0, "s/nothing").unwrap(), None);
        let t = d.select(0, "s[2]/t[2]").unwrap()[0];
        assert_eq!(d.path_of(t), "/r/s[2]/t[2]");
        assert_eq!(d.value(t, "../x").unwrap().as_deref(), Some("two"));
        assert_eq!(d.descendants(0, "t").len(), 3);
        assert!(d.select(0, "s[").is_err());
        assert!(d.select(0, "@a/b").is_err());
        assert!(d.select(0, "s[0]").is_err());
        // Hostile paths are errors, not a blown stack.
        let nested = "a[".repeat(100_000) + "]".repeat(100_000).as_str();
        assert!(d.select(0, &nested).is_err());
        let nested = "a[".repeat(20) + "b" + "]".repeat(20).as_str();
        assert!(d.select(0, &nested).unwrap_err().message.contains("nested"));
    }
}
