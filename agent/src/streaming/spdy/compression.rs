//! SPDY/3 name/value header blocks and their zlib compression.
//!
//! Every header block of a session (SYN_STREAM, SYN_REPLY, HEADERS) goes through one zlib
//! stream per direction, primed with the dictionary from the SPDY/3 specification and
//! flushed with `Z_SYNC_FLUSH` after each block. The contexts therefore must see every block
//! in wire order, including blocks we otherwise ignore.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::SpdyError;

/// Refuse header blocks that inflate beyond this: our peers only send a handful of short
/// headers, and a small limit keeps a hostile client from making us allocate much.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// The header names and values of a stream, as they were on the wire (names lowercase).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self(
            pairs
                .iter()
                .map(|(name, value)| (name.to_ascii_lowercase(), value.to_string()))
                .collect(),
        )
    }

    #[cfg(test)]
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
        self
    }

    /// The first value of `name` (SPDY joins repeated values with NUL bytes), like Go's
    /// `http.Header.Get`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or_default())
    }

    /// The uncompressed name/value block: a count, then length-prefixed names and values.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.0.len() as u32).to_be_bytes());
        for (name, value) in &self.0 {
            for field in [name, value] {
                out.extend_from_slice(&(field.len() as u32).to_be_bytes());
                out.extend_from_slice(field.as_bytes());
            }
        }
        out
    }

    fn decode(block: &[u8]) -> Result<Self, SpdyError> {
        let mut cursor = Cursor(block);
        let count = cursor.u32()?;
        let mut pairs = Vec::new();
        for _ in 0..count {
            let name = cursor.string()?;
            let value = cursor.string()?;
            pairs.push((name, value));
        }
        if !cursor.0.is_empty() {
            return Err(SpdyError::Protocol(
                "trailing bytes after a header block".into(),
            ));
        }
        Ok(Self(pairs))
    }
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, SpdyError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<4>()
            .ok_or_else(|| SpdyError::Protocol("truncated header block".into()))?;
        self.0 = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn string(&mut self) -> Result<String, SpdyError> {
        let len = self.u32()? as usize;
        if len > self.0.len() {
            return Err(SpdyError::Protocol("truncated header block".into()));
        }
        let (field, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(field.to_vec())
            .map_err(|_| SpdyError::Protocol("a header is not UTF-8".into()))
    }
}

/// Compresses the header blocks we send.
pub struct HeaderCompressor(Compress);

impl HeaderCompressor {
    pub fn new() -> Result<Self, SpdyError> {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(DICTIONARY).map_err(compression_error)?;
        Ok(Self(zlib))
    }

    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        let input = headers.encode();
        let mut out = Vec::with_capacity(input.len() + 64);
        let start = self.0.total_in();
        loop {
            let consumed = (self.0.total_in() - start) as usize;
            self.0
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)
                .map_err(compression_error)?;
            let consumed = (self.0.total_in() - start) as usize;
            // A sync flush is complete once all input is in and zlib left room to spare.
            if consumed == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

/// Inflates the header blocks we receive.
pub struct HeaderDecompressor(Decompress);

impl HeaderDecompressor {
    pub fn new() -> Self {
        Self(Decompress::new(true))
    }

    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.0.total_in();
        loop {
            let consumed = (self.0.total_in() - start) as usize;
            match self
                .0
                .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::Ok | Status::BufError | Status::StreamEnd) => {}
                // The first block asks for the preset dictionary before it inflates anything.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(DICTIONARY)
                        .map_err(compression_error)?;
                }
                Err(e) => return Err(compression_error(e)),
            }
            let consumed = (self.0.total_in() - start) as usize;
            if consumed == block.len() && out.len() < out.capacity() {
                return Headers::decode(&out);
            }
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(SpdyError::Protocol("header block too large".into()));
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

fn compression_error(e: impl std::fmt::Display) -> SpdyError {
    SpdyError::Compression(e.to_string())
}

/// The zlib dictionary of SPDY/3 (and 3.1), byte for byte as the specification gives it:
/// the common header names and values, each with its 32-bit length prefix.
pub(super) const DICTIONARY: &[u8; 1423] = b"\
    \x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\
    \x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\
    \x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-range\
    s\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcach\
    e-control\x00\x00\x00\x0aconnection\x00\x00\x00\x0ccontent-base\x00\x00\x00\x10content-enc\
    oding\x00\x00\x00\x10content-language\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content\
    -location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent-range\x00\x00\x00\x0ccontent-t\
    ype\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\
    \x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-modifie\
    d-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-\
    since\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\
    \x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\
    \x00\x00\x00\x05range\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06ser\
    ver\x00\x00\x00\x02te\x00\x00\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\
    \x07upgrade\x00\x00\x00\x0auser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\
    \x07warning\x00\x00\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\
    \x00\x00\x06status\x00\x00\x00\x06200\x20OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\
    \x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00\x00\x00\x0akeep-al\
    ive\x00\x00\x00\x06origin10010120120220520630030230330430530630740240540640740840941041141\
    2413414415416417502504505203\x20Non-Authoritative\x20Information204\x20No\x20Content301\
    \x20Moved\x20Permanently400\x20Bad\x20Request401\x20Unauthorized403\x20Forbidden404\x20Not\
    \x20Found500\x20Internal\x20Server\x20Error501\x20Not\x20Implemented503\x20Service\x20Unav\
    ailableJan\x20Feb\x20Mar\x20Apr\x20May\x20Jun\x20Jul\x20Aug\x20Sept\x20Oct\x20Nov\x20Dec\
    \x2000:00:00\x20Mon,\x20Tue,\x20Wed,\x20Thu,\x20Fri,\x20Sat,\x20Sun,\x20GMTchunked,text/ht\
    ml,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/jav\
    ascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0\
    .";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_specified_one() {
        // zlib identifies a preset dictionary by its Adler-32; this is the id every SPDY/3
        // header stream carries in its zlib header (78 bb e3 c6 a7 c2).
        let adler = {
            let (mut a, mut b) = (1u32, 0u32);
            for byte in DICTIONARY {
                a = (a + u32::from(*byte)) % 65521;
                b = (b + a) % 65521;
            }
            (b << 16) | a
        };
        assert_eq!(adler, 0xe3c6_a7c2);
    }

    #[test]
    fn blocks_round_trip_through_one_context_per_direction() {
        let mut compressor = HeaderCompressor::new().unwrap();
        let mut decompressor = HeaderDecompressor::new();
        for i in 0..5 {
            let headers = Headers::default()
                .with("streamType", "data")
                .with("port", &format!("{}", 8000 + i))
                .with("requestid", &i.to_string());
            let block = compressor.compress(&headers).unwrap();
            let decoded = decompressor.decompress(&block).unwrap();
            assert_eq!(decoded, headers);
            assert_eq!(decoded.get("streamtype"), Some("data"));
        }
    }

    #[test]
    fn inflates_blocks_made_by_c_zlib() {
        // Two consecutive blocks of one stream, made by Python's zlib (the C library) with the
        // dictionary: {streamtype: error}, then {streamtype: stdout}.
        let first = hex("78bbe3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff");
        let second = hex("c22a054ccc29f9a52500000000ffff");
        let mut decompressor = HeaderDecompressor::new();
        let headers = decompressor.decompress(&first).unwrap();
        assert_eq!(headers, Headers::default().with("streamtype", "error"));
        let headers = decompressor.decompress(&second).unwrap();
        assert_eq!(headers, Headers::default().with("streamtype", "stdout"));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn repeated_values_yield_the_first() {
        let headers = Headers::default().with("a", "one\0two");
        assert_eq!(headers.get("A"), Some("one"));
        assert_eq!(headers.get("b"), None);
    }
}
