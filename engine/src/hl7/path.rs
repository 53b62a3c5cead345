//! HL7 paths (`PID-3`, `PID-3[2].4.1`, `OBX[3]-5`, `MSH-9.2`), parsed once.
//!
//! Grammar: `SEG[n]-F[r].C.S`, where `SEG` is a segment name (`[A-Z][A-Z0-9]{2}`), `[n]` the
//! occurrence of that segment, `F` the field number as the standard counts it (MSH-1 is the field
//! separator), `[r]` the repetition, `.C` the component and `.S` the subcomponent. Indices are
//! 1-based; `[n]` and `[r]` default to 1 and may be `[*]` (all). Scripts and channels call reads in
//! loops, so the string is parsed into a [`Path`] once and reused.

use std::fmt;
use std::str::FromStr;

use super::error::PathError;

/// An occurrence index: a 1-based position or every occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Index {
    /// The n-th occurrence, 1-based.
    Nth(usize),
    /// `[*]`: every occurrence.
    All,
}

impl Index {
    /// The 1-based position, with `All` read as the first.
    pub fn first_or_nth(self) -> usize {
        match self {
            Index::Nth(n) => n,
            Index::All => 1,
        }
    }
}

/// A parsed HL7 path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segment: [u8; 3],
    segment_index: Index,
    field: usize,
    repetition: Index,
    component: Option<usize>,
    subcomponent: Option<usize>,
}

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn fail(&self, expected: &'static str) -> PathError {
        PathError::Syntax {
            path: self.s.to_owned(),
            position: self.i + 1,
            expected,
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// A positive decimal number (no sign, no leading `+`, at most 6 digits).
    fn number(&mut self, expected: &'static str) -> Result<usize, PathError> {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() && self.i - start < 6 {
            self.i += 1;
        }
        let digits = &self.s[start..self.i];
        match digits.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => {
                self.i = start;
                Err(self.fail(expected))
            }
        }
    }

    /// An optional `[n]` or `[*]`.
    fn index(&mut self) -> Result<Index, PathError> {
        if !self.eat(b'[') {
            return Ok(Index::Nth(1));
        }
        let idx = if self.eat(b'*') {
            Index::All
        } else {
            Index::Nth(self.number("an index from 1 or *")?)
        };
        if !self.eat(b']') {
            return Err(self.fail("]"));
        }
        Ok(idx)
    }

    /// `field[rep].comp.sub` to the end of the text.
    fn rest(mut self, name: [u8; 3], segment_index: Index) -> Result<Path, PathError> {
        let c = &mut self;
        let field = c.number("a field number from 1")?;
        let repetition = c.index()?;
        let mut component = None;
        let mut subcomponent = None;
        if c.eat(b'.') {
            component = Some(c.number("a component number from 1")?);
            if c.eat(b'.') {
                subcomponent = Some(c.number("a subcomponent number from 1")?);
            }
        }
        if c.i != c.b.len() {
            return Err(c.fail("end of path"));
        }
        Ok(Path {
            segment: name,
            segment_index,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

impl Path {
    /// Parses a path such as `PID-3[2].4.1`.
    pub fn parse(s: &str) -> Result<Path, PathError> {
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        let mut c = Cursor {
            s,
            b: s.as_bytes(),
            i: 0,
        };
        let name = match c.b.get(..3) {
            Some(&[a, b, d])
                if a.is_ascii_uppercase()
                    && (b.is_ascii_uppercase() || b.is_ascii_digit())
                    && (d.is_ascii_uppercase() || d.is_ascii_digit()) =>
            {
                [a, b, d]
            }
            _ => return Err(c.fail("a segment name such as PID")),
        };
        c.i = 3;
        let segment_index = c.index()?;
        if !c.eat(b'-') {
            return Err(c.fail("- and a field number"));
        }
        c.rest(name, segment_index)
    }

    /// Parses the part of a path after `SEG[n]-` (`3[2].4.1`) for the segment `name`
    /// (occurrence `segment_index`): what a script reading a segment it holds (`seg["3.1"]`)
    /// names, without formatting and parsing a whole path.
    pub fn parse_field_path(
        name: [u8; 3],
        segment_index: Index,
        rel: &str,
    ) -> Result<Path, PathError> {
        if rel.is_empty() {
            return Err(PathError::Empty);
        }
        Cursor {
            s: rel,
            b: rel.as_bytes(),
            i: 0,
        }
        .rest(name, segment_index)
    }

    /// The segment name, e.g. `PID`.
    pub fn segment(&self) -> &str {
        // The name is checked ASCII at parse time.
        std::str::from_utf8(&self.segment).unwrap_or("???")
    }

    /// Which occurrence of the segment (`OBX[3]`), default the first.
    pub fn segment_index(&self) -> Index {
        self.segment_index
    }

    /// The field number, counted as the standard does (MSH-1 is the field separator).
    pub fn field(&self) -> usize {
        self.field
    }

    /// Which repetition of the field, default the first.
    pub fn repetition(&self) -> Index {
        self.repetition
    }

    /// The component, if the path goes below the field.
    pub fn component(&self) -> Option<usize> {
        self.component
    }

    /// The subcomponent, if the path goes below the component.
    pub fn subcomponent(&self) -> Option<usize> {
        self.subcomponent
    }

    /// The same path with another field repetition (`PID-3` → `PID-3[*]`).
    pub fn with_repetition(&self, repetition: Index) -> Path {
        Path {
            repetition,
            ..self.clone()
        }
    }

    /// Whether the path has a `[*]`.
    pub fn has_wildcard(&self) -> bool {
        self.segment_index == Index::All || self.repetition == Index::All
    }

    pub(super) fn segment_bytes(&self) -> &[u8; 3] {
        &self.segment
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Path, PathError> {
        Path::parse(s)
    }
}

impl fmt::Display for Path {
    /// Canonical form: indices equal to 1 are left out (`PID-3.1`, `OBX[3]-5`, `PID-3[*]`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn idx(f: &mut fmt::Formatter<'_>, i: Index) -> fmt::Result {
            match i {
                Index::Nth(1) => Ok(()),
                Index::Nth(n) => write!(f, "[{n}]"),
                Index::All => f.write_str("[*]"),
            }
        }
        f.write_str(self.segment())?;
        idx(f, self.segment_index)?;
        write!(f, "-{}", self.field)?;
        idx(f, self.repetition)?;
        if let Some(c) = self.component {
            write!(f, ".{c}")?;
        }
        if let Some(s) = self.subcomponent {
            write!(f, ".{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let p = Path::parse("PID-3").unwrap();
        assert_eq!(
            (p.segment(), p.segment_index(), p.field(), p.repetition()),
            ("PID", Index::Nth(1), 3, Index::Nth(1))
        );
        assert_eq!((p.component(), p.subcomponent()), (None, None));
        let p: Path = "PID-3[2].4.1".parse().unwrap();
        assert_eq!(p.repetition(), Index::Nth(2));
        assert_eq!((p.component(), p.subcomponent()), (Some(4), Some(1)));
        let p = Path::parse("OBX[3]-5").unwrap();
        assert_eq!(p.segment_index(), Index::Nth(3));
        let p = Path::parse("MSH-9.2").unwrap();
        assert_eq!((p.field(), p.component()), (9, Some(2)));
        let p = Path::parse("PID-3[*]").unwrap();
        assert!(p.has_wildcard() && p.repetition() == Index::All);
        let p = Path::parse("ZP1[*]-2.1").unwrap();
        assert_eq!(p.segment_index(), Index::All);
        assert_eq!(Index::All.first_or_nth(), 1);
    }

    #[test]
    fn display_is_canonical() {
        for (s, canon) in [
            ("PID-3", "PID-3"),
            ("PID[1]-3[1].1", "PID-3.1"),
            ("PID-3[2].4.1", "PID-3[2].4.1"),
            ("OBX[3]-5", "OBX[3]-5"),
            ("OBX[*]-5[*]", "OBX[*]-5[*]"),
        ] {
            assert_eq!(Path::parse(s).unwrap().to_string(), canon);
            assert_eq!(Path::parse(canon).unwrap(), Path::parse(s).unwrap());
        }
    }

    #[test]
    fn errors() {
        assert_eq!(Path::parse(""), Err(PathError::Empty));
        for (s, pos) in [
            ("pid-3", 1),
            ("PI", 1),
            ("1ID-3", 1),
            ("PID", 4),
            ("PID3", 4),
            ("PID-", 5),
            ("PID-0", 5),
            ("PID-x", 5),
            ("PID-3.", 7),
            ("PID-3.0", 7),
            ("PID-3.1.", 9),
            ("PID-3.1.1.1", 10),
            ("PID-3[", 7),
            ("PID-3[0]", 7),
            ("PID-3[2", 8),
            ("PID-3[-1]", 7),
            ("OBX[]-5", 5),
            ("PID-3 ", 6),
            ("PID-+3", 5),
            ("PID-1234567", 11),
            ("PIDé-3", 4),
        ] {
            match Path::parse(s) {
                Err(PathError::Syntax { position, path, .. }) => {
                    assert_eq!((position, path.as_str()), (pos, s), "{s}")
                }
                other => panic!("{s}: {other:?}"),
            }
        }
    }
}
