//! XML documents for scripts (C-CDA): the `XmlNode` type and its path helpers.
//!
//! A node is a handle (the shared document plus an element index), so passing nodes around a
//! script copies nothing. Lookups that find nothing return an *empty node* rather than `()`:
//! every method works on it and gives `""`, `[]` or `false`, so a mapping can chain
//! `doc.first("recordTarget/patientRole/patient").first("birthTime").attr("value")` through
//! optional parts of a document without guards, as HL7 paths read `""` when a field was not
//! sent. Test for presence with `node.exists`.
//!
//! Paths are the subset of XPath documented in [`crate::format::xml`]: `a/b`, `*`, `..`,
//! `[@root='2.16...']`, `[child/@code='x']`, `[2]`, and a final `@attr` in `get`.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map, INT};

use crate::format::xml::XmlDoc;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// An element of a parsed document, or the empty node.
#[derive(Clone)]
pub struct XmlNode {
    doc: Arc<XmlDoc>,
    /// `None`: the empty node (a lookup found nothing).
    at: Option<u32>,
}

impl XmlNode {
    /// The document's root element.
    pub fn root(doc: Arc<XmlDoc>) -> XmlNode {
        let at = (!doc.is_empty()).then_some(XmlDoc::ROOT);
        XmlNode { doc, at }
    }

    fn to(&self, at: Option<u32>) -> XmlNode {
        XmlNode {
            doc: self.doc.clone(),
            at,
        }
    }

    /// The document this node belongs to.
    pub fn doc(&self) -> &Arc<XmlDoc> {
        &self.doc
    }

    /// The element index (`None` for the empty node).
    pub fn index(&self) -> Option<u32> {
        self.at
    }

    fn select(&self, path: &str) -> Res<Vec<u32>> {
        match self.at {
            None => Ok(Vec::new()),
            Some(at) => self.doc.select(at, path).map_err(|e| e.to_string().into()),
        }
    }

    pub fn first(&self, path: &str) -> Res<XmlNode> {
        Ok(self.to(self.select(path)?.first().copied()))
    }

    pub fn all(&self, path: &str) -> Res<Array> {
        Ok(self
            .select(path)?
            .into_iter()
            .map(|i| Dynamic::from(self.to(Some(i))))
            .collect())
    }

    /// Text or attribute at a path; `""` when absent.
    pub fn get(&self, path: &str) -> Res<String> {
        match self.at {
            None => Ok(String::new()),
            Some(at) => Ok(self
                .doc
                .value(at, path)
                .map_err(|e| e.to_string())?
                .unwrap_or_default()),
        }
    }

    pub fn attr(&self, name: &str) -> String {
        self.at
            .and_then(|at| self.doc.attr(at, name))
            .unwrap_or_default()
            .to_owned()
    }

    pub fn text(&self) -> String {
        self.at
            .map(|at| self.doc.text(at).to_owned())
            .unwrap_or_default()
    }

    pub fn name(&self) -> String {
        self.at
            .map(|at| self.doc.element(at).name.clone())
            .unwrap_or_default()
    }

    /// The `templateId/@root` values of the element.
    pub fn templates(&self) -> Vec<String> {
        let Some(at) = self.at else {
            return Vec::new();
        };
        self.doc
            .element(at)
            .children
            .iter()
            .filter(|c| self.doc.element(**c).name == "templateId")
            .filter_map(|c| self.doc.attr(*c, "root").map(str::to_owned))
            .collect()
    }

    pub fn has_template(&self, root: &str) -> bool {
        self.templates().iter().any(|t| t == root)
    }

    /// The first `section` below this node with the templateId root (extension ignored: C-CDA
    /// R2.1 sections carry a version extension that senders fill inconsistently).
    pub fn section(&self, root: &str) -> XmlNode {
        let Some(at) = self.at else {
            return self.to(None);
        };
        let found = self
            .doc
            .descendants(at, "section")
            .into_iter()
            .find(|s| self.to(Some(*s)).has_template(root));
        self.to(found)
    }

    /// The local part of `xsi:type` (`"CD"` for `xsi:type="v3:CD"`).
    pub fn xsi_type(&self) -> String {
        let t = self.attr("xsi:type");
        match t.rsplit_once(':') {
            Some((_, local)) => local.to_owned(),
            None => t,
        }
    }
}

impl std::fmt::Debug for XmlNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.at {
            None => f.write_str("XmlNode(empty)"),
            Some(at) => write!(f, "XmlNode({})", self.doc.path_of(at)),
        }
    }
}

fn strings(v: Vec<String>) -> Array {
    v.into_iter()
        .map(|s| Dynamic::from(ImmutableString::from(s)))
        .collect()
}

/// Registers `XmlNode` and its methods.
pub fn register(engine: &mut Engine) {
    engine.register_type_with_name::<XmlNode>("XmlNode");
    engine.register_fn("first", |n: &mut XmlNode, p: &str| n.first(p));
    engine.register_fn("all", |n: &mut XmlNode, p: &str| n.all(p));
    engine.register_fn("get", |n: &mut XmlNode, p: &str| n.get(p));
    engine.register_indexer_get(|n: &mut XmlNode, p: &str| n.get(p));
    engine.register_fn("has", |n: &mut XmlNode, p: &str| {
        n.select(p).map(|v| !v.is_empty())
    });
    engine.register_fn("count", |n: &mut XmlNode, p: &str| {
        n.select(p).map(|v| v.len() as INT)
    });
    engine.register_fn("attr", |n: &mut XmlNode, a: &str| n.attr(a));
    engine.register_fn("text", |n: &mut XmlNode| n.text());
    engine.register_get("text", |n: &mut XmlNode| n.text());
    engine.register_fn("deep_text", |n: &mut XmlNode| {
        n.at.map(|at| n.doc.deep_text(at)).unwrap_or_default()
    });
    engine.register_get("name", |n: &mut XmlNode| n.name());
    engine.register_get("exists", |n: &mut XmlNode| n.at.is_some());
    engine.register_fn("is_null", |n: &mut XmlNode| {
        n.at.is_none() || !n.attr("nullFlavor").is_empty()
    });
    engine.register_get("null_flavor", |n: &mut XmlNode| n.attr("nullFlavor"));
    engine.register_get("xsi_type", |n: &mut XmlNode| n.xsi_type());
    engine.register_get("parent", |n: &mut XmlNode| {
        let p = n.at.and_then(|at| n.doc.element(at).parent);
        n.to(p)
    });
    engine.register_fn("children", |n: &mut XmlNode| {
        let kids: Array = match n.at {
            None => Array::new(),
            Some(at) => n
                .doc
                .element(at)
                .children
                .iter()
                .map(|c| Dynamic::from(n.to(Some(*c))))
                .collect(),
        };
        kids
    });
    engine.register_fn("descendants", |n: &mut XmlNode, name: &str| {
        let found: Array = match n.at {
            None => Array::new(),
            Some(at) => n
                .doc
                .descendants(at, name)
                .into_iter()
                .map(|c| Dynamic::from(n.to(Some(c))))
                .collect(),
        };
        found
    });
    engine.register_fn("attrs", |n: &mut XmlNode| {
        let mut m = Map::new();
        if let Some(at) = n.at {
            for (k, v) in &n.doc.element(at).attrs {
                m.insert(
                    k.as_str().into(),
                    Dynamic::from(ImmutableString::from(v.as_str())),
                );
            }
        }
        m
    });
    engine.register_fn("templates", |n: &mut XmlNode| strings(n.templates()));
    engine.register_fn("has_template", |n: &mut XmlNode, r: &str| n.has_template(r));
    engine.register_fn("section", |n: &mut XmlNode, r: &str| n.section(r));
    engine.register_fn("path", |n: &mut XmlNode| {
        n.at.map(|at| n.doc.path_of(at)).unwrap_or_default()
    });
    engine.register_fn("to_string", |n: &mut XmlNode| format!("{n:?}"));
    engine.register_fn("to_debug", |n: &mut XmlNode| format!("{n:?}"));
}
