//! MLLP framing: `<VT> message <FS><CR>`.
//!
//! Encoding uses the `hl7-mllp-codec` crate. Decoding is our own, because that crate's 0.4
//! decoder searches for the end block from the end of the buffer (two frames in one read come out
//! as one), has no size limit, rescans the whole buffer on every read, and drops a frame cut off
//! by EOF without a word. This decoder scans forward from where the last read stopped, refuses a
//! frame past `max_frame` bytes, and reports EOF in mid-frame as an error.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Start of block.
pub const VT: u8 = 0x0b;
/// End of block, followed by [`CR`].
pub const FS: u8 = 0x1c;
pub const CR: u8 = 0x0d;

/// How much of a refused frame is kept, so that the ACK can still name the message (MSH is at
/// the start) and the journal has something to show.
pub const KEPT_PREFIX: usize = 4096;

/// Why the decoder gave up on a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("message exceeds the maximum size of {limit} bytes")]
    TooLarge {
        limit: usize,
        /// The first bytes of the frame.
        prefix: Bytes,
    },
    #[error("connection closed in the middle of a message ({} bytes received)", partial.len())]
    Truncated { partial: Bytes },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The MLLP codec: our decoder, the crate's encoder.
pub struct MllpCodec {
    max_frame: usize,
    /// Inside a frame: `VT` seen, `FS CR` not yet.
    in_frame: bool,
    /// Bytes of the current frame (after `VT`) already scanned for `FS`.
    scanned: usize,
    /// Bytes outside frames, skipped as the protocol says; read and reset by the caller.
    skipped: u64,
    /// Frames abandoned because a new `VT` started before their end.
    restarted: u64,
    encoder: hl7_mllp_codec::MllpCodec,
}

impl MllpCodec {
    pub fn new(max_frame: usize) -> MllpCodec {
        MllpCodec {
            max_frame,
            in_frame: false,
            scanned: 0,
            skipped: 0,
            restarted: 0,
            encoder: hl7_mllp_codec::MllpCodec::new(),
        }
    }

    /// Bytes skipped outside frames since the last call.
    pub fn take_skipped(&mut self) -> u64 {
        std::mem::take(&mut self.skipped)
    }

    /// Frames abandoned for a new start block since the last call.
    pub fn take_restarted(&mut self) -> u64 {
        std::mem::take(&mut self.restarted)
    }

    /// The bytes of a frame begun but not ended, when the connection is given up on for a
    /// reason the decoder does not see (a reset, a TLS close without close_notify, the idle
    /// timeout): `src` is the reader's buffer. Resets the decoder.
    pub fn take_partial(&mut self, src: &mut BytesMut) -> Option<Bytes> {
        if !self.in_frame {
            return None;
        }
        self.in_frame = false;
        self.scanned = 0;
        Some(src.split().freeze())
    }

    /// What an oversize frame keeps of its first `content_len` bytes: never the bytes after
    /// its end block (the next sender's message may follow in the same read).
    fn prefix(src: &BytesMut, content_len: usize) -> Bytes {
        Bytes::copy_from_slice(&src[..content_len.min(src.len()).min(KEPT_PREFIX)])
    }
}

impl Decoder for MllpCodec {
    type Item = Bytes;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        loop {
            if !self.in_frame {
                match src.iter().position(|b| *b == VT) {
                    None => {
                        self.skipped += src.len() as u64;
                        src.clear();
                        return Ok(None);
                    }
                    Some(start) => {
                        self.skipped += start as u64;
                        src.advance(start + 1);
                        self.in_frame = true;
                        self.scanned = 0;
                    }
                }
            }
            let found = src[self.scanned..]
                .iter()
                .position(|b| *b == FS || *b == VT)
                .map(|i| i + self.scanned);
            match found {
                Some(i) if src[i] == VT => {
                    // A new start block before the end: the sender gave up on that frame (e.g.
                    // it timed out and resent). Drop the fragment, start over at this VT.
                    self.restarted += 1;
                    src.advance(i);
                    self.in_frame = false;
                    continue;
                }
                Some(i) if i + 1 >= src.len() => {
                    // FS is the last byte read: wait for the CR.
                    self.scanned = i;
                    return self.check_size(src, i);
                }
                Some(i) if src[i + 1] == CR => {
                    if i > self.max_frame {
                        return Err(FrameError::TooLarge {
                            limit: self.max_frame,
                            prefix: Self::prefix(src, i),
                        });
                    }
                    let frame = src.split_to(i).freeze();
                    src.advance(2);
                    self.in_frame = false;
                    self.scanned = 0;
                    return Ok(Some(frame));
                }
                Some(i) => {
                    // A lone FS inside the content: not an end block, keep scanning after it.
                    self.scanned = i + 1;
                    continue;
                }
                None => {
                    self.scanned = src.len();
                    return self.check_size(src, src.len());
                }
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if let Some(frame) = self.decode(src)? {
            return Ok(Some(frame));
        }
        if self.in_frame {
            self.in_frame = false;
            self.scanned = 0;
            let partial = src.split().freeze();
            return Err(FrameError::Truncated { partial });
        }
        Ok(None)
    }
}

impl MllpCodec {
    fn check_size(&self, src: &BytesMut, content_len: usize) -> Result<Option<Bytes>, FrameError> {
        if content_len > self.max_frame {
            return Err(FrameError::TooLarge {
                limit: self.max_frame,
                prefix: Self::prefix(src, content_len),
            });
        }
        Ok(None)
    }
}

impl Encoder<BytesMut> for MllpCodec {
    type Error = std::io::Error;

    fn encode(&mut self, message: BytesMut, dst: &mut BytesMut) -> Result<(), std::io::Error> {
        self.encoder.encode(message, dst)
    }
}

/// Frames one message (for clients that write bytes directly).
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(VT);
    out.extend_from_slice(message);
    out.extend_from_slice(&[FS, CR]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(codec: &mut MllpCodec, buf: &mut BytesMut) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(frame) = codec.decode(buf).unwrap() {
            out.push(frame);
        }
        out
    }

    #[test]
    fn two_frames_in_one_read_stay_two() {
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&frame(b"MSH|one"));
        buf.extend_from_slice(&frame(b"MSH|two"));
        let frames = decode_all(&mut codec, &mut buf);
        assert_eq!(frames, vec![Bytes::from("MSH|one"), Bytes::from("MSH|two")]);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_frame_split_across_many_reads() {
        let mut codec = MllpCodec::new(1024);
        let framed = frame(b"MSH|^~\\&|A|B\rPID|1");
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in framed {
            buf.extend_from_slice(&[byte]);
            frames.extend(decode_all(&mut codec, &mut buf));
        }
        assert_eq!(frames, vec![Bytes::from("MSH|^~\\&|A|B\rPID|1")]);
    }

    #[test]
    fn bytes_outside_frames_are_skipped_and_counted() {
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::from(&b"garbage\r\n"[..]);
        buf.extend_from_slice(&frame(b"MSH|x"));
        buf.extend_from_slice(b"tail");
        let frames = decode_all(&mut codec, &mut buf);
        assert_eq!(frames, vec![Bytes::from("MSH|x")]);
        assert_eq!(codec.take_skipped(), 13);
    }

    #[test]
    fn oversize_is_refused_before_the_end_arrives() {
        let mut codec = MllpCodec::new(100);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[VT]);
        buf.extend_from_slice(b"MSH|^~\\&|");
        buf.extend_from_slice(&[b'x'; 200]);
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { limit, prefix }) => {
                assert_eq!(limit, 100);
                assert!(prefix.starts_with(b"MSH|^~\\&|"));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn an_oversize_frame_keeps_none_of_the_next_one() {
        let mut codec = MllpCodec::new(100);
        let mut buf = BytesMut::from(&frame(&[b'x'; 150])[..]);
        buf.extend_from_slice(&frame(b"MSH|^~\\&|NEXT"));
        match codec.decode(&mut buf) {
            Err(FrameError::TooLarge { prefix, .. }) => assert_eq!(prefix, vec![b'x'; 150]),
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn exactly_at_the_limit_is_accepted() {
        let mut codec = MllpCodec::new(5);
        let mut buf = BytesMut::from(&frame(b"12345")[..]);
        assert_eq!(decode_all(&mut codec, &mut buf), vec![Bytes::from("12345")]);
        let mut buf = BytesMut::from(&frame(b"123456")[..]);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn eof_in_mid_frame_is_an_error() {
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[VT]);
        buf.extend_from_slice(b"MSH|half");
        assert!(codec.decode(&mut buf).unwrap().is_none());
        match codec.decode_eof(&mut buf) {
            Err(FrameError::Truncated { partial }) => assert_eq!(&partial[..], b"MSH|half"),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn eof_between_frames_is_clean() {
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::from(&frame(b"MSH|a")[..]);
        assert!(codec.decode_eof(&mut buf).unwrap().is_some());
        assert!(codec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn fs_at_end_of_read_waits_for_cr() {
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[VT, b'M', FS]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&[CR]);
        assert_eq!(decode_all(&mut codec, &mut buf), vec![Bytes::from("M")]);
    }

    #[test]
    fn a_restarted_frame_drops_the_fragment() {
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[VT]);
        buf.extend_from_slice(b"MSH|lost");
        buf.extend_from_slice(&frame(b"MSH|kept"));
        assert_eq!(
            decode_all(&mut codec, &mut buf),
            vec![Bytes::from("MSH|kept")]
        );
        assert_eq!(codec.take_restarted(), 1);
    }

    #[test]
    fn large_frame_in_small_reads_is_linear() {
        // 4 MiB in 8 KiB reads: each byte is scanned once (the crate's decoder rescans).
        let payload = vec![b'a'; 4 << 20];
        let framed = frame(&payload);
        let mut codec = MllpCodec::new(16 << 20);
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in framed.chunks(8192) {
            buf.extend_from_slice(chunk);
            if let Some(f) = codec.decode(&mut buf).unwrap() {
                got = Some(f);
            }
        }
        assert_eq!(got.map(|f| f.len()), Some(payload.len()));
    }

    #[test]
    fn encoder_frames_messages() {
        let mut codec = MllpCodec::new(1024);
        let mut dst = BytesMut::new();
        codec
            .encode(BytesMut::from(&b"MSH|ack"[..]), &mut dst)
            .unwrap();
        assert_eq!(&dst[..], &frame(b"MSH|ack")[..]);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..2048), cut in 1usize..64) {
            let mut codec = MllpCodec::new(512);
            let mut buf = BytesMut::new();
            for chunk in data.chunks(cut) {
                buf.extend_from_slice(chunk);
                loop {
                    match codec.decode(&mut buf) {
                        Ok(Some(_)) => continue,
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
            }
            let _ = codec.decode_eof(&mut buf);
        }

        #[test]
        fn framed_messages_come_back_whatever_the_read_sizes(
            messages in proptest::collection::vec(proptest::collection::vec(0x20u8..0x7f, 1..300), 1..8),
            cut in 1usize..97,
        ) {
            let mut stream = Vec::new();
            for m in &messages {
                stream.extend_from_slice(&frame(m));
            }
            let mut codec = MllpCodec::new(1024);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in stream.chunks(cut) {
                buf.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    got.push(f.to_vec());
                }
            }
            proptest::prop_assert_eq!(got, messages);
        }
    }
}
