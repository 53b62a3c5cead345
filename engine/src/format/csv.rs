//! CSV flat files: a streaming reader with a hard row-size limit, and the per-row form the
//! journal keeps.
//!
//! A file becomes one journaled message per row. [`CsvReader`] reads any `std::io::Read` through
//! a fixed buffer (64 KiB) with `csv-core`'s state machine, writing each row's fields into one
//! buffer of `max_row_bytes`: memory is bounded by the options, not by the file, so a 1 GB file
//! streams in a few MiB. A row past the limit (or an unclosed quote that swallows the rest of
//! the file) is an error for that row with its line number; reading goes on with the next row.
//!
//! Each row is journaled standalone as its header line plus the row, re-quoted
//! ([`row_bytes`]), so a journaled row can be re-run without the file: [`to_script`] parses it
//! back into the map a script sees as `msg`.

use std::io::{BufRead, BufReader, Read};

use csv_core::{ReadRecordResult, ReaderBuilder};
use rhai::{Dynamic, ImmutableString, Map};
use serde::{Deserialize, Deserializer, Serialize};

/// How a channel's files are read: the channel's `[csv]` table.
///
/// ```toml
/// [csv]
/// delimiter = ";"        # one ASCII character; "\t" for TSV
/// quote = "\""
/// has_header = true      # false: fields are named "1", "2", ...
/// max_row_bytes = 1048576
/// encoding = "latin1"   # the file's bytes; default "utf-8"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    #[serde(deserialize_with = "one_ascii_char", serialize_with = "as_char")]
    pub delimiter: u8,
    #[serde(deserialize_with = "one_ascii_char", serialize_with = "as_char")]
    pub quote: u8,
    pub has_header: bool,
    /// The largest row (its fields' bytes) accepted; bounds the reader's memory.
    pub max_row_bytes: usize,
    /// The most fields a row may have.
    pub max_fields: usize,
    /// How the file's bytes are text. Many lab and billing systems still write Latin-1
    /// (ISO-8859-1); their rows with accented names are refused as not UTF-8 unless this says
    /// so. Journaled rows are always UTF-8.
    pub encoding: CsvEncoding,
}

impl CsvEncoding {
    /// The encoding a `Content-Type`'s `charset` parameter names (`text/csv;
    /// charset=ISO-8859-1`); `Ok(None)` without one. `Err` with the charset as sent when it
    /// names one the reader cannot decode: read as the channel's encoding instead, its rows
    /// would fail one by one as "not UTF-8" although the sender said what they are.
    pub fn from_content_type(content_type: &str) -> Result<Option<CsvEncoding>, String> {
        let Some(charset) = content_type.split(';').skip(1).find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| value.trim().trim_matches('"').to_string())
        }) else {
            return Ok(None);
        };
        match charset.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" | "us-ascii" => Ok(Some(CsvEncoding::Utf8)),
            "iso-8859-1" | "iso8859-1" | "latin1" | "latin-1" => Ok(Some(CsvEncoding::Latin1)),
            _ => Err(charset),
        }
    }
}

/// The character encoding of a CSV file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CsvEncoding {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8", alias = "UTF-8")]
    Utf8,
    /// ISO-8859-1: every byte is the character of the same number.
    #[serde(
        rename = "latin1",
        alias = "latin-1",
        alias = "iso-8859-1",
        alias = "ISO-8859-1"
    )]
    Latin1,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            delimiter: b',',
            quote: b'"',
            has_header: true,
            max_row_bytes: 1024 * 1024,
            max_fields: 4096,
            encoding: CsvEncoding::Utf8,
        }
    }
}

fn one_ascii_char<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_bytes() {
        [b] if b.is_ascii() && *b != b'\n' && *b != b'\r' => Ok(*b),
        _ => Err(serde::de::Error::custom(format!(
            "expected one ASCII character (not a newline), got {s:?}"
        ))),
    }
}

fn as_char<S: serde::Serializer>(b: &u8, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&(*b as char).to_string())
}

/// What went wrong, with the 1-based line where the row starts.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("reading the file: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: the row is longer than {max} bytes (max_row_bytes; an unclosed quote makes a row run on)")]
    RowTooLong { line: u64, max: usize },
    #[error("line {line}: more than {max} fields (max_fields)")]
    TooManyFields { line: u64, max: usize },
    #[error("line {line}: {found} fields where the header has {expected}{}", run_on(*line, *last_line))]
    FieldCount {
        line: u64,
        /// The line the row ends on: past `line` when a quoted field holds line breaks (an
        /// unclosed quote swallows the rows after it, which the sender must be told).
        last_line: u64,
        expected: usize,
        found: usize,
    },
    #[error("line {line}, field {field}: not UTF-8 (a Latin-1 file? set `encoding = \"latin1\"` in the channel's [csv])")]
    NotUtf8 { line: u64, field: usize },
    #[error("line {line}: header {message}")]
    Header { line: u64, message: String },
    #[error("the file has no header row")]
    NoHeader,
    #[error("a journaled row must be a header line and one row, found {0} rows")]
    NotOneRow(usize),
}

/// The note on a bad row that spans lines.
fn run_on(line: u64, last_line: u64) -> String {
    if last_line > line {
        format!(" (the row runs on to line {last_line}: an unclosed quote? the rows it swallowed are not journaled)")
    } else {
        String::new()
    }
}

impl CsvError {
    /// The 1-based line the error is about, when it is about one.
    pub fn line(&self) -> Option<u64> {
        match self {
            CsvError::RowTooLong { line, .. }
            | CsvError::TooManyFields { line, .. }
            | CsvError::FieldCount { line, .. }
            | CsvError::NotUtf8 { line, .. }
            | CsvError::Header { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The same problem met in the header row: a [`CsvError::Header`], which ends the file
    /// (a row error there would be journaled as one failed row and the file's rows dropped).
    fn in_header(self) -> CsvError {
        let Some(line) = self.line() else {
            return self;
        };
        let message = match self {
            CsvError::RowTooLong { max, .. } => {
                format!("row is longer than {max} bytes (max_row_bytes)")
            }
            CsvError::TooManyFields { max, .. } => {
                format!("has more than {max} fields (max_fields)")
            }
            CsvError::NotUtf8 { field, .. } => format!(
                "column {field} is not UTF-8 (a Latin-1 file? set `encoding = \"latin1\"` in \
                 the channel's [csv], or send it as `text/csv; charset=ISO-8859-1`)"
            ),
            other => return other,
        };
        CsvError::Header { line, message }
    }

    /// Does reading go on after this error? (A bad row is skipped; a broken stream or header
    /// ends the file.)
    pub fn is_row_error(&self) -> bool {
        matches!(
            self,
            CsvError::RowTooLong { .. }
                | CsvError::TooManyFields { .. }
                | CsvError::FieldCount { .. }
                | CsvError::NotUtf8 { .. }
        )
    }
}

/// One row: where it starts and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRecord {
    /// 1-based line of the row's first character in the file (lines end at `\n`; old Mac
    /// files ending rows with a bare `\r` count as one line).
    pub line: u64,
    pub fields: Vec<String>,
}

/// The size of the read buffer.
const READ_BUFFER: usize = 64 * 1024;

/// Streams rows from a reader. Iterate it: `Some(Err(e))` with `e.is_row_error()` is one bad
/// row (go on); any other error ends the file.
pub struct CsvReader<R: Read> {
    input: BufReader<R>,
    core: csv_core::Reader,
    options: CsvOptions,
    headers: Option<Vec<String>>,
    /// The current row's field bytes, `max_row_bytes` long, never grown.
    out: Vec<u8>,
    /// Field end offsets into `out`.
    ends: Vec<usize>,
    /// Newlines consumed so far (the next row starts after them).
    newlines: u64,
    finished: bool,
}

impl<R: Read> CsvReader<R> {
    pub fn new(input: R, options: &CsvOptions) -> CsvReader<R> {
        Self::with_buffer(input, options, READ_BUFFER)
    }

    /// With a given read buffer size (tests use tiny ones to cross every boundary).
    pub fn with_buffer(input: R, options: &CsvOptions, buffer: usize) -> CsvReader<R> {
        let core = ReaderBuilder::new()
            .delimiter(options.delimiter)
            .quote(options.quote)
            .build();
        CsvReader {
            input: BufReader::with_capacity(buffer.max(1), input),
            core,
            options: options.clone(),
            headers: None,
            out: vec![0; options.max_row_bytes.max(1)],
            ends: vec![0; 64.min(options.max_fields.max(1))],
            newlines: 0,
            finished: false,
        }
    }

    /// The header row, read now if it was not yet. Without a header row (`has_header = false`)
    /// the columns are named `1`, `2`, ... once the first record is read; empty before.
    pub fn headers(&mut self) -> Result<&[String], CsvError> {
        if self.headers.is_none() && self.options.has_header {
            // A header that cannot be read is the file's error, not one bad row: without
            // names, no row after it can be journaled.
            let row = match self.read_row() {
                Ok(Some(row)) => row,
                Ok(None) => return Err(CsvError::NoHeader),
                Err(e) => return Err(e.in_header()),
            };
            let line = row.line;
            let names = check_headers(row)?;
            if let [only] = names.as_slice() {
                if let Some(other) = another_delimiter(only, self.options.delimiter) {
                    return Err(CsvError::Header {
                        line,
                        message: format!(
                            "is one column whose name holds {:?}: the file looks delimited by \
                             {:?}, not by the channel's [csv] delimiter {:?}",
                            other as char, other as char, self.options.delimiter as char
                        ),
                    });
                }
            }
            self.headers = Some(names);
        }
        Ok(self.headers.as_deref().unwrap_or_default())
    }

    /// Reads one row's fields; `None` at the end.
    fn read_row(&mut self) -> Result<Option<CsvRecord>, CsvError> {
        let (mut nout, mut nend) = (0usize, 0usize);
        let mut skipping = false;
        // The line the row starts on: blank lines (and the `\n` of a `\r\n` the state machine
        // ended the last row on) are skipped here, so the first byte it gets is the row's.
        let mut line = None;
        loop {
            let mut input = self.input.fill_buf()?;
            if line.is_none() {
                let blank = input
                    .iter()
                    .take_while(|b| **b == b'\n' || **b == b'\r')
                    .count();
                if blank > 0 {
                    self.newlines += input[..blank].iter().filter(|b| **b == b'\n').count() as u64;
                    self.input.consume(blank);
                    input = self.input.fill_buf()?;
                    if !input.is_empty() {
                        continue;
                    }
                }
                line = Some(self.newlines + 1);
            }
            let (res, nin, o, e) = if skipping {
                // Past the limit: parse into scratch space until the row ends.
                let mut scratch = [0u8; 4096];
                let mut scratch_ends = [0usize; 64];
                self.core
                    .read_record(input, &mut scratch, &mut scratch_ends)
            } else {
                self.core
                    .read_record(input, &mut self.out[nout..], &mut self.ends[nend..])
            };
            self.newlines += input[..nin].iter().filter(|b| **b == b'\n').count() as u64;
            self.input.consume(nin);
            if !skipping {
                nout += o;
                nend += e;
            }
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull if skipping => {}
                ReadRecordResult::OutputFull => skipping = true,
                ReadRecordResult::OutputEndsFull => {
                    if self.ends.len() >= self.options.max_fields {
                        skipping = true;
                        nend = usize::MAX;
                    } else {
                        let grown = (self.ends.len() * 2).min(self.options.max_fields);
                        self.ends.resize(grown, 0);
                    }
                }
                ReadRecordResult::Record => break,
                ReadRecordResult::End => {
                    self.finished = true;
                    return Ok(None);
                }
            }
        }
        let line = line.unwrap_or(self.newlines + 1);
        if skipping {
            return Err(if nend == usize::MAX {
                CsvError::TooManyFields {
                    line,
                    max: self.options.max_fields,
                }
            } else {
                CsvError::RowTooLong {
                    line,
                    max: self.options.max_row_bytes,
                }
            });
        }
        let mut fields = Vec::with_capacity(nend);
        let mut start = 0;
        for (i, end) in self.ends[..nend].iter().enumerate() {
            let bytes = &self.out[start..*end];
            let text = match self.options.encoding {
                CsvEncoding::Utf8 => std::str::from_utf8(bytes)
                    .map_err(|_| CsvError::NotUtf8 { line, field: i + 1 })?
                    .to_owned(),
                CsvEncoding::Latin1 => bytes.iter().map(|&b| char::from(b)).collect(),
            };
            fields.push(text);
            start = *end;
        }
        Ok(Some(CsvRecord { line, fields }))
    }

    /// The next data row, checked against the header's field count.
    pub fn next_record(&mut self) -> Option<Result<CsvRecord, CsvError>> {
        if self.finished {
            return None;
        }
        if self.options.has_header && self.headers.is_none() {
            if let Err(e) = self.headers() {
                self.finished = true;
                return Some(Err(e));
            }
        }
        let record = match self.read_row() {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                if !e.is_row_error() {
                    self.finished = true;
                }
                return Some(Err(e));
            }
        };
        if self.headers.is_none() {
            // No header: the first row fixes the field count and names.
            self.headers = Some((1..=record.fields.len()).map(|i| i.to_string()).collect());
        }
        let expected = self.headers.as_ref().map_or(0, Vec::len);
        if record.fields.len() != expected {
            // Line breaks inside fields (a file's last one, swallowed too, starts no line).
            let breaks: usize = record
                .fields
                .iter()
                .map(|f| f.trim_end_matches(['\r', '\n']).matches('\n').count())
                .sum();
            return Some(Err(CsvError::FieldCount {
                line: record.line,
                last_line: record.line + breaks as u64,
                expected,
                found: record.fields.len(),
            }));
        }
        Some(Ok(record))
    }

    /// The header once known (after the first record without a header row).
    pub fn known_headers(&self) -> Option<&[String]> {
        self.headers.as_deref()
    }
}

impl<R: Read> Iterator for CsvReader<R> {
    type Item = Result<CsvRecord, CsvError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record()
    }
}

fn check_headers(row: CsvRecord) -> Result<Vec<String>, CsvError> {
    let mut names: Vec<String> = Vec::with_capacity(row.fields.len());
    for (i, name) in row.fields.into_iter().enumerate() {
        let name = name.trim().to_owned();
        if name.is_empty() {
            return Err(CsvError::Header {
                line: row.line,
                message: format!("column {} has no name", i + 1),
            });
        }
        if names.contains(&name) {
            return Err(CsvError::Header {
                line: row.line,
                message: format!("column {name:?} appears twice"),
            });
        }
        names.push(name);
    }
    Ok(names)
}

/// The delimiter a one-column header looks split by, when it is not the configured one: a
/// `;` or tab file sent to a `,` channel reads as one column, and then every row would fail
/// as "N fields where the header has 1" with nothing saying why.
fn another_delimiter(only_column: &str, configured: u8) -> Option<u8> {
    [b';', b'\t', b'|', b',']
        .into_iter()
        .find(|&d| d != configured && only_column.as_bytes().contains(&d))
}

/// A row as the script's `msg`: a map from header to value (all strings).
pub fn row_to_script(headers: &[String], record: &CsvRecord) -> Dynamic {
    let mut m = Map::new();
    for (h, v) in headers.iter().zip(&record.fields) {
        m.insert(
            h.as_str().into(),
            Dynamic::from(ImmutableString::from(v.as_str())),
        );
    }
    Dynamic::from_map(m)
}

/// A row as standalone bytes for the journal: the header line and the row, quoted as needed
/// with the channel's delimiter and quote, `\n`-terminated.
pub fn row_bytes(headers: &[String], fields: &[String], options: &CsvOptions) -> Vec<u8> {
    let mut w = ::csv::WriterBuilder::new()
        .delimiter(options.delimiter)
        .quote(options.quote)
        .terminator(::csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail, and both lines have the same field count.
    let _ = w.write_record(headers);
    let _ = w.write_record(fields);
    w.into_inner().unwrap_or_default()
}

/// A row ready for the journal: where it was in the file, and its standalone bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// 1-based line of the row in the file (for the transaction's origin and error messages).
    pub line: u64,
    /// The header line and the row ([`row_bytes`]); [`to_script`] reads it back.
    pub bytes: Vec<u8>,
}

/// Streams a file as journal entries, one per row. Errors are [`CsvReader`]'s: a bad row
/// (`is_row_error()`) is one item and reading goes on; any other error is the last item.
pub fn journal_rows<R: Read>(
    input: R,
    options: &CsvOptions,
) -> impl Iterator<Item = Result<JournalRow, CsvError>> {
    let mut reader = CsvReader::new(input, options);
    let options = options.clone();
    std::iter::from_fn(move || {
        let record = reader.next_record()?;
        Some(record.map(|r| JournalRow {
            line: r.line,
            bytes: row_bytes(
                reader.known_headers().unwrap_or_default(),
                &r.fields,
                &options,
            ),
        }))
    })
}

/// Parses a journaled row ([`row_bytes`]) back: the header and the row (its line is 2).
pub fn parse_row(bytes: &[u8], options: &CsvOptions) -> Result<(Vec<String>, CsvRecord), CsvError> {
    let options = CsvOptions {
        has_header: true,
        max_row_bytes: options.max_row_bytes.max(bytes.len()),
        // Rows are journaled as UTF-8 whatever the file was.
        encoding: CsvEncoding::Utf8,
        ..options.clone()
    };
    let mut reader = CsvReader::new(bytes, &options);
    let headers = reader.headers()?.to_vec();
    let mut rows = Vec::new();
    for r in reader.by_ref() {
        rows.push(r?);
    }
    if rows.len() != 1 {
        return Err(CsvError::NotOneRow(rows.len()));
    }
    let row = rows.pop().ok_or(CsvError::NotOneRow(0))?;
    Ok((headers, row))
}

/// The script's `msg` for a journaled row.
pub fn to_script(bytes: &[u8], options: &CsvOptions) -> Result<Dynamic, CsvError> {
    let (headers, row) = parse_row(bytes, options)?;
    Ok(row_to_script(&headers, &row))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(
        input: &str,
        options: &CsvOptions,
        buffer: usize,
    ) -> Vec<Result<CsvRecord, String>> {
        CsvReader::with_buffer(input.as_bytes(), options, buffer)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    fn rec(line: u64, fields: &[&str]) -> Result<CsvRecord, String> {
        Ok(CsvRecord {
            line,
            fields: fields.iter().map(|s| s.to_string()).collect(),
        })
    }

    #[test]
    fn quoting_crlf_and_embedded_newlines() {
        let input =
            "mrn,note,value\r\n1,\"a, b\",5\r\n2,\"line one\r\nline \"\"two\"\"\",6\r\n3,plain,7";
        for buffer in [1, 2, 7, 64 * 1024] {
            let rows = read_all(input, &CsvOptions::default(), buffer);
            assert_eq!(
                rows,
                vec![
                    rec(2, &["1", "a, b", "5"]),
                    rec(3, &["2", "line one\r\nline \"two\"", "6"]),
                    rec(5, &["3", "plain", "7"]),
                ],
                "buffer {buffer}"
            );
        }
    }

    #[test]
    fn a_content_type_charset_names_the_encoding() {
        let of = CsvEncoding::from_content_type;
        assert_eq!(of("text/csv"), Ok(None));
        assert_eq!(
            of("text/csv; charset=ISO-8859-1"),
            Ok(Some(CsvEncoding::Latin1))
        );
        assert_eq!(
            of("text/csv;Charset=\"utf-8\""),
            Ok(Some(CsvEncoding::Utf8))
        );
        assert_eq!(
            of("text/csv; header=present; charset=latin1"),
            Ok(Some(CsvEncoding::Latin1))
        );
        // Named, and not one the reader decodes: refused with the name as sent.
        assert_eq!(of("text/csv; charset=Shift_JIS"), Err("Shift_JIS".into()));
        assert_eq!(
            of("text/csv; charset=\"windows-1252\""),
            Err("windows-1252".into())
        );
    }

    #[test]
    fn an_unclosed_quote_says_which_rows_it_swallowed() {
        let input = "a,b,c\n1,\"x,2\n3,y,4\n5,z,6\n";
        let rows = read_all(input, &CsvOptions::default(), 64);
        assert_eq!(rows.len(), 1, "{rows:?}");
        let e = rows[0].as_ref().unwrap_err();
        assert!(
            e.starts_with("line 2: 2 fields where the header has 3 (the row runs on to line 4: an unclosed quote?"),
            "{e}"
        );
        // A row on one line says nothing more.
        let rows = read_all("a,b\n1\n", &CsvOptions::default(), 64);
        assert_eq!(
            rows[0],
            Err("line 2: 1 fields where the header has 2".into())
        );
    }

    #[test]
    fn a_latin1_file_is_read_as_latin1_and_journaled_as_utf8() {
        // "Müller,Zoé" in ISO-8859-1.
        let file = b"mrn,family,given\n1,M\xfcller,Zo\xe9\n";
        let utf8 = CsvReader::new(&file[..], &CsvOptions::default())
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(utf8.contains("encoding = \"latin1\""), "{utf8}");

        let options: CsvOptions = toml::from_str("encoding = \"latin1\"").unwrap();
        let row = journal_rows(&file[..], &options).next().unwrap().unwrap();
        assert_eq!(row.bytes, "mrn,family,given\n1,Müller,Zoé\n".as_bytes());
        // The script reads the journaled (UTF-8) row with the channel's options.
        let msg = to_script(&row.bytes, &options).unwrap().cast::<Map>();
        assert_eq!(msg["family"].clone().into_string().unwrap(), "Müller");
        assert_eq!(msg["given"].clone().into_string().unwrap(), "Zoé");
        assert!(toml::from_str::<CsvOptions>("encoding = \"ebcdic\"").is_err());
    }

    #[test]
    fn delimiter_quote_and_no_header() {
        let options = CsvOptions {
            delimiter: b';',
            quote: b'\'',
            has_header: false,
            ..CsvOptions::default()
        };
        let mut r = CsvReader::new("a;'b;c'\nd;e\n".as_bytes(), &options);
        assert_eq!(r.next().unwrap().unwrap().fields, vec!["a", "b;c"]);
        assert_eq!(r.known_headers().unwrap(), ["1", "2"]);
        assert_eq!(r.next().unwrap().unwrap().line, 2);
        assert!(r.next().is_none());

        let t: CsvOptions = toml::from_str("delimiter = \"\\t\"\nhas_header = false").unwrap();
        assert_eq!(t.delimiter, b'\t');
        assert!(!t.has_header);
        assert!(toml::from_str::<CsvOptions>("delimiter = \";;\"").is_err());
        assert!(toml::from_str::<CsvOptions>("delim = \";\"").is_err());
    }

    #[test]
    fn bad_rows_are_errors_and_reading_goes_on() {
        let options = CsvOptions {
            max_row_bytes: 16,
            ..CsvOptions::default()
        };
        let input = "a,b\n1,2\n1,2,3\nxxxxxxxxxx,yyyyyyyyyyyy\n4\n5,6\n";
        for buffer in [3, 1024] {
            let rows = read_all(input, &options, buffer);
            assert_eq!(rows.len(), 5, "buffer {buffer}: {rows:?}");
            assert_eq!(rows[0], rec(2, &["1", "2"]));
            assert_eq!(
                rows[1],
                Err("line 3: 3 fields where the header has 2".into())
            );
            assert!(rows[2]
                .as_ref()
                .unwrap_err()
                .starts_with("line 4: the row is longer than 16 bytes"));
            assert_eq!(
                rows[3],
                Err("line 5: 1 fields where the header has 2".into())
            );
            assert_eq!(rows[4], rec(6, &["5", "6"]));
        }
        // An unclosed quote runs to the end of the file: one error, not a silent giant field.
        let rows = read_all("a,b,c\n1,\"open,2\n3,4,5\n", &CsvOptions::default(), 8);
        assert_eq!(rows.len(), 1);
        assert!(rows[0].is_err());
    }

    #[test]
    fn headers_must_be_named_once_and_fields_utf8() {
        let rows = read_all("a,a\n1,2\n", &CsvOptions::default(), 64);
        assert_eq!(
            rows,
            vec![Err("line 1: header column \"a\" appears twice".into())]
        );
        let rows = read_all("a,\n1,2\n", &CsvOptions::default(), 64);
        assert!(rows[0]
            .as_ref()
            .unwrap_err()
            .contains("column 2 has no name"));
        let mut r = CsvReader::new(&b"a,b\n1,\xff\n3,4\n"[..], &CsvOptions::default());
        assert!(r
            .next()
            .unwrap()
            .unwrap_err()
            .to_string()
            .starts_with("line 2, field 2: not UTF-8"));
        assert_eq!(r.next().unwrap().unwrap().fields, vec!["3", "4"]);
        let options = CsvOptions {
            max_fields: 3,
            ..CsvOptions::default()
        };
        let rows = read_all("a,b\n1,2,3,4,5,6,7\n8,9\n", &options, 64);
        assert!(matches!(rows[0], Err(ref e) if e.contains("more than 3 fields")));
        assert_eq!(rows[1], rec(3, &["8", "9"]));
    }

    /// A file split by another delimiter than the channel's reads as one column: refused
    /// whole with a header error that names the delimiter it looks split by, not failed row
    /// by row. A genuine one-column file is read.
    #[test]
    fn a_file_with_another_delimiter_is_refused_at_its_header() {
        let options = CsvOptions::default();
        let items: Vec<_> = CsvReader::new(&b"mrn;family\n1;Doe\n2;Roe\n"[..], &options).collect();
        assert_eq!(items.len(), 1, "{items:?}");
        let e = items[0].as_ref().unwrap_err();
        assert!(!e.is_row_error(), "{e}");
        assert!(
            e.to_string()
                .starts_with("line 1: header is one column whose name holds ';'"),
            "{e}"
        );
        let semicolons = CsvOptions {
            delimiter: b';',
            ..CsvOptions::default()
        };
        let items: Vec<_> = CsvReader::new(&b"mrn,family\n1,Doe\n"[..], &semicolons).collect();
        assert!(items[0]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("looks delimited by ','"));

        let rows: Vec<_> = CsvReader::new(&b"mrn\n1\n2\n"[..], &options).collect();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows.iter().all(|r| r.is_ok()), "{rows:?}");
    }

    /// A header row that cannot be read ends the file with a header error (so a source
    /// refuses the file), never one bad "row" after which the data rows are silently dropped.
    #[test]
    fn a_header_that_cannot_be_read_ends_the_file() {
        let small = CsvOptions {
            max_row_bytes: 8,
            max_fields: 2,
            ..CsvOptions::default()
        };
        for (input, options, says) in [
            (
                &b"mrn,Pr\xe9nom\n1,2\n3,4\n"[..],
                CsvOptions::default(),
                "line 1: header column 2 is not UTF-8",
            ),
            (
                &b"mrn,family_name\n1,2\n"[..],
                small.clone(),
                "line 1: header row is longer than 8 bytes",
            ),
            (
                &b"a,b,c\n1,2,3\n"[..],
                small,
                "line 1: header has more than 2 fields",
            ),
        ] {
            let items: Vec<_> = CsvReader::new(input, &options).collect();
            assert_eq!(items.len(), 1, "{items:?}");
            let e = items[0].as_ref().unwrap_err();
            assert!(!e.is_row_error(), "{e}");
            assert!(e.to_string().starts_with(says), "{e}");
        }
    }

    #[test]
    fn a_row_round_trips_through_its_journal_bytes() {
        let headers = vec!["mrn".to_string(), "note".to_string()];
        let fields = vec![
            "MRN 1".to_string(),
            "says \"hi\",\nthen; leaves".to_string(),
        ];
        for options in [
            CsvOptions::default(),
            CsvOptions {
                delimiter: b';',
                ..CsvOptions::default()
            },
        ] {
            let bytes = row_bytes(&headers, &fields, &options);
            let (h, row) = parse_row(&bytes, &options).unwrap();
            assert_eq!(h, headers);
            assert_eq!(row.fields, fields);
            let msg = to_script(&bytes, &options).unwrap();
            let map = msg.cast::<Map>();
            assert_eq!(map["note"].clone().into_string().unwrap(), fields[1]);
        }
        assert!(matches!(
            parse_row(b"a\n1\n2\n", &CsvOptions::default()),
            Err(CsvError::NotOneRow(2))
        ));
        // A file's rows as journal entries: bad rows are items too, with their lines.
        let rows: Vec<_> = journal_rows(
            "a,b\n1,2\n3\n\"4\",\"x\ny\"\n".as_bytes(),
            &CsvOptions::default(),
        )
        .collect();
        assert_eq!(rows.len(), 3);
        let first = rows[0].as_ref().unwrap();
        assert_eq!(
            (first.line, first.bytes.as_slice()),
            (2, &b"a,b\n1,2\n"[..])
        );
        assert!(matches!(rows[1], Err(CsvError::FieldCount { line: 3, .. })));
        let third = rows[2].as_ref().unwrap();
        assert_eq!(third.line, 4);
        assert_eq!(
            parse_row(&third.bytes, &CsvOptions::default())
                .unwrap()
                .1
                .fields,
            ["4", "x\ny"]
        );
    }

    proptest::proptest! {
        #[test]
        fn any_row_round_trips(
            fields in proptest::collection::vec("[ -~\n\r\té]{0,12}", 1..6),
            delimiter in proptest::sample::select(vec![b',', b';', b'\t', b'|']),
        ) {
            let headers: Vec<String> = (1..=fields.len()).map(|i| format!("h{i}")).collect();
            let options = CsvOptions { delimiter, ..CsvOptions::default() };
            let bytes = row_bytes(&headers, &fields, &options);
            let (h, row) = parse_row(&bytes, &options).unwrap();
            proptest::prop_assert_eq!(h, headers);
            proptest::prop_assert_eq!(row.fields, fields);
        }

        #[test]
        fn any_bytes_read_without_panics(
            bytes in proptest::collection::vec(proptest::sample::select(b"a,\"\r\n\xff ".to_vec()), 0..300),
            buffer in 1usize..16,
        ) {
            let options = CsvOptions { max_row_bytes: 32, max_fields: 8, ..CsvOptions::default() };
            let mut last_line = 0;
            for r in CsvReader::with_buffer(&bytes[..], &options, buffer).take(400) {
                let line = match r {
                    Ok(r) => r.line,
                    Err(CsvError::RowTooLong { line, .. } | CsvError::FieldCount { line, .. }
                        | CsvError::NotUtf8 { line, .. } | CsvError::TooManyFields { line, .. }
                        | CsvError::Header { line, .. }) => line,
                    Err(_) => continue,
                };
                // Lines are counted by `\n`: rows split by a bare `\r` share a line number.
                proptest::prop_assert!(line >= last_line.max(1), "line {} after {}", line, last_line);
                last_line = line;
            }
        }
    }

    /// A reader producing `rows` generated rows without holding them.
    struct Generated {
        rows: usize,
        next: usize,
        pending: Vec<u8>,
        at: usize,
    }

    impl Read for Generated {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.at == self.pending.len() {
                if self.next > self.rows {
                    return Ok(0);
                }
                self.pending = if self.next == 0 {
                    b"mrn,family,value,note\n".to_vec()
                } else {
                    format!("M{0},Name{0},{0}.5,\"multi\nline, {0}\"\n", self.next).into_bytes()
                };
                self.next += 1;
                self.at = 0;
            }
            let n = buf.len().min(self.pending.len() - self.at);
            buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    #[test]
    fn streams_a_large_input_through_a_small_buffer() {
        let rows = 200_000;
        let input = Generated {
            rows,
            next: 0,
            pending: Vec::new(),
            at: 0,
        };
        let options = CsvOptions {
            max_row_bytes: 256,
            ..CsvOptions::default()
        };
        let mut reader = CsvReader::with_buffer(input, &options, 1000);
        let mut count = 0;
        let mut last = None;
        for r in reader.by_ref() {
            let r = r.unwrap();
            count += 1;
            last = Some(r);
        }
        assert_eq!(count, rows);
        let last = last.unwrap();
        assert_eq!(last.fields[0], format!("M{rows}"));
        // Two lines per row after the header line.
        assert_eq!(last.line, 2 * rows as u64);
        // The row buffer never grew past its limit.
        assert_eq!(reader.out.len(), 256);
    }
}
