//! A safe, compact XML tree for documents that arrive whole (C-CDA), and the path queries
//! scripts use on it.
//!
//! Safety first, because these bodies come from outside: one pass of `quick-xml` events (no
//! DTD processing at all), a `<!DOCTYPE` is refused outright (that is where billion-laughs and
//! external-entity attacks live), an entity reference other than the five predefined ones and
//! character references is an error, and the size, depth and element count are bounded.
//!
//! The tree is an arena (`Vec<Element>`, children by index): one allocation per element's name,
//! attributes and text, cheap to share (`Arc<XmlDoc>`) between the script values that point into
//! it. Names are namespace-resolved to a short canonical form: the CDA namespace
//! (`urn:hl7-org:v3`) and no namespace give bare local names (`patientRole`), the SDTC extension
//! namespace `sdtc:…`, XML Schema instance `xsi:…` (so `xsi:type` is found whatever prefix the
//! sender bound), anything else keeps the sender's prefix. `xmlns` declarations are not kept as
//! attributes.
//!
//! Paths ([`XmlDoc::select`], in [`path`]) are a small XPath subset: `a/b/c` steps by name (`*` any, `.` self,
//! `..` parent), predicates `[@attr='v']`, `[@attr]`, `[child/path='text']`, `[child/@a='v']`,
//! `[n]` (1-based, per parent), and a final `@attr` step for [`XmlDoc::value`].

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

mod path;
pub use path::PathError;

/// The HL7 v3 / CDA namespace.
pub const CDA_NS: &str = "urn:hl7-org:v3";
/// The SDTC extension namespace used by C-CDA (`sdtc:raceCode`, `sdtc:deceasedInd`, ...).
pub const SDTC_NS: &str = "urn:hl7-org:sdtc";
/// XML Schema instance (`xsi:type`, `xsi:nil`).
pub const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Bounds on what one document may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XmlLimits {
    /// Bytes of input (a large C-CDA with embedded PDFs runs to a few MiB).
    pub max_bytes: usize,
    /// Element nesting (C-CDA rarely goes past 25; hostile input may go to millions).
    pub max_depth: usize,
    /// Elements in the whole document.
    pub max_elements: usize,
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits {
            max_bytes: 32 * 1024 * 1024,
            max_depth: 128,
            max_elements: 1_000_000,
        }
    }
}

/// Why a document was refused. Line numbers are 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the document is {size} bytes, more than the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("line {line}: DOCTYPE declarations are refused (no DTD processing, no entities)")]
    DocType { line: usize },
    #[error("line {line}: entity reference &{name}; is not allowed (only &lt; &gt; &amp; &apos; &quot; and character references)")]
    Entity { line: usize, name: String },
    #[error("line {line}: elements nested deeper than {max} levels at {path}")]
    TooDeep {
        line: usize,
        max: usize,
        path: String,
    },
    #[error("line {line}: more than {max} elements")]
    TooManyElements { line: usize, max: usize },
    #[error("line {line}: {message}")]
    Syntax { line: usize, message: String },
    #[error("the document has no root element")]
    NoRoot,
}

/// One element: canonical name, attributes in document order, its own text (the text and
/// CDATA directly inside it, not its children's), child elements, parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    pub children: Vec<u32>,
    pub parent: Option<u32>,
}

/// A parsed document; element 0 is the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlDoc {
    elements: Vec<Element>,
}

fn line_at(input: &[u8], offset: u64) -> usize {
    let end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(input.len());
    input[..end].iter().filter(|b| **b == b'\n').count() + 1
}

/// Namespace bindings in scope: a stack of (prefix, uri), `""` for the default namespace.
#[derive(Default)]
struct Scopes {
    bindings: Vec<(String, String)>,
    /// How many bindings each open element pushed.
    pushed: Vec<usize>,
}

impl Scopes {
    fn uri(&self, prefix: &str) -> Option<&str> {
        self.bindings
            .iter()
            .rev()
            .find(|(p, _)| p == prefix)
            .map(|(_, u)| u.as_str())
    }

    /// The canonical form of a qualified name; `attribute` names without a prefix are in no
    /// namespace (they do not take the default one).
    fn canonical(&self, qname: &str, attribute: bool) -> String {
        let (prefix, local) = match qname.split_once(':') {
            Some((p, l)) => (p, l),
            None => ("", qname),
        };
        if attribute && prefix.is_empty() {
            return local.to_owned();
        }
        let uri = match self.uri(prefix) {
            Some(u) => Some(u),
            // An unbound prefix: keep the name as written.
            None if !prefix.is_empty() => return qname.to_owned(),
            None => None,
        };
        match uri {
            None | Some(CDA_NS) | Some("") => local.to_owned(),
            Some(SDTC_NS) => format!("sdtc:{local}"),
            Some(XSI_NS) => format!("xsi:{local}"),
            Some(_) if prefix.is_empty() => local.to_owned(),
            Some(_) => qname.to_owned(),
        }
    }
}

/// Parses a whole document within `limits`.
/// A document whose XML declaration says ISO-8859-1 (older EHRs still export C-CDA so), as
/// UTF-8; `None` for any other (UTF-8 is the default and all the parser reads). Every Latin-1
/// byte is the character of the same number, so the transcoding cannot fail.
fn latin1_to_utf8(input: &[u8]) -> Option<Vec<u8>> {
    let declaration = input.strip_prefix(b"<?xml")?;
    let end = declaration.iter().take(256).position(|b| *b == b'>')?;
    let declaration = String::from_utf8_lossy(&declaration[..end]).to_ascii_lowercase();
    let latin1 = ["iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1"]
        .iter()
        .any(|name| {
            declaration.contains(&format!("encoding=\"{name}\""))
                || declaration.contains(&format!("encoding='{name}'"))
        });
    latin1.then(|| {
        input
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .into_bytes()
    })
}

pub fn parse(input: &[u8], limits: &XmlLimits) -> Result<XmlDoc, XmlError> {
    if input.len() > limits.max_bytes {
        return Err(XmlError::TooLarge {
            size: input.len(),
            max: limits.max_bytes,
        });
    }
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let transcoded = latin1_to_utf8(input);
    let input = transcoded.as_deref().unwrap_or(input);
    let mut reader = Reader::from_reader(input);
    reader.config_mut().check_end_names = true;
    let mut elements: Vec<Element> = Vec::new();
    let mut open: Vec<u32> = Vec::new();
    let mut scopes = Scopes::default();
    let mut root_closed = false;

    loop {
        // Errors name the line where the offending markup starts.
        let start = reader.buffer_position();
        let event = reader.read_event().map_err(|e| XmlError::Syntax {
            line: line_at(input, reader.error_position()),
            message: e.to_string(),
        })?;
        let line = || line_at(input, start);
        match event {
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                if root_closed {
                    return Err(XmlError::Syntax {
                        line: line(),
                        message: "a second root element".into(),
                    });
                }
                if open.len() >= limits.max_depth {
                    let path = open
                        .iter()
                        .take(6)
                        .map(|i| elements[*i as usize].name.as_str())
                        .collect::<Vec<_>>()
                        .join("/");
                    return Err(XmlError::TooDeep {
                        line: line(),
                        max: limits.max_depth,
                        path: format!("/{path}/..."),
                    });
                }
                if elements.len() >= limits.max_elements {
                    return Err(XmlError::TooManyElements {
                        line: line(),
                        max: limits.max_elements,
                    });
                }
                let element =
                    start_element(start, &mut scopes, open.last().copied()).map_err(|message| {
                        XmlError::Syntax {
                            line: line(),
                            message,
                        }
                    })?;
                let index = elements.len() as u32;
                if let Some(parent) = open.last() {
                    elements[*parent as usize].children.push(index);
                }
                elements.push(element);
                if empty {
                    close(&mut scopes);
                    root_closed |= open.is_empty();
                } else {
                    open.push(index);
                }
            }
            Event::End(_) => {
                // quick-xml has checked that the names match.
                open.pop();
                close(&mut scopes);
                root_closed |= open.is_empty();
            }
            Event::Text(t) => {
                let text = t.xml10_content();
                push_text(&mut elements, &open, &text, line)?;
            }
            Event::CData(c) => {
                let text = c.xml10_content();
                push_text(&mut elements, &open, &text, line)?;
            }
            Event::GeneralRef(r) => {
                let resolved: String = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match quick_xml::escape::resolve_xml_entity(&r.xml10_content()) {
                        Some(s) => s.to_owned(),
                        None => {
                            return Err(XmlError::Entity {
                                line: line(),
                                name: r.xml10_content().chars().take(64).collect(),
                            })
                        }
                    },
                    Err(e) => {
                        return Err(XmlError::Syntax {
                            line: line(),
                            message: e.to_string(),
                        })
                    }
                };
                push_text(&mut elements, &open, &resolved, line)?;
            }
            Event::DocType(_) => return Err(XmlError::DocType { line: line() }),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !open.is_empty() {
        return Err(XmlError::Syntax {
            line: line_at(input, input.len() as u64),
            message: format!(
                "the document ends inside <{}>",
                elements[*open.last().unwrap_or(&0) as usize].name
            ),
        });
    }
    if elements.is_empty() {
        return Err(XmlError::NoRoot);
    }
    Ok(XmlDoc { elements })
}

fn close(scopes: &mut Scopes) {
    let n = scopes.pushed.pop().unwrap_or(0);
    let keep = scopes.bindings.len().saturating_sub(n);
    scopes.bindings.truncate(keep);
}

fn start_element(
    start: &BytesStart<'_>,
    scopes: &mut Scopes,
    parent: Option<u32>,
) -> Result<Element, String> {
    // Namespace declarations first: they apply to the element's own name and attributes.
    let mut raw: Vec<(String, String)> = Vec::new();
    let mut pushed = 0;
    for attr in start.attributes() {
        let attr = attr.map_err(|e| e.to_string())?;
        let key = attr.key.0.to_owned();
        let value = attr
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map_err(|e| format!("attribute {key}: {e}"))?
            .into_owned();
        if key == "xmlns" {
            scopes.bindings.push((String::new(), value));
            pushed += 1;
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            scopes.bindings.push((prefix.to_owned(), value));
            pushed += 1;
        } else {
            raw.push((key, value));
        }
    }
    scopes.pushed.push(pushed);
    let name = scopes.canonical(start.name().0, false);
    let attrs = raw
        .into_iter()
        .map(|(k, v)| (scopes.canonical(&k, true), v))
        .collect();
    Ok(Element {
        name,
        attrs,
        text: String::new(),
        children: Vec::new(),
        parent,
    })
}

fn push_text(
    elements: &mut [Element],
    open: &[u32],
    text: &str,
    line: impl Fn() -> usize,
) -> Result<(), XmlError> {
    match open.last() {
        Some(i) => {
            let own = &mut elements[*i as usize].text;
            // Indentation between child elements is not text worth keeping.
            if !(own.is_empty() && text.trim().is_empty()) {
                own.push_str(text);
            }
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(XmlError::Syntax {
            line: line(),
            message: "text outside the root element".into(),
        }),
    }
}

impl XmlDoc {
    /// The root element's index.
    pub const ROOT: u32 = 0;

    pub fn element(&self, at: u32) -> &Element {
        &self.elements[at as usize]
    }

    /// How many elements the document has.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// An attribute's value by canonical name.
    pub fn attr(&self, at: u32, name: &str) -> Option<&str> {
        self.element(at)
            .attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The element's own text, trimmed.
    pub fn text(&self, at: u32) -> &str {
        self.element(at).text.trim()
    }

    /// All text inside the element (its own and its descendants'), in document order, with
    /// runs of whitespace collapsed: the readable content of a narrative block.
    pub fn deep_text(&self, at: u32) -> String {
        fn walk(doc: &XmlDoc, at: u32, out: &mut String) {
            let e = doc.element(at);
            out.push(' ');
            out.push_str(&e.text);
            for c in &e.children {
                walk(doc, *c, out);
            }
        }
        let mut raw = String::new();
        walk(self, at, &mut raw);
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Every descendant (not `at` itself) with that name (`*`: all), in document order.
    pub fn descendants(&self, at: u32, name: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut stack: Vec<u32> = self.element(at).children.iter().rev().copied().collect();
        while let Some(i) = stack.pop() {
            let e = self.element(i);
            if name == "*" || e.name == name {
                out.push(i);
            }
            stack.extend(e.children.iter().rev());
        }
        out
    }

    /// Where an element is, for messages: `/ClinicalDocument/component/structuredBody/...`.
    pub fn path_of(&self, at: u32) -> String {
        let mut names = Vec::new();
        let mut cur = Some(at);
        while let Some(i) = cur {
            let e = self.element(i);
            let rank = match e.parent {
                Some(p) => {
                    let same: Vec<u32> = self
                        .element(p)
                        .children
                        .iter()
                        .copied()
                        .filter(|c| self.element(*c).name == e.name)
                        .collect();
                    if same.len() > 1 {
                        let r = same.iter().position(|c| *c == i).unwrap_or(0) + 1;
                        format!("[{r}]")
                    } else {
                        String::new()
                    }
                }
                None => String::new(),
            };
            names.push(format!("{}{rank}", e.name));
            cur = e.parent;
        }
        names.reverse();
        format!("/{}", names.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(s: &str) -> XmlDoc {
        parse(s.as_bytes(), &XmlLimits::default()).unwrap()
    }

    #[test]
    fn a_document_declared_latin1_is_read_as_latin1() {
        let latin1 =
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<r n=\"Zo\xe9\">M\xfcller</r>";
        let d = parse(latin1, &XmlLimits::default()).unwrap();
        assert_eq!(d.deep_text(0), "M\u{fc}ller");
        assert_eq!(d.attr(0, "n"), Some("Zo\u{e9}"));
        // Undeclared, the same bytes are not UTF-8 (the default): refused.
        let undeclared = b"<?xml version=\"1.0\"?>\n<r>M\xfcller</r>";
        let e = parse(undeclared, &XmlLimits::default()).unwrap_err();
        assert!(e.to_string().contains("UTF-8"), "{e}");
    }

    #[test]
    fn names_are_namespace_resolved() {
        let d = doc(r#"<?xml version="1.0"?>
<cda:ClinicalDocument xmlns:cda="urn:hl7-org:v3" xmlns:s="urn:hl7-org:sdtc" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
  <cda:value i:type="PQ" value="5" unit="mg"/>
  <s:raceCode code="2106-3"/>
</cda:ClinicalDocument>"#);
        assert_eq!(d.element(0).name, "ClinicalDocument");
        let v = d.select(0, "value").unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(d.attr(v[0], "xsi:type"), Some("PQ"));
        assert_eq!(
            d.value(0, "sdtc:raceCode/@code").unwrap().as_deref(),
            Some("2106-3")
        );
        // xmlns declarations are not attributes.
        assert!(d.element(0).attrs.is_empty());
    }

    #[test]
    fn text_entities_and_cdata() {
        let d = doc("<a><b>x &amp; y &#x41;&#66; <![CDATA[<raw>]]></b><c>  z  </c></a>");
        assert_eq!(d.value(0, "b").unwrap().as_deref(), Some("x & y AB <raw>"));
        assert_eq!(d.value(0, "c").unwrap().as_deref(), Some("z"));
        assert_eq!(d.deep_text(0), "x & y AB <raw> z");
        let d = doc(r#"<a t="1 &lt; 2"/>"#);
        assert_eq!(d.attr(0, "t"), Some("1 < 2"));
    }

    #[test]
    fn doctype_and_entities_are_refused() {
        let billion_laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"#;
        let e = parse(billion_laughs.as_bytes(), &XmlLimits::default()).unwrap_err();
        assert!(matches!(e, XmlError::DocType { line: 2 }), "{e}");

        let xxe = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert!(matches!(
            parse(xxe.as_bytes(), &XmlLimits::default()),
            Err(XmlError::DocType { .. })
        ));
        // An entity used without any DTD is an error, not silently dropped text.
        let e = parse(b"<r>\n&x;</r>", &XmlLimits::default()).unwrap_err();
        assert_eq!(
            e,
            XmlError::Entity {
                line: 2,
                name: "x".into()
            }
        );
        assert!(parse(br#"<r a="&x;"/>"#, &XmlLimits::default()).is_err());
    }

    #[test]
    fn limits_hold() {
        let deep = "<a>".repeat(10_000) + "</a>".repeat(10_000).as_str();
        let e = parse(deep.as_bytes(), &XmlLimits::default()).unwrap_err();
        assert!(matches!(e, XmlError::TooDeep { max: 128, .. }), "{e}");
        let limits = XmlLimits {
            max_bytes: 10,
            ..XmlLimits::default()
        };
        assert!(matches!(
            parse(b"<a>0123456789</a>", &limits),
            Err(XmlError::TooLarge { .. })
        ));
        let limits = XmlLimits {
            max_elements: 3,
            ..XmlLimits::default()
        };
        assert!(matches!(
            parse(b"<a><b/><b/><b/></a>", &limits),
            Err(XmlError::TooManyElements { max: 3, .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn hostile_bytes_are_errors_not_panics(
            bytes in proptest::collection::vec(proptest::sample::select(
                b"<>/ab=\"' &;#x1!?[]-\n\xc3\xa9\xff".to_vec()), 0..300),
        ) {
            let limits = XmlLimits { max_depth: 4, max_elements: 20, ..XmlLimits::default() };
            if let Ok(d) = parse(&bytes, &limits) {
                proptest::prop_assert!(!d.is_empty());
                let _ = d.select(XmlDoc::ROOT, "a/b[@a='1']");
                let _ = d.deep_text(XmlDoc::ROOT);
            }
        }
    }

    #[test]
    fn malformed_documents_are_errors() {
        for bad in [
            &b""[..],
            b"   ",
            b"<a><b></a>",
            b"<a>",
            b"<a/><b/>",
            b"text<a/>",
            b"<a x='1' x='2'/>",
            b"<a>\xff\xfe</a>",
            b"<a",
        ] {
            assert!(
                parse(bad, &XmlLimits::default()).is_err(),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let e = parse(b"<a>\n<b>\n</c></a>", &XmlLimits::default()).unwrap_err();
        assert!(matches!(e, XmlError::Syntax { line: 3, .. }), "{e}");
    }
}
