//! The HL7 v2 message as scripts see it: `Message`, `Segment`, `Field` and `Group`.
//!
//! Everything reads through the codec's paths (`PID-3[2].4.1`), so scripts and the engine agree
//! on numbering, escapes and charsets. Reads return text: the decoded value, or `""` when the
//! element is absent, empty or the HL7 null `""` (the FHIR output prunes empty strings, so a
//! mapping can read optional fields without a guard). Scripts that must tell them apart ask
//! `msg.has(path)` (present at all) and `msg.is_null(path)` (sent as `""`: "delete this value").
//!
//! A segment, field or group holds the message it came from (a shared, immutable snapshot);
//! `msg.set(...)` copies the message on first write, so views taken before a write keep reading
//! the old values. A malformed path is a runtime error naming the path, not a silent `""`.

use std::rc::Rc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, INT};

use crate::hl7::message::nth_part;
use crate::hl7::{escape, Index, Message, Path, Value};

type Res<T> = Result<T, Box<EvalAltResult>>;

/// The message, registered in Rhai as `Message` (the script's `msg`).
#[derive(Clone)]
pub struct ScriptMessage {
    msg: Rc<Message>,
}

/// One segment occurrence, registered as `Segment`: `seg["5.1"]`, `seg[5]`, `seg.get("3[2].1")`.
#[derive(Clone)]
pub struct ScriptSegment {
    msg: Rc<Message>,
    name: ImmutableString,
    /// 1-based occurrence among segments of this name (`OBX[3]`).
    occurrence: usize,
    /// 0-based position among all segments.
    position: usize,
}

/// One repetition of a field, registered as `Field`: `f[1]` (component), `f["4.1"]`.
///
/// It keeps where the repetition's encoded text sits in the message, so reading a component
/// splits that text instead of parsing a path and finding the segment again (mappings read a
/// field's components one after the other; see [`super::v2`]).
#[derive(Clone)]
pub struct ScriptField {
    msg: Rc<Message>,
    /// Where the repetition is: segment name, occurrence, field, repetition (all 1-based).
    loc: Loc,
    /// Byte range of the repetition's encoded text in the message text; `None` when absent.
    raw: Option<(usize, usize)>,
    /// MSH-1/MSH-2 (and FHS/BHS): read by path, they hold the delimiters.
    atomic: bool,
}

/// A segment and the segments that follow it, registered as `Group` (see [`group`]).
#[derive(Clone)]
pub struct ScriptGroup {
    head: ScriptSegment,
    children: Vec<ScriptSegment>,
}

fn parse(path: &str) -> Res<Path> {
    Path::parse(path).map_err(|e| e.to_string().into())
}

thread_local! {
    /// The empty string, shared: most reads of optional fields find nothing, and a new
    /// `ImmutableString` is an allocation. Per thread: script strings are not `Send`.
    static EMPTY: ImmutableString = ImmutableString::new();
}

/// `""`, without allocating.
pub fn empty() -> ImmutableString {
    EMPTY.with(ImmutableString::clone)
}

fn text(v: Value<'_>) -> ImmutableString {
    match v {
        Value::Text(t) if !t.is_empty() => t.as_ref().into(),
        _ => empty(),
    }
}

fn read(msg: &Message, path: &str) -> Res<ImmutableString> {
    Ok(text(msg.get(&parse(path)?)))
}

fn read_all(msg: &Message, path: &str) -> Res<Array> {
    Ok(msg
        .get_all(&parse(path)?)
        .into_iter()
        .map(|v| Dynamic::from(text(v)))
        .collect())
}

fn nth(i: Index) -> Res<usize> {
    match i {
        Index::Nth(n) => Ok(n),
        Index::All => Err("[*] is not allowed here: name one occurrence".into()),
    }
}

/// A field repetition's address, kept as numbers (formatted only when a script asks).
#[derive(Clone, Copy)]
struct Loc {
    seg: [u8; 3],
    n: u32,
    field: u32,
    rep: u32,
}

impl Loc {
    fn new(seg: &str, n: usize, field: usize, rep: usize) -> Loc {
        let mut name = [b'?'; 3];
        for (d, b) in name.iter_mut().zip(seg.bytes()) {
            *d = b;
        }
        let c = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        Loc {
            seg: name,
            n: c(n),
            field: c(field),
            rep: c(rep),
        }
    }

    /// `PID[1]-3[2]`.
    fn base(&self) -> String {
        format!(
            "{}[{}]-{}[{}]",
            String::from_utf8_lossy(&self.seg),
            self.n,
            self.field,
            self.rep
        )
    }
}

fn is_header(segment: &str) -> bool {
    matches!(segment, "MSH" | "FHS" | "BHS")
}

/// Where `part` (a slice of the message text) starts in it.
fn range_in(msg: &Message, part: &str) -> (usize, usize) {
    let start = (part.as_ptr() as usize).saturating_sub(msg.as_str().as_ptr() as usize);
    (start, part.len())
}

/// The repetitions of the field a path names, as `Field`s (none when absent or empty); a
/// repetition index in the path is ignored.
fn repetitions(msg: &Rc<Message>, path: &str) -> Res<Array> {
    Ok(repetition_fields(msg, path)?
        .into_iter()
        .map(Dynamic::from)
        .collect())
}

/// [`repetitions`] before they become script values (each one a boxed `Dynamic`).
fn repetition_fields(msg: &Rc<Message>, path: &str) -> Res<Vec<ScriptField>> {
    let p = parse(path)?;
    if p.component().is_some() {
        return Err(format!("{path}: repetitions() takes a field path such as PID-3").into());
    }
    let n = nth(p.segment_index())?;
    let (seg, f) = (p.segment(), p.field());
    if is_header(seg) && f <= 2 {
        return Ok(vec![ScriptField::at(msg, Loc::new(seg, n, f, 1))?]);
    }
    let all = p.with_repetition(Index::All);
    let whole = match msg.get_raw(&all) {
        None | Some("") => return Ok(Vec::new()),
        Some(w) => w,
    };
    let sep = char::from(msg.delimiters().repetition);
    Ok(whole
        .split(sep)
        .enumerate()
        .map(|(i, part)| ScriptField {
            msg: msg.clone(),
            loc: Loc::new(seg, n, f, i + 1),
            raw: Some(range_in(msg, part)),
            atomic: false,
        })
        .collect())
}

/// The first repetition of a field whose component `rel` (`"5"`, `"4.1"`) reads `value`.
fn find_repetition(msg: &Rc<Message>, path: &str, rel: &str, value: &str) -> Res<Dynamic> {
    let (c, sub) = rel_component(rel)?;
    Ok(repetition_fields(msg, path)?
        .into_iter()
        .find(|f| f.value(c, sub).as_str() == Some(value))
        .map_or(Dynamic::UNIT, Dynamic::from))
}

/// The field repetition a path names, as a `Field`.
fn field(msg: &Rc<Message>, path: &str) -> Res<ScriptField> {
    let p = parse(path)?;
    if p.component().is_some() {
        return Err(format!("{path}: field() takes a field path such as PID-3 or PID-3[2]").into());
    }
    let n = nth(p.segment_index())?;
    let r = nth(p.repetition())?;
    Ok(ScriptField::at_path(
        msg,
        &p,
        Loc::new(p.segment(), n, p.field(), r),
    ))
}

/// Every segment, in order, with its occurrence number.
fn all_segments(msg: &Rc<Message>) -> Vec<ScriptSegment> {
    let mut seen: Vec<(ImmutableString, usize)> = Vec::new();
    let mut out = Vec::with_capacity(msg.segment_count());
    for s in msg.segments() {
        let occurrence = match seen.iter_mut().find(|(n, _)| n.as_str() == s.name) {
            Some((_, c)) => {
                *c += 1;
                *c
            }
            None => {
                seen.push((s.name.into(), 1));
                1
            }
        };
        let name = seen
            .iter()
            .find(|(n, _)| n.as_str() == s.name)
            .map(|(n, _)| n.clone())
            .unwrap_or_default();
        out.push(ScriptSegment {
            msg: msg.clone(),
            name,
            occurrence,
            position: s.index,
        });
    }
    out
}

fn segments_named(msg: &Rc<Message>, name: &str) -> Vec<ScriptSegment> {
    let mut out = Vec::new();
    for s in msg.segments().filter(|s| s.name == name) {
        out.push(ScriptSegment {
            msg: msg.clone(),
            name: s.name.into(),
            occurrence: out.len() + 1,
            position: s.index,
        });
    }
    out
}

fn to_array<T>(v: Vec<T>) -> Array
where
    Dynamic: From<T>,
{
    v.into_iter().map(Into::into).collect()
}

impl From<ScriptSegment> for Dynamic {
    fn from(s: ScriptSegment) -> Dynamic {
        Dynamic::from(s)
    }
}

impl From<ScriptGroup> for Dynamic {
    fn from(g: ScriptGroup) -> Dynamic {
        Dynamic::from(g)
    }
}

fn names(children: &Array) -> Res<Vec<String>> {
    children
        .iter()
        .map(|c| {
            c.clone()
                .into_immutable_string()
                .map(|s| s.to_string())
                .map_err(|_| "groups(anchor, children): children must be segment names".into())
        })
        .collect()
}

/// Groups a run of segments: each `anchor` segment starts a group, and the segments right after
/// it whose names are in `children` belong to it. Any other segment ends the current group, so
/// an OBX after a new ORC or PID never lands in the previous order. Segments before the first
/// anchor belong to no group.
pub fn group(segments: &[ScriptSegment], anchor: &str, children: &[String]) -> Vec<ScriptGroup> {
    let mut out: Vec<ScriptGroup> = Vec::new();
    let mut open = false;
    for s in segments {
        if s.name.as_str() == anchor {
            out.push(ScriptGroup {
                head: s.clone(),
                children: Vec::new(),
            });
            open = true;
        } else if open && children.iter().any(|c| c == s.name.as_str()) {
            if let Some(g) = out.last_mut() {
                g.children.push(s.clone());
            }
        } else {
            open = false;
        }
    }
    out
}

impl ScriptMessage {
    /// Wraps a parsed message for a script run.
    pub fn new(msg: Message) -> Self {
        ScriptMessage { msg: Rc::new(msg) }
    }

    /// Wraps a shared message (no copy until a script writes).
    pub fn from_rc(msg: Rc<Message>) -> Self {
        ScriptMessage { msg }
    }

    /// The message, as rewritten by the script if it called `set`.
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// The shared message.
    pub fn rc(&self) -> &Rc<Message> {
        &self.msg
    }

    /// The encoded text (original segment separators kept).
    pub fn encoded(&self) -> &str {
        self.msg.as_str()
    }

    fn set(&mut self, path: &str, value: &str) -> Res<()> {
        Rc::make_mut(&mut self.msg)
            .set_str(path, value)
            .map_err(|e| e.to_string().into())
    }

    fn set_raw(&mut self, path: &str, raw: &str) -> Res<()> {
        let p = parse(path)?;
        Rc::make_mut(&mut self.msg)
            .set_raw(&p, raw)
            .map_err(|e| e.to_string().into())
    }

    fn header(&self, f: impl Fn(&Message) -> Option<std::borrow::Cow<'_, str>>) -> ImmutableString {
        f(&self.msg).map_or_else(empty, |c| c.as_ref().into())
    }
}

impl ScriptSegment {
    fn path(&self, rel: &str) -> String {
        format!("{}[{}]-{}", self.name, self.occurrence, rel)
    }

    /// `seg["3.1"]`: read in this segment directly (mappings read many fields of each
    /// segment), without formatting a whole path and finding the segment again.
    fn read(&self, rel: &str) -> Res<ImmutableString> {
        let name = self.name.as_bytes();
        let parsed = <[u8; 3]>::try_from(name)
            .ok()
            .and_then(|name| Path::parse_field_path(name, Index::Nth(self.occurrence), rel).ok());
        match parsed {
            Some(p) => Ok(text(self.msg.get_in(self.position, &p))),
            // The whole path's parse names the error as it always did.
            None => read(&self.msg, &self.path(rel)),
        }
    }

    fn raw(&self) -> ImmutableString {
        self.msg
            .segment(self.position)
            .map_or_else(empty, |s| s.raw.into())
    }
}

/// Parses a relative component path: `"4"` or `"4.1"`.
fn rel_component(rel: &str) -> Res<(usize, Option<usize>)> {
    let num = |s: &str| {
        s.parse::<usize>()
            .ok()
            .filter(|n| (1..1_000_000).contains(n))
    };
    let bad = || -> Box<EvalAltResult> {
        format!("bad component path {rel:?}: expected a component, or component.subcomponent, such as \"4\" or \"4.1\"").into()
    };
    match rel.split_once('.') {
        None => Ok((num(rel).ok_or_else(bad)?, None)),
        Some((c, s)) => Ok((num(c).ok_or_else(bad)?, Some(num(s).ok_or_else(bad)?))),
    }
}

impl ScriptField {
    /// The repetition at `loc`.
    fn at(msg: &Rc<Message>, loc: Loc) -> Res<ScriptField> {
        let p = parse(&loc.base())?;
        Ok(ScriptField::at_path(msg, &p, loc))
    }

    /// The repetition `p` names (a field path, `loc` the same place as numbers).
    fn at_path(msg: &Rc<Message>, p: &Path, loc: Loc) -> ScriptField {
        let atomic = is_header(p.segment()) && p.field() <= 2;
        let raw = if atomic {
            None
        } else {
            msg.get_raw(p).map(|r| range_in(msg, r))
        };
        ScriptField {
            msg: msg.clone(),
            loc,
            raw,
            atomic,
        }
    }

    fn path(&self, rel: &str) -> String {
        format!("{}.{}", self.loc.base(), rel)
    }

    /// The repetition's encoded text (`None` when absent).
    pub fn raw(&self) -> Option<&str> {
        let (start, len) = self.raw?;
        self.msg.as_str().get(start..start + len)
    }

    /// The value of a component (and subcomponent), with the codec's rules: absent, empty and
    /// null are [`Value::Absent`]/[`Value::Empty`]/[`Value::Null`]; a leaf is decoded; a
    /// component holding subcomponents comes back encoded.
    pub fn value(&self, comp: usize, sub: Option<usize>) -> Value<'_> {
        if self.atomic {
            let rel = match sub {
                Some(s) => format!("{comp}.{s}"),
                None => comp.to_string(),
            };
            return match Path::parse(&self.path(&rel)) {
                Ok(p) => self.msg.get(&p),
                Err(_) => Value::Absent,
            };
        }
        let Some(r) = self.raw() else {
            return Value::Absent;
        };
        let d = self.msg.delimiters();
        let Some(c) = nth_part(r, d.component, comp) else {
            return Value::Absent;
        };
        let (text, composite) = match sub {
            None => (c, c.as_bytes().contains(&d.subcomponent)),
            Some(s) => match nth_part(c, d.subcomponent, s) {
                Some(t) => (t, false),
                None => return Value::Absent,
            },
        };
        match text {
            "" => Value::Empty,
            "\"\"" => Value::Null,
            t if composite => Value::Text(std::borrow::Cow::Borrowed(t)),
            t => Value::Text(escape::decode(t, d, self.msg.decoded_as())),
        }
    }

    /// The text of a component (`""` when absent, empty or null).
    pub fn text(&self, comp: usize, sub: Option<usize>) -> ImmutableString {
        text(self.value(comp, sub))
    }

    fn read_rel(&self, rel: &str) -> Res<ImmutableString> {
        let (c, s) = rel_component(rel)?;
        Ok(self.text(c, s))
    }

    /// The whole repetition: decoded when it is a leaf, encoded when it has components.
    pub fn whole(&self) -> Value<'_> {
        if self.atomic {
            return match Path::parse(&self.loc.base()) {
                Ok(p) => self.msg.get(&p),
                Err(_) => Value::Absent,
            };
        }
        let Some(r) = self.raw() else {
            return Value::Absent;
        };
        let d = self.msg.delimiters();
        match r {
            "" => Value::Empty,
            "\"\"" => Value::Null,
            t if t.bytes().any(|b| b == d.component || b == d.subcomponent) => {
                Value::Text(std::borrow::Cow::Borrowed(t))
            }
            t => Value::Text(escape::decode(t, d, self.msg.decoded_as())),
        }
    }
}

fn set_value(v: &Dynamic) -> String {
    super::util::part_text(v)
}

/// Registers the four types, their properties, indexers and methods.
pub fn register(engine: &mut Engine) {
    register_message(engine);
    register_segment(engine);
    register_field(engine);
    register_group(engine);
}

fn register_message(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptMessage>("Message");
    engine.register_indexer_get(|m: &mut ScriptMessage, p: ImmutableString| read(&m.msg, &p));
    engine.register_indexer_set(|m: &mut ScriptMessage, p: ImmutableString, v: Dynamic| {
        m.set(&p, &set_value(&v))
    });
    engine.register_fn("get", |m: &mut ScriptMessage, p: &str| read(&m.msg, p));
    engine.register_fn("get_all", |m: &mut ScriptMessage, p: &str| {
        read_all(&m.msg, p)
    });
    engine.register_fn("has", |m: &mut ScriptMessage, p: &str| {
        Ok::<_, Box<EvalAltResult>>(m.msg.get(&parse(p)?).is_present())
    });
    engine.register_fn("is_null", |m: &mut ScriptMessage, p: &str| {
        Ok::<_, Box<EvalAltResult>>(m.msg.get(&parse(p)?) == Value::Null)
    });
    engine.register_fn("value_kind", |m: &mut ScriptMessage, p: &str| {
        Ok::<_, Box<EvalAltResult>>(match m.msg.get(&parse(p)?) {
            Value::Absent => "absent",
            Value::Empty => "empty",
            Value::Null => "null",
            Value::Text(_) => "text",
        })
    });
    engine.register_fn("repetitions", |m: &mut ScriptMessage, p: &str| {
        repetitions(&m.msg, p)
    });
    engine.register_fn("field", |m: &mut ScriptMessage, p: &str| field(&m.msg, p));
    engine.register_fn(
        "find_repetition",
        |m: &mut ScriptMessage, p: &str, rel: &str, value: &str| {
            find_repetition(&m.msg, p, rel, value)
        },
    );
    engine.register_fn("segments", |m: &mut ScriptMessage| {
        to_array(all_segments(&m.msg))
    });
    engine.register_fn("segments", |m: &mut ScriptMessage, name: &str| {
        to_array(segments_named(&m.msg, name))
    });
    engine.register_fn("segment", |m: &mut ScriptMessage, name: &str| {
        segments_named(&m.msg, name)
            .into_iter()
            .next()
            .map_or(Dynamic::UNIT, Dynamic::from)
    });
    engine.register_fn("count", |m: &mut ScriptMessage, name: &str| {
        m.msg.count_segments(name) as INT
    });
    engine.register_fn(
        "groups",
        |m: &mut ScriptMessage, anchor: &str, children: Array| {
            let children = names(&children)?;
            Ok::<_, Box<EvalAltResult>>(to_array(group(&all_segments(&m.msg), anchor, &children)))
        },
    );
    engine.register_fn("set", |m: &mut ScriptMessage, p: &str, v: Dynamic| {
        m.set(p, &set_value(&v))
    });
    engine.register_fn("set_raw", |m: &mut ScriptMessage, p: &str, raw: &str| {
        m.set_raw(p, raw)
    });
    engine.register_fn("encode", |m: &mut ScriptMessage| -> ImmutableString {
        m.encoded().into()
    });
    engine.register_fn("to_string", |m: &mut ScriptMessage| -> ImmutableString {
        m.encoded().into()
    });
    engine.register_fn("to_debug", |m: &mut ScriptMessage| {
        format!(
            "Message({}, control id {:?}, {} segments)",
            m.msg
                .message_type()
                .map(|t| t.to_string())
                .unwrap_or_default(),
            m.msg.control_id().unwrap_or_default(),
            m.msg.segment_count()
        )
    });
    engine.register_get("type", |m: &mut ScriptMessage| -> ImmutableString {
        m.msg
            .message_type()
            .map_or_else(empty, |t| t.to_string().into())
    });
    engine.register_get("code", |m: &mut ScriptMessage| -> ImmutableString {
        m.msg.message_type().map_or_else(empty, |t| t.code.into())
    });
    engine.register_get("trigger", |m: &mut ScriptMessage| -> ImmutableString {
        m.msg
            .message_type()
            .map_or_else(empty, |t| t.trigger.into())
    });
    engine.register_get("structure", |m: &mut ScriptMessage| -> ImmutableString {
        m.msg
            .message_type()
            .map_or_else(empty, |t| t.structure.into())
    });
    engine.register_get("control_id", |m: &mut ScriptMessage| {
        m.header(Message::control_id)
    });
    engine.register_get("version", |m: &mut ScriptMessage| {
        m.header(Message::version)
    });
    engine.register_get("timestamp", |m: &mut ScriptMessage| {
        m.header(Message::timestamp)
    });
    engine.register_get("processing_id", |m: &mut ScriptMessage| {
        m.header(Message::processing_id)
    });
    engine.register_get("sending_application", |m: &mut ScriptMessage| {
        m.header(Message::sending_application)
    });
    engine.register_get("sending_facility", |m: &mut ScriptMessage| {
        m.header(Message::sending_facility)
    });
    engine.register_get("receiving_application", |m: &mut ScriptMessage| {
        m.header(Message::receiving_application)
    });
    engine.register_get("receiving_facility", |m: &mut ScriptMessage| {
        m.header(Message::receiving_facility)
    });
}

fn register_segment(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptSegment>("Segment");
    engine.register_indexer_get(|s: &mut ScriptSegment, rel: ImmutableString| s.read(&rel));
    engine.register_indexer_get(|s: &mut ScriptSegment, f: INT| s.read(&f.to_string()));
    engine.register_fn("get", |s: &mut ScriptSegment, rel: &str| s.read(rel));
    engine.register_fn("get", |s: &mut ScriptSegment, f: INT| {
        s.read(&f.to_string())
    });
    engine.register_fn("get_all", |s: &mut ScriptSegment, rel: &str| {
        read_all(&s.msg, &s.path(rel))
    });
    engine.register_fn("has", |s: &mut ScriptSegment, rel: &str| {
        Ok::<_, Box<EvalAltResult>>(s.msg.get(&parse(&s.path(rel))?).is_present())
    });
    engine.register_fn("is_null", |s: &mut ScriptSegment, rel: &str| {
        Ok::<_, Box<EvalAltResult>>(s.msg.get(&parse(&s.path(rel))?) == Value::Null)
    });
    engine.register_fn("field", |s: &mut ScriptSegment, rel: &str| {
        field(&s.msg, &s.path(rel))
    });
    engine.register_fn("field", |s: &mut ScriptSegment, f: INT| {
        field(&s.msg, &s.path(&f.to_string()))
    });
    engine.register_fn("repetitions", |s: &mut ScriptSegment, f: INT| {
        repetitions(&s.msg, &format!("{}[{}]-{f}", s.name, s.occurrence))
    });
    engine.register_fn("repetitions", |s: &mut ScriptSegment, rel: &str| {
        repetitions(&s.msg, &s.path(rel))
    });
    engine.register_fn("path", |s: &mut ScriptSegment, rel: &str| s.path(rel));
    engine.register_fn("encode", |s: &mut ScriptSegment| s.raw());
    engine.register_fn("to_string", |s: &mut ScriptSegment| s.raw());
    engine.register_fn("to_debug", |s: &mut ScriptSegment| {
        format!("Segment({}[{}])", s.name, s.occurrence)
    });
    engine.register_get("name", |s: &mut ScriptSegment| s.name.clone());
    engine.register_get("index", |s: &mut ScriptSegment| s.occurrence as INT);
    engine.register_get("position", |s: &mut ScriptSegment| s.position as INT);
}

fn register_field(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptField>("Field");
    engine.register_indexer_get(|f: &mut ScriptField, c: INT| {
        f.text(usize::try_from(c).unwrap_or(0), None)
    });
    engine.register_indexer_get(|f: &mut ScriptField, rel: ImmutableString| f.read_rel(&rel));
    engine.register_fn("get", |f: &mut ScriptField, c: INT| {
        f.text(usize::try_from(c).unwrap_or(0), None)
    });
    engine.register_fn("get", |f: &mut ScriptField, rel: &str| f.read_rel(rel));
    engine.register_fn("has", |f: &mut ScriptField, rel: &str| {
        let (c, s) = rel_component(rel)?;
        Ok::<_, Box<EvalAltResult>>(f.value(c, s).is_present())
    });
    engine.register_fn("path", |f: &mut ScriptField| f.loc.base());
    engine.register_fn("path", |f: &mut ScriptField, rel: &str| f.path(rel));
    engine.register_get("value", |f: &mut ScriptField| text(f.whole()));
    engine.register_get("is_null", |f: &mut ScriptField| f.whole() == Value::Null);
    engine.register_get("is_present", |f: &mut ScriptField| f.whole().is_present());
    engine.register_fn("to_string", |f: &mut ScriptField| text(f.whole()));
    engine.register_fn("to_debug", |f: &mut ScriptField| {
        format!("Field({})", f.loc.base())
    });
}

fn register_group(engine: &mut Engine) {
    engine.register_type_with_name::<ScriptGroup>("Group");
    engine.register_get("head", |g: &mut ScriptGroup| g.head.clone());
    engine.register_get("name", |g: &mut ScriptGroup| g.head.name.clone());
    engine.register_get("children", |g: &mut ScriptGroup| {
        to_array(g.children.clone())
    });
    engine.register_fn("segments", |g: &mut ScriptGroup, name: &str| {
        to_array(
            g.children
                .iter()
                .filter(|s| s.name.as_str() == name)
                .cloned()
                .collect(),
        )
    });
    engine.register_fn(
        "groups",
        |g: &mut ScriptGroup, anchor: &str, children: Array| {
            let children = names(&children)?;
            Ok::<_, Box<EvalAltResult>>(to_array(group(&g.children, anchor, &children)))
        },
    );
    engine.register_fn("to_debug", |g: &mut ScriptGroup| {
        format!(
            "Group({}[{}] + {} segments)",
            g.head.name,
            g.head.occurrence,
            g.children.len()
        )
    });
}
