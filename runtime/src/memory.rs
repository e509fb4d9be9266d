//! Keeping the processes that live beside every pod small: the shim (one per container) and the
//! pod init. Every pod pays for them.
//!
//! Such a process spends its life in a small loop, but set-up (parsing the bundle, cgroups, the
//! clone) and the dynamic loader have run a large part of its code and of libc. Those pages stay
//! mapped, and on a page fault the kernel maps up to 16 cached neighbouring pages as well
//! (fault-around), so the resident set follows how much code ever ran rather than what the loop
//! needs. Dropping the read-only file pages after set-up, and again after other one-off work,
//! leaves only what the loop touches. Nothing is lost: the pages stay in the page cache, shared
//! with every other process, and fault back in when needed (docs/shim.md, "Resource use").

use std::collections::HashSet;
use std::fs;

/// The mappings whose pages can be dropped, and drops them on request.
pub struct Shedder {
    /// Their lines in /proc/self/maps (address range, permissions, offset, device, inode, path),
    /// with single spaces.
    mappings: HashSet<String>,
    /// The ranges to drop, gathered before any is dropped (see `shed`).
    ranges: Vec<(usize, usize)>,
}

impl Shedder {
    /// Finds the private, read-only file mappings without a single anonymous page (code and
    /// read-only data of the program and its libraries).
    ///
    /// A private mapping's page may differ from the file: written before the mapping was made
    /// read-only (relocations in RELRO data), it is an anonymous copy, and dropping it would undo
    /// the loader's work. In a mapping without anonymous pages every page equals the file. That
    /// takes /proc/self/smaps, which costs a walk of every page table, so it is read once, after
    /// set-up: from then on nothing writes to read-only mappings and no library is loaded.
    pub fn for_current_mappings() -> Shedder {
        let smaps = fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        Shedder {
            mappings: pristine_read_only_file_mappings(&smaps),
            ranges: Vec::new(),
        }
    }

    /// Returns free heap memory to the system and drops the pages of those mappings (the ones
    /// still mapped as they were). Failures are ignored: this only saves memory.
    pub fn shed(&mut self) {
        self.ranges.clear();
        if let Ok(maps) = fs::read_to_string("/proc/self/maps") {
            for line in maps.lines() {
                let line = normalized(line);
                if self.mappings.contains(&line) {
                    self.ranges.extend(range(&line));
                }
            }
        }
        release_free_memory();
        // Nothing but the system calls from here on: whatever code runs after a mapping is
        // dropped (the allocator, string comparisons) faults its pages straight back in.
        for &(start, end) in &self.ranges {
            // SAFETY: the range is one of our own private, read-only file mappings without any
            // anonymous page, mapped as it was when we looked at its pages; after MADV_DONTNEED
            // the next access faults them in again from the page cache, so no code or data
            // changes.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// The header lines of smaps' mappings that are file-backed, private, not writable and have no
/// anonymous pages.
fn pristine_read_only_file_mappings(smaps: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut current = None;
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Anonymous:") {
            let anonymous = !rest.trim_start().starts_with("0 ");
            if let Some(mapping) = current.take().filter(|_| !anonymous) {
                found.insert(mapping);
            }
        } else if range(line).is_some() {
            current = read_only_private_file(line).then(|| normalized(line));
        }
    }
    found
}

/// Whether a mapping's line maps a file private and not writable.
fn read_only_private_file(line: &str) -> bool {
    let mut fields = line.split_ascii_whitespace().skip(1);
    let perms = fields.next().unwrap_or("");
    let path = fields.nth(3).unwrap_or("");
    perms.len() == 4 && !perms.contains('w') && perms.ends_with('p') && path.starts_with('/')
}

/// The address range of a mapping's line; `None` for smaps' lines with a mapping's details.
fn range(line: &str) -> Option<(usize, usize)> {
    let (start, end) = line.split_ascii_whitespace().next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (end > start).then_some((start, end))
}

/// maps pads its columns with spaces; compare lines field by field.
fn normalized(line: &str) -> String {
    line.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// Gives memory freed after a large exec answer back to the system: the allocator would
/// otherwise keep it for the rest of the shim's life.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pristine_read_only_file_mappings_are_shed() {
        let smaps = "\
00200000-002c2000 r--p 00000000 fe:00 64                    /usr/bin/peapod-shim
Rss:                 320 kB
Anonymous:             0 kB
002c2000-005c3000 r-xp 000c2000 fe:00 64                    /usr/bin/peapod-shim
Rss:                 640 kB
Anonymous:             0 kB
005c3000-0060e000 r--p 003c2000 fe:00 64                    /usr/bin/peapod-shim
Rss:                 172 kB
Anonymous:            12 kB
0060e000-00610000 rw-p 0040d000 fe:00 64                    /usr/bin/peapod-shim
Anonymous:             8 kB
7f00a0000000-7f00a0001000 r-xs 00000000 fe:01 77            /dev/shm/shared-code
Anonymous:             0 kB
7f00a0001000-7f00a0021000 rw-p 00000000 00:00 0
Anonymous:           128 kB
7ffd1c000000-7ffd1c001000 r-xp 00000000 00:00 0             [vdso]
Anonymous:             0 kB
";
        let found = pristine_read_only_file_mappings(smaps);
        let expected: HashSet<String> = [
            "00200000-002c2000 r--p 00000000 fe:00 64 /usr/bin/peapod-shim",
            "002c2000-005c3000 r-xp 000c2000 fe:00 64 /usr/bin/peapod-shim",
        ]
        .map(String::from)
        .into();
        assert_eq!(found, expected);
    }

    #[test]
    fn shedding_keeps_the_code_working() {
        let mut shedder = Shedder::for_current_mappings();
        assert!(
            !shedder.mappings.is_empty(),
            "the test program's own code is a pristine read-only mapping"
        );
        shedder.shed();
        // Code and libc calls fault back in from the page cache.
        assert_eq!(format!("{}", 6 * 7), "42");
        assert!(fs::metadata("/proc/self").is_ok());
    }
}
