//! The value log: the journal's large values (raw message bodies, transaction records, pipeline
//! steps with their FHIR output) appended to segment files under `<journal>/values/`, while sled
//! keeps a 12-byte [`Ptr`] to each.
//!
//! Why not keep them in sled: sled 0.34 copies a whole leaf node (up to 17 entries) on every
//! insert and holds its pages in memory, so the cost of an insert, and the memory per record,
//! grow with the size of the values. With pointers in sled, an insert copies ~400 bytes instead of
//! ~10 KB (17 bodies or FHIR bundles), and the bodies live in the OS page cache, not the heap.
//!
//! Record layout: `crc32 (4) | value length (4) | kind (1) | key length (1) | key | value`, all
//! little-endian; the crc covers everything after itself. The key is the sled key that points
//! to the record (for a future compaction pass, and a check on read).
//!
//! The log is also the journal's write-ahead log: an ACK waits for one `fdatasync` of the
//! segment, not for sled. Every change the writer makes is a record here (a removal is a
//! tombstone: the kind with [`TOMBSTONE`] set and no value), so sled's pointers and indexes can be
//! rebuilt from the records after the last checkpoint (`writer::replay`); sled itself is
//! flushed every [`CHECKPOINT_EVERY`] with the log position it has reached.
//!
//! One writer appends ([`Appender`], owned by the journal's writer thread) and writes a batch's
//! records before sled gets their pointers. Segments are created full of zeros (the next one
//! by a helper thread while the current one fills), so a write never grows the file and the
//! `fdatasync` an ACK waits for has no file size to journal: 0.15 ms instead of 0.22-0.27 ms
//! here, +25% ingest over 16 connections. The first zero header ends a segment's records. A restart always starts a new segment, so a torn
//! tail is never appended to; replay stops at the first record whose checksum fails (nothing
//! after it was acknowledged: fsyncs are in order). A segment is deleted once no pointer refers
//! to it and a checkpoint has passed it: each segment's live bytes are counted in sled's
//! `segments` tree.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use super::JournalError;

/// Segments are closed past this size (a record larger than it gets a segment of its own).
/// Small enough that compaction, which holds a segment's live records for one commit, stays
/// small, and that space comes back in steps.
pub(crate) const SEGMENT_BYTES: u64 = 16 * 1024 * 1024;

const HEADER_BYTES: usize = 10;

/// Read handles kept open per log (a journal or CDR of many GB has hundreds of segments).
const MAX_OPEN_SEGMENTS: usize = 128;

/// Set on the kind byte of a record that removes its key.
pub(crate) const TOMBSTONE: u8 = 0x80;

/// How often sled is flushed and the replay start point moved up (bounds the work of a replay
/// after a crash, and how long a dead segment waits to be deleted).
pub(crate) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// What a record holds (and so which sled tree points to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Kind {
    Tx = 1,
    Raw = 2,
    Step = 3,
    /// A version of a resource in the embedded CDR (its own log, see `cdr::store`).
    Resource = 4,
    /// The sled operations of one CDR commit: its redo record (see `cdr::store`).
    Commit = 5,
}

impl Kind {
    fn from_byte(byte: u8) -> Option<Kind> {
        match byte & !TOMBSTONE {
            1 => Some(Kind::Tx),
            2 => Some(Kind::Raw),
            3 => Some(Kind::Step),
            4 => Some(Kind::Resource),
            5 => Some(Kind::Commit),
            _ => None,
        }
    }
}

/// A place in the log: records are ordered by it.
pub(crate) type Position = (u32, u32);

/// A position as stored with a checkpoint: segment then offset, big-endian.
pub(crate) fn position_bytes(position: Position) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&position.0.to_be_bytes());
    out[4..].copy_from_slice(&position.1.to_be_bytes());
    out
}

/// A stored checkpoint position back (`None` if it is not 8 bytes).
pub(crate) fn position_from_bytes(bytes: &[u8]) -> Option<Position> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some((
        u32::from_be_bytes(bytes[..4].try_into().ok()?),
        u32::from_be_bytes(bytes[4..].try_into().ok()?),
    ))
}

/// One record found by [`ValueLog::scan`].
pub(crate) struct Scanned {
    pub ptr: Ptr,
    pub kind: Kind,
    pub tombstone: bool,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// Where a record is: segment number, offset of the record, length of the whole record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ptr {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl Ptr {
    pub const BYTES: usize = 12;

    pub fn to_bytes(self) -> [u8; Self::BYTES] {
        let mut out = [0u8; Self::BYTES];
        out[..4].copy_from_slice(&self.segment.to_be_bytes());
        out[4..8].copy_from_slice(&self.offset.to_be_bytes());
        out[8..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    pub fn position(self) -> Position {
        (self.segment, self.offset)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Ptr> {
        if bytes.len() != Self::BYTES {
            return None;
        }
        let word = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
        Some(Ptr {
            segment: word(0),
            offset: word(4),
            len: word(8),
        })
    }
}

fn segment_name(segment: u32) -> String {
    format!("{segment:010}.vlog")
}

/// What a power cut leaves of the log in `dir` when it was last fsynced at `position`: the
/// rest of that segment zeroed (for the tests of the repairs after an unclean stop).
#[cfg(test)]
pub(crate) fn cut_at(dir: &Path, position: Position) {
    use std::os::unix::fs::FileExt;
    let (segment, offset) = position;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(segment_name(segment)))
        .unwrap();
    let len = file.metadata().unwrap().len();
    file.write_all_at(
        &vec![0u8; (len - u64::from(offset)) as usize],
        u64::from(offset),
    )
    .unwrap();
}

fn io_err(e: std::io::Error) -> JournalError {
    JournalError::Io(Arc::new(e))
}

/// Read access to every segment; shared by readers and the writer.
pub(crate) struct ValueLog {
    dir: PathBuf,
    segment_bytes: u64,
    /// Open handles by segment (a reader that finds none opens the file).
    files: RwLock<HashMap<u32, Arc<File>>>,
}

impl ValueLog {
    /// Opens the log in `dir` and starts a new segment for appending (never the tail of an old
    /// one, which a crash may have torn).
    pub fn open(dir: &Path) -> Result<(Arc<ValueLog>, Appender), JournalError> {
        Self::open_sized(dir, SEGMENT_BYTES)
    }

    fn open_sized(
        dir: &Path,
        segment_bytes: u64,
    ) -> Result<(Arc<ValueLog>, Appender), JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let log = Arc::new(ValueLog {
            dir: dir.to_path_buf(),
            segment_bytes,
            files: RwLock::new(HashMap::new()),
        });
        // Segments prepared for a run that has ended.
        for entry in std::fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if path.extension().is_some_and(|e| e == "next") {
                let _ = std::fs::remove_file(path);
            }
        }
        let next = log.segments()?.last().map_or(1, |s| s + 1);
        let appender = Appender::start(log.clone(), next, None)?;
        Ok((log, appender))
    }

    /// Segment numbers on disk, ascending.
    pub fn segments(&self) -> Result<Vec<u32>, JournalError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err)? {
            let name = entry.map_err(io_err)?.file_name();
            if let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".vlog"))
                .and_then(|n| n.parse::<u32>().ok())
            {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    fn path(&self, segment: u32) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    /// Creates segment `segment` under a temporary name, full of zeros and fsynced; the
    /// appender renames it when it gets there.
    /// On a full disk the half-made file is removed again: left behind, it would hold the
    /// last free space that the slots and sled need. Refused at once when the filesystem says
    /// it has not the room (each batch tries again while the disk is full).
    fn prepare(&self, segment: u32) -> std::io::Result<File> {
        static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];
        if crate::data_dir::free_bytes(&self.dir).is_some_and(|free| free < self.segment_bytes) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "no room for a new value-log segment of {} MiB in {}",
                    self.segment_bytes >> 20,
                    self.dir.display()
                ),
            ));
        }
        let path = self.prepared_path(segment);
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(&path)?;
        let filled = (|| {
            let mut written = 0u64;
            while written < self.segment_bytes {
                let n = (self.segment_bytes - written).min(ZEROS.len() as u64) as usize;
                file.write_all_at(&ZEROS[..n], written)?;
                written += n as u64;
            }
            file.sync_all()
        })();
        if let Err(e) = filled {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(file)
    }

    fn prepared_path(&self, segment: u32) -> PathBuf {
        self.dir.join(format!("{}.next", segment_name(segment)))
    }

    fn file(&self, segment: u32) -> Result<Arc<File>, JournalError> {
        if let Some(file) = self.files.read().expect("lock").get(&segment) {
            return Ok(file.clone());
        }
        let file = Arc::new(
            File::open(self.path(segment))
                .map_err(|e| JournalError::Corrupt(format!("value segment {segment}: {e}")))?,
        );
        let mut files = self.files.write().expect("lock");
        if files.len() >= MAX_OPEN_SEGMENTS {
            // Bounded file descriptors for a large store: any handle will do to drop (a later
            // read opens it again).
            if let Some(&victim) = files.keys().find(|&&s| s != segment) {
                files.remove(&victim);
            }
        }
        files.insert(segment, file.clone());
        Ok(file)
    }

    /// The value at `ptr`, checked against its crc and the key that points to it.
    pub fn read(&self, ptr: Ptr, kind: Kind, key: &[u8]) -> Result<Vec<u8>, JournalError> {
        let corrupt = |what: &str| {
            JournalError::Corrupt(format!(
                "value segment {} at {}: {what}",
                ptr.segment, ptr.offset
            ))
        };
        let file = self.file(ptr.segment)?;
        let mut record = vec![0u8; ptr.len as usize];
        file.read_exact_at(&mut record, u64::from(ptr.offset))
            .map_err(|e| corrupt(&e.to_string()))?;
        if record.len() < HEADER_BYTES {
            return Err(corrupt("short record"));
        }
        let crc = u32::from_le_bytes(record[..4].try_into().expect("4 bytes"));
        if crc32fast::hash(&record[4..]) != crc {
            return Err(corrupt("checksum mismatch"));
        }
        let value_len = u32::from_le_bytes(record[4..8].try_into().expect("4 bytes")) as usize;
        let key_len = record[9] as usize;
        if record[8] != kind as u8
            || HEADER_BYTES + key_len + value_len != record.len()
            || &record[HEADER_BYTES..HEADER_BYTES + key_len] != key
        {
            return Err(corrupt("record does not match its pointer"));
        }
        record.drain(..HEADER_BYTES + key_len);
        Ok(record)
    }

    /// Calls `each` with the valid records of `segment` from `offset` on, in order (one at a
    /// time: a segment is never read into memory whole); stops at the end or at the first
    /// record that is torn or fails its checksum. Returns how many it read.
    pub fn scan(
        &self,
        segment: u32,
        offset: u32,
        mut each: impl FnMut(Scanned) -> Result<(), JournalError>,
    ) -> Result<usize, JournalError> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = File::open(self.path(segment)).map_err(io_err)?;
        file.seek(SeekFrom::Start(u64::from(offset)))
            .map_err(io_err)?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut read = 0;
        let mut at = offset;
        loop {
            let mut header = [0u8; HEADER_BYTES];
            if reader.read_exact(&mut header).is_err() {
                break;
            }
            let value_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let key_len = header[9] as usize;
            let Some(kind) = Kind::from_byte(header[8]) else {
                break;
            };
            let body_len = key_len as u64 + u64::from(value_len);
            if u64::from(at) + HEADER_BYTES as u64 + body_len > u64::from(u32::MAX) {
                break;
            }
            let mut body = vec![0u8; body_len as usize];
            if reader.read_exact(&mut body).is_err() {
                break;
            }
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&header[4..]);
            hasher.update(&body);
            if hasher.finalize() != u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) {
                break;
            }
            let len = (HEADER_BYTES as u64 + body_len) as u32;
            let value = body.split_off(key_len);
            each(Scanned {
                ptr: Ptr {
                    segment,
                    offset: at,
                    len,
                },
                kind,
                tombstone: header[8] & TOMBSTONE != 0,
                key: body,
                value,
            })?;
            read += 1;
            at += len;
        }
        Ok(read)
    }

    /// Deletes a segment no pointer refers to any more.
    pub fn remove_segment(&self, segment: u32) -> Result<(), JournalError> {
        self.files.write().expect("lock").remove(&segment);
        match std::fs::remove_file(self.path(segment)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(e)),
            _ => Ok(()),
        }
    }

    /// Bytes in one segment (0 if it is gone).
    pub fn segment_len(&self, segment: u32) -> u64 {
        std::fs::metadata(self.path(segment))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Bytes in all segments.
    pub fn size_on_disk(&self) -> Result<u64, JournalError> {
        let mut total = 0;
        for segment in self.segments()? {
            total += std::fs::metadata(self.path(segment))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        Ok(total)
    }
}

/// The one appender (the journal writer's): buffers a batch's records, writes them with one
/// `write`, and hands the flusher the files to fsync.
pub(crate) struct Appender {
    log: Arc<ValueLog>,
    segment: u32,
    file: Arc<File>,
    /// Bytes in the segment, written or buffered.
    len: u64,
    buf: Vec<u8>,
    /// Segments written to since the last [`Appender::take_unsynced`] (the flusher's).
    unsynced: Vec<(u32, Arc<File>)>,
    /// Segments written to since the last [`Appender::take_touched`] (the checkpoint's).
    touched: Vec<(u32, Arc<File>)>,
    /// The next segment, being zero-filled by a helper thread.
    next: Option<std::thread::JoinHandle<std::io::Result<File>>>,
}

impl Appender {
    /// Starts appending to `segment`, from the file prepared for it if there is one, and has
    /// the one after it prepared.
    fn start(
        log: Arc<ValueLog>,
        segment: u32,
        prepared: Option<std::thread::JoinHandle<std::io::Result<File>>>,
    ) -> Result<Appender, JournalError> {
        let file = match prepared.and_then(|p| p.join().ok()).and_then(Result::ok) {
            Some(file) => file,
            None => log.prepare(segment).map_err(io_err)?,
        };
        if log.path(segment).exists() {
            return Err(JournalError::Corrupt(format!(
                "value segment {segment} exists already"
            )));
        }
        std::fs::rename(log.prepared_path(segment), log.path(segment)).map_err(io_err)?;
        let file = Arc::new(file);
        log.files
            .write()
            .expect("lock")
            .insert(segment, file.clone());
        // The new file's directory entry must survive a crash too.
        if let Ok(dir) = File::open(&log.dir) {
            let _ = dir.sync_all();
        }
        let preparing = log.clone();
        let next = std::thread::Builder::new()
            .name("vlog-prepare".into())
            .spawn(move || preparing.prepare(segment + 1))
            .ok();
        Ok(Appender {
            log,
            segment,
            file,
            len: 0,
            buf: Vec::new(),
            unsynced: Vec::new(),
            touched: Vec::new(),
            next,
        })
    }

    /// The log this appends to.
    pub fn log(&self) -> Arc<ValueLog> {
        self.log.clone()
    }

    /// The segment being appended to (never deleted, whatever its count says).
    pub fn active_segment(&self) -> u32 {
        self.segment
    }

    /// Where the next record goes.
    pub fn position(&self) -> Position {
        (self.segment, self.len.min(u64::from(u32::MAX)) as u32)
    }

    /// Buffers one record; its pointer is valid once [`Appender::write_out`] has run.
    pub fn push(&mut self, kind: Kind, key: &[u8], value: &[u8]) -> Result<Ptr, JournalError> {
        self.push_record(kind as u8, key, value)
    }

    /// Buffers the removal of `key` (for replay).
    pub fn push_tombstone(&mut self, kind: Kind, key: &[u8]) -> Result<Ptr, JournalError> {
        self.push_record(kind as u8 | TOMBSTONE, key, &[])
    }

    fn push_record(&mut self, kind: u8, key: &[u8], value: &[u8]) -> Result<Ptr, JournalError> {
        let too_big = || JournalError::Corrupt(format!("value of {} bytes", value.len()));
        let key_len = u8::try_from(key.len())
            .map_err(|_| JournalError::Corrupt(format!("value-log key of {} bytes", key.len())))?;
        let record_len = HEADER_BYTES + key.len() + value.len();
        let record_len_u32 = u32::try_from(record_len).map_err(|_| too_big())?;
        if self.len > 0 && self.len + record_len as u64 > self.log.segment_bytes {
            self.rotate()?;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0u8; 4]);
        self.buf.extend_from_slice(
            &u32::try_from(value.len())
                .map_err(|_| too_big())?
                .to_le_bytes(),
        );
        self.buf.push(kind);
        self.buf.push(key_len);
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(value);
        let crc = crc32fast::hash(&self.buf[start + 4..]);
        self.buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
        let ptr = Ptr {
            segment: self.segment,
            offset: u32::try_from(self.len).map_err(|_| too_big())?,
            len: record_len_u32,
        };
        self.len += record_len as u64;
        Ok(ptr)
    }

    fn rotate(&mut self) -> Result<(), JournalError> {
        self.write_out()?;
        let next = Appender::start(self.log.clone(), self.segment + 1, self.next.take())?;
        let unsynced = std::mem::take(&mut self.unsynced);
        let touched = std::mem::take(&mut self.touched);
        *self = next;
        self.unsynced = unsynced;
        self.touched = touched;
        Ok(())
    }

    /// Writes what is buffered (one `write` per batch, not durable until fsynced).
    pub fn write_out(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Into the zeros, at the end of what is written: the file never grows (unless one
        // record is larger than a segment).
        let at = self.len - self.buf.len() as u64;
        if let Err(e) = self.file.write_all_at(&self.buf, at) {
            // Part of the batch may be on disk: nothing more goes after it (the next push
            // starts a new segment); the batch fails, and replay stops at the torn record.
            self.buf.clear();
            self.len = self.log.segment_bytes;
            return Err(io_err(e));
        }
        self.buf.clear();
        for list in [&mut self.unsynced, &mut self.touched] {
            if list.last().is_none_or(|(s, _)| *s != self.segment) {
                list.push((self.segment, self.file.clone()));
            }
        }
        Ok(())
    }

    /// Takes back what was written from `start` on (a batch that failed: its records must
    /// never be replayed). The segment `start` is in is cut there and the segments begun after
    /// it are deleted, durably (fsynced) before this returns; the next record starts a new
    /// segment, as after a restart, so no pointer into what was cut can meet a new record.
    /// Needs no free space: it only shortens and deletes files. Nothing to do if nothing of
    /// the batch reached the file.
    pub fn discard_from(&mut self, start: Position) -> Result<(), JournalError> {
        let written = self.len - self.buf.len() as u64;
        self.buf.clear();
        if start.0 == self.segment && u64::from(start.1) >= written {
            self.len = u64::from(start.1);
            return Ok(());
        }
        for segment in start.0 + 1..=self.segment {
            self.log.remove_segment(segment)?;
        }
        let file = if start.0 == self.segment {
            self.file.clone()
        } else {
            Arc::new(
                OpenOptions::new()
                    .write(true)
                    .open(self.log.path(start.0))
                    .map_err(io_err)?,
            )
        };
        file.set_len(u64::from(start.1)).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
        File::open(&self.log.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err)?;
        // Full: the next push rotates (and `Drop` leaves the file as cut).
        self.len = self.log.segment_bytes;
        Ok(())
    }

    /// Files with writes the flusher must fsync before it answers.
    pub fn take_unsynced(&mut self) -> Vec<(u32, Arc<File>)> {
        std::mem::take(&mut self.unsynced)
    }

    /// Files with writes since the last checkpoint (fsynced again before sled is flushed).
    pub fn take_touched(&mut self) -> Vec<(u32, Arc<File>)> {
        std::mem::take(&mut self.touched)
    }
}

impl Drop for Appender {
    /// A segment left behind (rotated, or at shutdown) loses its unused zeros, so that its size
    /// is its data again (what compaction compares live bytes to). After a crash the zeros
    /// stay: harmless, the segment is just compacted sooner.
    fn drop(&mut self) {
        if self.len < self.log.segment_bytes {
            let _ = self.file.set_len(self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_restart_starts_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut app) = ValueLog::open(dir.path()).unwrap();
        let a = app.push(Kind::Raw, b"key-a", b"MSH|^~\\&|A").unwrap();
        let b = app.push(Kind::Tx, b"key-b", b"{}").unwrap();
        app.write_out().unwrap();
        assert_eq!(log.read(a, Kind::Raw, b"key-a").unwrap(), b"MSH|^~\\&|A");
        assert_eq!(log.read(b, Kind::Tx, b"key-b").unwrap(), b"{}");
        assert_eq!(Ptr::from_bytes(&a.to_bytes()), Some(a));
        // The wrong key or kind is refused rather than answered with another record's value.
        assert!(log.read(a, Kind::Raw, b"key-b").is_err());
        assert!(log.read(b, Kind::Raw, b"key-b").is_err());
        let first = app.active_segment();
        drop(app);
        let (_, app) = ValueLog::open(dir.path()).unwrap();
        assert_eq!(app.active_segment(), first + 1);
    }

    #[test]
    fn a_scan_returns_records_in_order_and_stops_at_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut app) = ValueLog::open(dir.path()).unwrap();
        let a = app.push(Kind::Tx, b"a", b"first").unwrap();
        let gone = app.push_tombstone(Kind::Raw, b"b").unwrap();
        let c = app.push(Kind::Step, b"c", b"third").unwrap();
        app.write_out().unwrap();
        let mut found = Vec::new();
        log.scan(a.segment, 0, |r| {
            found.push(r);
            Ok(())
        })
        .unwrap();
        let summary: Vec<_> = found
            .iter()
            .map(|r| (r.ptr, r.kind, r.tombstone, r.key.clone(), r.value.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (a, Kind::Tx, false, b"a".to_vec(), b"first".to_vec()),
                (gone, Kind::Raw, true, b"b".to_vec(), Vec::new()),
                (c, Kind::Step, false, b"c".to_vec(), b"third".to_vec()),
            ]
        );
        assert_eq!(log.scan(a.segment, gone.offset, |_| Ok(())).unwrap(), 2);
        // A crash mid-write: the last record is cut short.
        let path = dir.path().join(segment_name(a.segment));
        let bytes = std::fs::read(&path).unwrap();
        let end = (c.offset + c.len) as usize;
        std::fs::write(&path, &bytes[..end - 2]).unwrap();
        assert_eq!(log.scan(a.segment, 0, |_| Ok(())).unwrap(), 2);
    }

    #[test]
    fn a_full_segment_is_closed_and_both_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut app) = ValueLog::open_sized(dir.path(), 64).unwrap();
        let a = app.push(Kind::Raw, b"a", &[b'x'; 40]).unwrap();
        let b = app.push(Kind::Raw, b"b", &[b'y'; 40]).unwrap();
        app.write_out().unwrap();
        assert_eq!(b.segment, a.segment + 1);
        assert_eq!(app.active_segment(), b.segment);
        let synced: Vec<u32> = app.take_unsynced().into_iter().map(|(s, _)| s).collect();
        assert_eq!(synced, vec![a.segment, b.segment]);
        assert_eq!(log.read(a, Kind::Raw, b"a").unwrap(), vec![b'x'; 40]);
        assert_eq!(log.read(b, Kind::Raw, b"b").unwrap(), vec![b'y'; 40]);
        // A record larger than a segment gets one of its own.
        let big = app.push(Kind::Raw, b"c", &[b'z'; 200]).unwrap();
        app.write_out().unwrap();
        assert_eq!(big.segment, b.segment + 1);
        assert_eq!(log.read(big, Kind::Raw, b"c").unwrap().len(), 200);
    }

    #[test]
    fn what_a_failed_batch_wrote_is_cut_off_and_the_next_record_starts_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut app) = ValueLog::open_sized(dir.path(), 4096).unwrap();
        let kept = app.push(Kind::Raw, b"a", b"kept").unwrap();
        app.write_out().unwrap();
        let count = |segment| log.scan(segment, 0, |_| Ok(())).unwrap();
        // A batch that failed before anything reached the file: nothing to cut.
        let start = app.position();
        app.push(Kind::Raw, b"b", b"buffered only").unwrap();
        app.discard_from(start).unwrap();
        assert_eq!(app.position(), start);
        let next = app.push(Kind::Raw, b"c", b"next").unwrap();
        app.write_out().unwrap();
        assert_eq!(
            next.position(),
            start,
            "appended where the failed batch began"
        );
        // One that wrote: the segment is cut where it began, durably, and never appended to
        // again.
        let start = app.position();
        app.push(Kind::Raw, b"d", b"failed").unwrap();
        app.write_out().unwrap();
        app.discard_from(start).unwrap();
        assert_eq!(count(kept.segment), 2);
        let path = dir.path().join(segment_name(kept.segment));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), u64::from(start.1));
        let after = app.push(Kind::Raw, b"e", b"after").unwrap();
        app.write_out().unwrap();
        assert_eq!(after.segment, kept.segment + 1);
        // One that rotated into new segments: those are deleted, the first one cut.
        let start = app.position();
        app.push(Kind::Raw, b"f", &[b'x'; 3000]).unwrap();
        app.push(Kind::Raw, b"g", &[b'y'; 3000]).unwrap();
        app.push(Kind::Raw, b"h", &[b'z'; 3000]).unwrap();
        app.write_out().unwrap();
        assert!(app.active_segment() >= start.0 + 2);
        app.discard_from(start).unwrap();
        assert_eq!(log.segments().unwrap(), vec![kept.segment, start.0]);
        assert_eq!(count(start.0), 1);
        assert_eq!(log.read(after, Kind::Raw, b"e").unwrap(), b"after");
        let last = app.push(Kind::Raw, b"i", b"last").unwrap();
        app.write_out().unwrap();
        assert!(
            last.segment > start.0 + 2,
            "a segment number is never reused"
        );
        drop(app);
        let (log, _app) = ValueLog::open_sized(dir.path(), 4096).unwrap();
        assert_eq!(log.read(last, Kind::Raw, b"i").unwrap(), b"last");
    }

    #[test]
    fn a_flipped_byte_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut app) = ValueLog::open(dir.path()).unwrap();
        let p = app.push(Kind::Raw, b"k", b"hello").unwrap();
        app.write_out().unwrap();
        let path = dir.path().join(segment_name(p.segment));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = (p.offset + p.len - 1) as usize;
        bytes[last] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        log.files.write().unwrap().clear();
        let err = log.read(p, Kind::Raw, b"k").unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
    }

    #[test]
    fn segments_start_full_of_zeros_and_are_cut_back_to_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let (log, mut app) = ValueLog::open_sized(dir.path(), 4096).unwrap();
        let a = app.push(Kind::Raw, b"a", b"first").unwrap();
        app.write_out().unwrap();
        let path = dir.path().join(segment_name(a.segment));
        // Written into the zeros: the file does not grow, and a scan stops at them.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        assert_eq!(log.scan(a.segment, 0, |_| Ok(())).unwrap(), 1);
        // The next segment is being prepared under another name, which no listing sees.
        let next = dir
            .path()
            .join(format!("{}.next", segment_name(a.segment + 1)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !next.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(next.exists());
        assert_eq!(log.segments().unwrap(), vec![a.segment]);
        // Rotated: the old segment is cut back to its data, the new one is the prepared file.
        let b = app.push(Kind::Raw, b"b", &[b'x'; 4080]).unwrap();
        app.write_out().unwrap();
        assert_eq!(b.segment, a.segment + 1);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), u64::from(a.len));
        assert_eq!(log.read(b, Kind::Raw, b"b").unwrap(), vec![b'x'; 4080]);
        // Closed: the same; reopened, the leftover prepared file is removed.
        drop(app);
        let b_path = dir.path().join(segment_name(b.segment));
        assert_eq!(std::fs::metadata(&b_path).unwrap().len(), u64::from(b.len));
        let (log, _app) = ValueLog::open_sized(dir.path(), 4096).unwrap();
        assert_eq!(
            log.segments().unwrap(),
            vec![a.segment, b.segment, b.segment + 1]
        );
        assert_eq!(log.read(a, Kind::Raw, b"a").unwrap(), b"first");
    }
}
