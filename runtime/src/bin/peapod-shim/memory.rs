//! Keeping the shim's resident memory small: every pod pays for its shims.
//!
//! A shim spends its life in a small event loop, but set-up (parsing the bundle, cgroups, the
//! clone) and the dynamic loader have run a large part of its code and of libc. Those pages stay
//! mapped, and on a page fault the kernel maps up to 16 cached neighbouring pages as well
//! (fault-around), so the resident set follows how much code ever ran rather than what the loop
//! needs. Dropping the read-only file pages after set-up, and again after serving a request,
//! leaves only what the loop touches. Nothing is lost: the pages stay in the page cache, shared
//! with every other shim, and fault back in when needed (docs/shim.md, "Resource use").

use std::fs;

/// Unmaps the pages of this process's read-only file mappings (its own code and data, and the
/// shared libraries'), and returns free heap memory to the system.
///
/// A private mapping's page may differ from the file: written before the mapping was made
/// read-only (relocations in RELRO data), such a page is an anonymous copy and dropping it would
/// undo the loader's work. So only mappings without a single anonymous page are dropped: every
/// page of those equals the file. Failures are ignored: this only saves memory.
pub fn shed() {
    if let Ok(smaps) = fs::read_to_string("/proc/self/smaps") {
        for (start, end) in pristine_read_only_file_mappings(&smaps) {
            // SAFETY: the range is one of our own private, read-only file mappings without any
            // anonymous page, so its pages equal the file's contents; after MADV_DONTNEED the next
            // access faults them in again from the page cache, so no code or data changes.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    release_free_memory();
}

/// The ranges of /proc/self/smaps' mappings that are file-backed, private, not writable and have
/// no anonymous pages.
fn pristine_read_only_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current = None;
    for line in smaps.lines() {
        if let Some(rest) = line.strip_prefix("Anonymous:") {
            let anonymous = rest.trim_start().starts_with("0 ");
            if let Some(range) = current.take().filter(|_| anonymous) {
                found.push(range);
            }
        } else if let Some(mapping) = mapping_header(line) {
            current = mapping;
        }
    }
    found
}

/// For a mapping's header line of smaps: `Some(Some(range))` if it maps a file private and not
/// writable, `Some(None)` for any other mapping; `None` for the lines with its details.
fn mapping_header(line: &str) -> Option<Option<(usize, usize)>> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    let path = fields.nth(3).unwrap_or("");
    let read_only_file = perms.len() == 4
        && !perms.contains('w')
        && perms.ends_with('p')
        && path.starts_with('/')
        && end > start;
    Some(read_only_file.then_some((start, end)))
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
00200000-002c2000 r--p 00000000 fe:00 64 /usr/bin/peapod-shim
Rss:                 320 kB
Anonymous:             0 kB
002c2000-005c3000 r-xp 000c2000 fe:00 64 /usr/bin/peapod-shim
Rss:                 640 kB
Anonymous:             0 kB
005c3000-0060e000 r--p 003c2000 fe:00 64 /usr/bin/peapod-shim
Rss:                 172 kB
Anonymous:            12 kB
0060e000-00610000 rw-p 0040d000 fe:00 64 /usr/bin/peapod-shim
Anonymous:             8 kB
7f00a0000000-7f00a0001000 r-xs 00000000 fe:01 77 /dev/shm/shared-code
Anonymous:             0 kB
7f00a0001000-7f00a0021000 rw-p 00000000 00:00 0
Anonymous:           128 kB
7ffd1c000000-7ffd1c001000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            pristine_read_only_file_mappings(smaps),
            [(0x200000, 0x2c2000), (0x2c2000, 0x5c3000)]
        );
    }

    #[test]
    fn shedding_keeps_the_code_working() {
        shed();
        // Code and libc calls fault back in from the page cache.
        assert_eq!(format!("{}", 6 * 7), "42");
        assert!(fs::metadata("/proc/self").is_ok());
    }
}
