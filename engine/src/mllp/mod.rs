//! MLLP, the Minimal Lower Layer Protocol that carries HL7 v2 over TCP: framing and a client.

pub mod client;
pub mod codec;

pub use client::{ClientError, MllpClient};
pub use codec::{FrameError, MllpCodec};
