//! Container logs in the CRI format that kubelet reads (`kubectl logs`):
//!
//! ```text
//! 2016-10-06T00:17:09.669794202Z stdout F a full line
//! 2016-10-06T00:17:09.669794202Z stderr P the first part of a very long line
//! ```
//!
//! One entry per line: the time the text was read (RFC 3339 in UTC with exactly nine fractional
//! digits, as containerd writes it), the stream, `F` for a full line or `P` for a partial one,
//! then the text without its newline. A line longer than [`MAX_LINE`] is cut into `P` entries
//! followed by a final `F`, so that one endless line cannot make the writer buffer without bound.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::error::{Context, Result};

/// The longest text of one entry (containerd's buffer size).
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Whether an entry ends its line (`F`) or the line continues in the next entry (`P`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    Full,
    Partial,
}

impl Tag {
    pub fn as_str(self) -> &'static str {
        match self {
            Tag::Full => "F",
            Tag::Partial => "P",
        }
    }
}

/// The log file. It is opened for appending, so that a writer reopening it after a rotation, or
/// two writers by mistake, never overwrite each other's entries.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    /// The entry being written, kept between entries so that a line costs no allocation.
    entry: Vec<u8>,
}

impl LogFile {
    /// Open (or create) the log, creating its directory if needed.
    pub fn open(path: &Path) -> Result<LogFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .context(|| format!("opening the container log {}", path.display()))?;
        Ok(LogFile {
            path: path.to_path_buf(),
            file,
            entry: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Open the path again: after a rotation renamed the old file away, entries go to a new one.
    pub fn reopen(&mut self) -> Result<()> {
        *self = LogFile::open(&self.path)?;
        Ok(())
    }

    /// Append one entry, stamped with the current time, in a single write so that a reader never
    /// sees half an entry.
    pub fn write_entry(&mut self, stream: Stream, tag: Tag, text: &[u8]) -> Result<()> {
        let entry = &mut self.entry;
        entry.clear();
        write_timestamp(entry, Utc::now());
        entry.push(b' ');
        entry.extend_from_slice(stream.as_str().as_bytes());
        entry.push(b' ');
        entry.extend_from_slice(tag.as_str().as_bytes());
        entry.push(b' ');
        entry.extend_from_slice(text);
        entry.push(b'\n');
        let written = self.file.write_all(entry);
        // A huge entry's buffer is not kept for the life of the container.
        if entry.capacity() > 2 * MAX_LINE {
            *entry = Vec::new();
        }
        written.context(|| format!("writing the container log {}", self.path.display()))
    }
}

/// The current time as the CRI log writes it: `2016-10-06T00:17:09.669794202Z`.
pub fn timestamp() -> String {
    let mut stamp = Vec::with_capacity(30);
    write_timestamp(&mut stamp, Utc::now());
    String::from_utf8_lossy(&stamp).into_owned()
}

/// Appends `time` as the CRI log writes it. Field by field rather than with chrono's `format`,
/// which interprets its format string on every call: this runs for every line a container prints,
/// and the shim's memory follows how much code its loop runs (docs/shim.md).
fn write_timestamp(out: &mut Vec<u8>, time: DateTime<Utc>) {
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        time.year(),
        time.month(),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        // chrono counts a leap second as a second nanosecond range; RFC 3339 has no room for it.
        time.nanosecond().min(999_999_999),
    );
}

/// Cuts one stream's bytes, which arrive in arbitrary chunks, into log entries.
#[derive(Debug)]
pub struct LineBuffer {
    stream: Stream,
    max: usize,
    pending: Vec<u8>,
}

impl LineBuffer {
    pub fn new(stream: Stream) -> LineBuffer {
        LineBuffer::with_max(stream, MAX_LINE)
    }

    /// A buffer cutting lines at `max` bytes (at least 1).
    pub fn with_max(stream: Stream, max: usize) -> LineBuffer {
        LineBuffer {
            stream,
            max: max.max(1),
            pending: Vec::new(),
        }
    }

    pub fn stream(&self) -> Stream {
        self.stream
    }

    /// Feed the next chunk; `emit` receives every entry it completes.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(Stream, Tag, &[u8])) {
        while !data.is_empty() {
            if self.pending.len() == self.max {
                // A full buffer followed by a newline is still a full line, not a partial one.
                if data[0] == b'\n' {
                    self.flush(Tag::Full, emit);
                    data = &data[1..];
                    continue;
                }
                self.flush(Tag::Partial, emit);
            }
            let room = self.max - self.pending.len();
            let window = &data[..data.len().min(room)];
            match window.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.pending.extend_from_slice(&window[..end]);
                    self.flush(Tag::Full, emit);
                    data = &data[end + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    data = &data[window.len()..];
                }
            }
        }
    }

    /// The stream ended: a last line without a newline is still written, as a full line.
    pub fn finish(&mut self, emit: &mut impl FnMut(Stream, Tag, &[u8])) {
        if !self.pending.is_empty() {
            self.flush(Tag::Full, emit);
        }
        // An ended stream keeps no memory.
        self.pending = Vec::new();
    }

    fn flush(&mut self, tag: Tag, emit: &mut impl FnMut(Stream, Tag, &[u8])) {
        emit(self.stream, tag, &self.pending);
        self.pending.clear();
    }
}

/// One parsed entry of a CRI log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub timestamp: &'a str,
    pub stream: Stream,
    pub tag: Tag,
    pub text: &'a [u8],
}

/// Parse one line of a CRI log (without its newline); `None` if it is not in the format.
pub fn parse_line(line: &[u8]) -> Option<Entry<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(fields.next()?).ok()?;
    chrono::DateTime::parse_from_rfc3339(timestamp).ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tag = match fields.next()? {
        b"F" => Tag::Full,
        b"P" => Tag::Partial,
        _ => return None,
    };
    Some(Entry {
        timestamp,
        stream,
        tag,
        text: fields.next().unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(Tag, Vec<u8>)> {
        let mut out = Vec::new();
        let mut buf = LineBuffer::with_max(Stream::Stdout, max);
        let mut emit = |_: Stream, tag: Tag, text: &[u8]| out.push((tag, text.to_vec()));
        for chunk in chunks {
            buf.push(chunk, &mut emit);
        }
        buf.finish(&mut emit);
        out
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let got = split(16, &[b"hel", b"lo\nwor", b"ld\n"]);
        assert_eq!(
            got,
            vec![
                (Tag::Full, b"hello".to_vec()),
                (Tag::Full, b"world".to_vec())
            ]
        );
    }

    #[test]
    fn long_lines_become_partial_entries() {
        let got = split(4, &[b"abcdefghij\n"]);
        assert_eq!(
            got,
            vec![
                (Tag::Partial, b"abcd".to_vec()),
                (Tag::Partial, b"efgh".to_vec()),
                (Tag::Full, b"ij".to_vec())
            ]
        );
    }

    #[test]
    fn a_line_of_exactly_the_buffer_size_is_full() {
        assert_eq!(
            split(4, &[b"abcd", b"\n"]),
            vec![(Tag::Full, b"abcd".to_vec())]
        );
    }

    #[test]
    fn last_line_without_newline_is_full_and_empty_lines_are_kept() {
        let got = split(16, &[b"\nend"]);
        assert_eq!(
            got,
            vec![(Tag::Full, Vec::new()), (Tag::Full, b"end".to_vec())]
        );
    }

    #[test]
    fn timestamps_read_as_rfc3339_with_nine_digits() {
        for (secs, nanos) in [(0, 0), (1_475_713_029, 669_794_202), (4_102_444_799, 5)] {
            let time = DateTime::from_timestamp(secs, nanos).unwrap();
            let mut ours = Vec::new();
            write_timestamp(&mut ours, time);
            let expected = time.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
            assert_eq!(String::from_utf8(ours).unwrap(), expected);
        }
    }

    #[test]
    fn timestamps_have_nine_fractional_digits_in_utc() {
        let ts = timestamp();
        let frac = ts.split('.').nth(1).unwrap();
        assert_eq!(frac.len(), 10, "{ts}");
        assert!(frac.ends_with('Z'));
    }

    #[test]
    fn parses_what_it_writes() {
        let e = parse_line(b"2016-10-06T00:17:09.669794202Z stderr P some text").unwrap();
        assert_eq!(e.stream, Stream::Stderr);
        assert_eq!(e.tag, Tag::Partial);
        assert_eq!(e.text, b"some text");
        assert_eq!(
            parse_line(b"2016-10-06T00:17:09.669794202Z stdout F")
                .unwrap()
                .text,
            b""
        );
        assert!(parse_line(b"garbage stdout F x").is_none());
    }
}
