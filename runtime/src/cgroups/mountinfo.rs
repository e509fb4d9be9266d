//! Finding the mounted cgroup hierarchies in /proc/self/mountinfo.

use std::collections::HashSet;
use std::path::PathBuf;

use super::Hierarchy;

/// One cgroup (v1) or cgroup2 mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    pub mountpoint: PathBuf,
    pub fstype: String,
    /// v1 controllers bound to this hierarchy ("cpu", "cpuacct", "name=systemd", ...).
    pub controllers: Vec<String>,
}

impl CgroupMount {
    pub fn to_hierarchy(&self) -> Hierarchy {
        Hierarchy {
            mountpoint: self.mountpoint.clone(),
            fstype: self.fstype.clone(),
            options: self.controllers.join(","),
        }
    }
}

/// Parses mountinfo(5) text. `known_controllers` (the first column of /proc/cgroups)
/// tells controller names apart from other superblock options such as "rw" or "xattr".
///
/// A hierarchy mounted more than once (bind mounts, e.g. inside containers) is listed
/// once, at its first mountpoint that shows the hierarchy's root.
pub(crate) fn parse(mountinfo: &str, known_controllers: &HashSet<String>) -> Vec<CgroupMount> {
    let mut seen_devices = HashSet::new();
    let mut mounts = Vec::new();
    for line in mountinfo.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let tail: Vec<&str> = after.split(' ').collect();
        let (Some(device), Some(root), Some(mountpoint)) =
            (fields.get(2), fields.get(3), fields.get(4))
        else {
            continue;
        };
        let (Some(fstype), Some(super_options)) = (tail.first(), tail.get(2)) else {
            continue;
        };
        if (*fstype != "cgroup" && *fstype != "cgroup2") || *root != "/" {
            continue;
        }
        if !seen_devices.insert(device.to_string()) {
            continue;
        }
        let controllers = super_options
            .split(',')
            .filter(|o| o.starts_with("name=") || known_controllers.contains(*o))
            .map(str::to_string)
            .collect();
        mounts.push(CgroupMount {
            mountpoint: PathBuf::from(unescape(mountpoint)),
            fstype: fstype.to_string(),
            controllers,
        });
    }
    mounts
}

/// Controller names from /proc/cgroups ("#subsys_name hierarchy num_cgroups enabled").
pub(crate) fn parse_proc_cgroups(content: &str) -> HashSet<String> {
    content
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,noprefix
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
50 23 0:29 / /mnt/cpu\\040copy rw,relatime - cgroup cgroup rw,cpu,cpuacct
51 23 0:31 /sub /mnt/cpuset-sub rw,relatime - cgroup cgroup rw,cpuset
";

    #[test]
    fn parses_hybrid_layout() {
        let known = parse_proc_cgroups("#subsys_name\thierarchy\ncpu\t1\ncpuacct\t1\ncpuset\t2\n");
        let mounts = parse(HYBRID, &known);
        let summary: Vec<(String, String, String)> = mounts
            .iter()
            .map(|m| {
                (
                    m.mountpoint.display().to_string(),
                    m.fstype.clone(),
                    m.controllers.join(","),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "/sys/fs/cgroup/cpu,cpuacct".into(),
                    "cgroup".into(),
                    "cpu,cpuacct".into()
                ),
                (
                    "/sys/fs/cgroup/cpuset".into(),
                    "cgroup".into(),
                    "cpuset".into()
                ),
                (
                    "/sys/fs/cgroup/systemd".into(),
                    "cgroup".into(),
                    "name=systemd".into()
                ),
                ("/sys/fs/cgroup/unified".into(), "cgroup2".into(), "".into()),
            ]
        );
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/plain\\"), "/plain\\");
    }
}
