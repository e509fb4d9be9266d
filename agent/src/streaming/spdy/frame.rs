//! The SPDY/3.1 wire format: an 8-byte frame head, then the payload.
//!
//! ```text
//! control frame: |1| version (15) | type (16) | flags (8) | length (24) | payload
//! data frame:    |0| stream id (31)           | flags (8) | length (24) | payload
//! ```
//! Header blocks inside control frames are compressed (see `compression`), so encoding and
//! decoding take the session's compression context for that direction.

use super::compression::{HeaderCompressor, HeaderDecompressor, Headers};
use super::SpdyError;

pub const VERSION: u16 = 3;
pub const HEAD_LEN: usize = 8;

/// FIN on data frames and on SYN_STREAM, SYN_REPLY, HEADERS: the sender's last frame.
pub const FLAG_FIN: u8 = 0x01;
/// On SYN_STREAM: the recipient must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes we send.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;

/// GOAWAY status codes.
pub const GOAWAY_OK: u32 = 0;
pub const GOAWAY_PROTOCOL_ERROR: u32 = 1;

/// The SETTINGS id that changes the initial window of every stream.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

const STREAM_ID_MASK: u32 = 0x7fff_ffff;
const MAX_LENGTH: usize = 0x00ff_ffff;

/// What a frame head says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHead {
    Control {
        version: u16,
        kind: u16,
        flags: u8,
        length: usize,
    },
    Data {
        stream_id: u32,
        flags: u8,
        length: usize,
    },
}

impl FrameHead {
    pub fn parse(bytes: [u8; HEAD_LEN]) -> Self {
        let first = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let flags = bytes[4];
        let length = u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]) as usize;
        if first & 0x8000_0000 != 0 {
            FrameHead::Control {
                version: ((first >> 16) & 0x7fff) as u16,
                kind: (first & 0xffff) as u16,
                flags,
                length,
            }
        } else {
            FrameHead::Data {
                stream_id: first & STREAM_ID_MASK,
                flags,
                length,
            }
        }
    }

    #[cfg(test)]
    pub fn length(&self) -> usize {
        match *self {
            FrameHead::Control { length, .. } | FrameHead::Data { length, .. } => length,
        }
    }
}

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data {
        stream_id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
}

impl Frame {
    /// Appends the frame's wire form to `out`.
    pub fn encode(
        &self,
        compressor: &mut HeaderCompressor,
        out: &mut Vec<u8>,
    ) -> Result<(), SpdyError> {
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match self {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                put_data_head(out, *stream_id, fin_flag(*fin), data.len())?;
                out.extend_from_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let block = compressor.compress(headers)?;
                put_control_head(out, TYPE_SYN_STREAM, *flags, 10 + block.len())?;
                put_u32(out, stream_id & STREAM_ID_MASK);
                put_u32(out, associated_to & STREAM_ID_MASK);
                out.push((priority & 0x07) << 5);
                out.push(0); // credential slot, unused in SPDY/3.1
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let block = compressor.compress(headers)?;
                put_control_head(out, TYPE_SYN_REPLY, fin_flag(*fin), 4 + block.len())?;
                put_u32(out, stream_id & STREAM_ID_MASK);
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                put_control_head(out, TYPE_RST_STREAM, 0, 8)?;
                put_u32(out, stream_id & STREAM_ID_MASK);
                put_u32(out, *status);
            }
            Frame::Settings { flags, entries } => {
                put_control_head(out, TYPE_SETTINGS, *flags, 4 + 8 * entries.len())?;
                put_u32(out, entries.len() as u32);
                for entry in entries {
                    put_u32(
                        out,
                        (u32::from(entry.flags) << 24) | (entry.id & 0x00ff_ffff),
                    );
                    put_u32(out, entry.value);
                }
            }
            Frame::Ping { id } => {
                put_control_head(out, TYPE_PING, 0, 4)?;
                put_u32(out, *id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control_head(out, TYPE_GOAWAY, 0, 8)?;
                put_u32(out, last_good_stream_id & STREAM_ID_MASK);
                put_u32(out, *status);
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let block = compressor.compress(headers)?;
                put_control_head(out, TYPE_HEADERS, fin_flag(*fin), 4 + block.len())?;
                put_u32(out, stream_id & STREAM_ID_MASK);
                out.extend_from_slice(&block);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_control_head(out, TYPE_WINDOW_UPDATE, 0, 8)?;
                put_u32(out, stream_id & STREAM_ID_MASK);
                put_u32(out, delta & STREAM_ID_MASK);
            }
        }
        Ok(())
    }

    /// Decodes a control frame's payload. `Ok(None)` is a frame type SPDY/3.1 tells us to
    /// ignore (unknown types, CREDENTIAL, NOOP).
    pub fn decode_control(
        kind: u16,
        flags: u8,
        payload: &[u8],
        decompressor: &mut HeaderDecompressor,
    ) -> Result<Option<Frame>, SpdyError> {
        let mut p = Payload(payload);
        let frame = match kind {
            TYPE_SYN_STREAM => {
                let stream_id = p.stream_id()?;
                let associated_to = p.stream_id()?;
                let priority = p.u8()? >> 5;
                let _slot = p.u8()?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers: decompressor.decompress(p.rest())?,
                }
            }
            TYPE_SYN_REPLY => Frame::SynReply {
                stream_id: p.stream_id()?,
                fin: flags & FLAG_FIN != 0,
                headers: decompressor.decompress(p.rest())?,
            },
            TYPE_HEADERS => Frame::Headers {
                stream_id: p.stream_id()?,
                fin: flags & FLAG_FIN != 0,
                headers: decompressor.decompress(p.rest())?,
            },
            TYPE_RST_STREAM => Frame::RstStream {
                stream_id: p.stream_id()?,
                status: p.u32()?,
            },
            TYPE_SETTINGS => {
                let count = p.u32()?;
                let mut entries = Vec::new();
                for _ in 0..count {
                    let flags_and_id = p.u32()?;
                    entries.push(Setting {
                        flags: (flags_and_id >> 24) as u8,
                        id: flags_and_id & 0x00ff_ffff,
                        value: p.u32()?,
                    });
                }
                Frame::Settings { flags, entries }
            }
            TYPE_PING => Frame::Ping { id: p.u32()? },
            TYPE_GOAWAY => Frame::GoAway {
                last_good_stream_id: p.stream_id()?,
                status: p.u32()?,
            },
            TYPE_WINDOW_UPDATE => Frame::WindowUpdate {
                stream_id: p.stream_id()?,
                delta: p.u32()? & STREAM_ID_MASK,
            },
            _ => return Ok(None),
        };
        Ok(Some(frame))
    }
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_length(out: &mut Vec<u8>, flags: u8, length: usize) -> Result<(), SpdyError> {
    if length > MAX_LENGTH {
        return Err(SpdyError::Protocol(format!(
            "a frame of {length} bytes does not fit SPDY's 24-bit length"
        )));
    }
    out.push(flags);
    out.extend_from_slice(&(length as u32).to_be_bytes()[1..]);
    Ok(())
}

fn put_control_head(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u8,
    length: usize,
) -> Result<(), SpdyError> {
    put_u32(
        out,
        0x8000_0000 | (u32::from(VERSION) << 16) | u32::from(kind),
    );
    put_length(out, flags, length)
}

fn put_data_head(
    out: &mut Vec<u8>,
    stream_id: u32,
    flags: u8,
    length: usize,
) -> Result<(), SpdyError> {
    put_u32(out, stream_id & STREAM_ID_MASK);
    put_length(out, flags, length)
}

/// Reads the fixed fields of a control frame's payload.
struct Payload<'a>(&'a [u8]);

impl<'a> Payload<'a> {
    fn u8(&mut self) -> Result<u8, SpdyError> {
        let (first, rest) = self.0.split_first().ok_or_else(truncated)?;
        self.0 = rest;
        Ok(*first)
    }

    fn u32(&mut self) -> Result<u32, SpdyError> {
        let (head, rest) = self.0.split_first_chunk::<4>().ok_or_else(truncated)?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn stream_id(&mut self) -> Result<u32, SpdyError> {
        Ok(self.u32()? & STREAM_ID_MASK)
    }

    fn rest(self) -> &'a [u8] {
        self.0
    }
}

fn truncated() -> SpdyError {
    SpdyError::Protocol("truncated control frame".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame) {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut decompressor = HeaderDecompressor::new();
        let mut wire = Vec::new();
        frame.encode(&mut compressor, &mut wire).unwrap();
        let head = FrameHead::parse(wire[..HEAD_LEN].try_into().unwrap());
        assert_eq!(head.length(), wire.len() - HEAD_LEN);
        let payload = &wire[HEAD_LEN..];
        let decoded = match head {
            FrameHead::Control {
                version,
                kind,
                flags,
                ..
            } => {
                assert_eq!(version, VERSION);
                Frame::decode_control(kind, flags, payload, &mut decompressor)
                    .unwrap()
                    .unwrap()
            }
            FrameHead::Data {
                stream_id, flags, ..
            } => Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: payload.to_vec(),
            },
        };
        assert_eq!(decoded, frame);
    }

    #[test]
    fn frames_round_trip() {
        let headers = Headers::default().with("streamtype", "stdout");
        round_trip(Frame::Data {
            stream_id: 7,
            fin: true,
            data: b"hello".to_vec(),
        });
        round_trip(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 3,
            flags: FLAG_FIN,
            headers: headers.clone(),
        });
        round_trip(Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::default(),
        });
        round_trip(Frame::RstStream {
            stream_id: 3,
            status: 5,
        });
        round_trip(Frame::Settings {
            flags: 0,
            entries: vec![Setting {
                flags: 1,
                id: SETTINGS_INITIAL_WINDOW_SIZE,
                value: 1 << 20,
            }],
        });
        round_trip(Frame::Ping { id: 5 });
        round_trip(Frame::GoAway {
            last_good_stream_id: 9,
            status: GOAWAY_OK,
        });
        round_trip(Frame::Headers {
            stream_id: 5,
            fin: true,
            headers,
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 0,
            delta: 4096,
        });
    }

    #[test]
    fn ping_matches_the_specified_layout() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut wire = Vec::new();
        Frame::Ping { id: 1 }
            .encode(&mut compressor, &mut wire)
            .unwrap();
        assert_eq!(wire, [0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1]);
    }
}
