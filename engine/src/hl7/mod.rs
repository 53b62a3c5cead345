//! HL7 v2 codec: parse, read by path, rewrite, re-encode, acknowledge.
//!
//! Why hand-written: the published crates either mis-number MSH when a fifth encoding character is
//! present, corrupt escaped values, panic on malformed input, or are one to two orders of magnitude
//! slower (see the "HL7 v2 parser crates" note in `DEPENDENCIES.md`). This module depends on
//! `thiserror` only.
//!
//! How it works: [`Message::parse`] decodes the bytes once into UTF-8 text (honouring MSH-18) and
//! builds a flat index of segment and field boundaries in a single pass. Repetitions, components
//! and subcomponents are located lazily when a [`Path`] is read, and escape sequences are decoded
//! only for the value asked for, so parsing allocates three buffers whatever the message size.
//! The original text (segment separators included) is kept, which is what makes
//! [`Message::to_bytes`] reproduce the input byte for byte.
//!
//! Layout, one file per concept:
//! - [`delimiters`]: the encoding characters read from MSH-1/MSH-2;
//! - [`charset`]: MSH-18 and the decoding of the wire bytes;
//! - [`escape`]: `\F\ \S\ \T\ \R\ \E\ \P\ \Xhh\` decoding and re-escaping;
//! - [`path`]: `PID-3[2].4.1` paths, parsed once;
//! - [`value`]: absent vs empty vs `""` (null) vs text;
//! - [`message`]: the index, path reads, setters, re-encoding;
//! - [`header`]: typed MSH accessors (control id, message type, applications, ack types);
//! - [`validate`]: checks used for the acknowledgement policy;
//! - [`ack`]: HL7 table 0357, ACK building (also for input that did not parse), ACK reading;
//! - [`batch`]: FHS/BHS/BTS/FTS batch files split into messages;
//! - [`error`]: parse, path and set errors.

pub mod ack;
pub mod batch;
pub mod charset;
pub mod delimiters;
pub mod error;
pub mod escape;
pub mod header;
pub mod message;
pub mod path;
pub mod validate;
pub mod value;

pub use ack::{
    build_ack, build_ack_as, build_ack_for_unparsed, Ack, AckCode, AckError, AckMode, AckType,
    ErrLocation, ErrorCode, Severity,
};
pub use batch::split_batch;
pub use charset::Charset;
pub use delimiters::Delimiters;
pub use error::{ParseError, PathError, SetError};
pub use header::MessageType;
pub use message::{Message, Segment};
pub use path::{Index, Path};
pub use value::Value;
