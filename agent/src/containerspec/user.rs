//! Who a container runs as: the CRI security context first, then the image's `User`, resolved
//! against the image's own /etc/passwd and /etc/group as a container runtime must (the host's
//! user database means nothing inside the image).
use std::path::Path;

use super::SpecError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// `user` is `uid`, `name`, `uid:gid`, `name:group`… as in an image config or `run_as_username`.
/// `group` overrides the group part (CRI `run_as_group`).
pub fn resolve(
    rootfs: &Path,
    user: &str,
    group: Option<u32>,
    extra_groups: &[i64],
) -> Result<Identity, SpecError> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read(rootfs, "etc/passwd");
    let entry = |field: usize, value: &str| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.get(field) == Some(&value))
    };
    let (uid, mut gid, name) = if user_part.is_empty() {
        (0, 0, "root".to_string())
    } else if let Ok(uid) = user_part.parse::<u32>() {
        // A numeric uid need not exist in /etc/passwd; its primary group then is 0, as in Docker.
        match entry(2, user_part) {
            Some(f) => (
                uid,
                f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
                f[0].to_string(),
            ),
            None => (uid, 0, String::new()),
        }
    } else {
        let f = entry(0, user_part).ok_or_else(|| {
            SpecError::Invalid(format!(
                "user {user_part:?} is not in the image's /etc/passwd"
            ))
        })?;
        let uid = f
            .get(2)
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| SpecError::Invalid(format!("bad /etc/passwd entry for {user_part}")))?;
        (
            uid,
            f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0),
            user_part.to_string(),
        )
    };
    let groups = read(rootfs, "etc/group");
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.first() == Some(&g))
                .and_then(|f| f.get(2).and_then(|n| n.parse().ok()))
                .ok_or_else(|| {
                    SpecError::Invalid(format!("group {g:?} is not in the image's /etc/group"))
                })?,
        };
    }
    if let Some(g) = group {
        gid = g;
    }
    // The user's memberships from /etc/group, then the pod's supplemental groups.
    let mut additional: Vec<u32> = Vec::new();
    if !name.is_empty() {
        for fields in groups.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            let members = fields.get(3).copied().unwrap_or_default();
            if members.split(',').any(|m| m == name) {
                if let Some(n) = fields.get(2).and_then(|n| n.parse().ok()) {
                    additional.push(n);
                }
            }
        }
    }
    for g in extra_groups {
        let g = u32::try_from(*g)
            .map_err(|_| SpecError::Invalid(format!("supplemental group {g} is out of range")))?;
        additional.push(g);
    }
    additional.sort_unstable();
    additional.dedup();
    additional.retain(|g| *g != gid);
    Ok(Identity {
        uid,
        gid,
        additional_gids: additional,
    })
}

fn read(rootfs: &Path, file: &str) -> String {
    // The image's files, read through the snapshot; a symlink there could point anywhere on the
    // host, so only regular files are trusted.
    let path = rootfs.join(file);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => std::fs::read_to_string(path).unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:app\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_numbers_and_groups() {
        let r = rootfs();
        assert_eq!(
            resolve(r.path(), "", None, &[]).unwrap(),
            Identity {
                uid: 0,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            resolve(r.path(), "app", None, &[]).unwrap(),
            Identity {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![10]
            }
        );
        assert_eq!(
            resolve(r.path(), "1000", None, &[5]).unwrap(),
            Identity {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![5, 10]
            }
        );
        assert_eq!(
            resolve(r.path(), "4242", None, &[]).unwrap(),
            Identity {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(resolve(r.path(), "app:wheel", None, &[]).unwrap().gid, 10);
        assert_eq!(resolve(r.path(), "app", Some(7), &[]).unwrap().gid, 7);
        assert!(resolve(r.path(), "nobody-here", None, &[]).is_err());
    }
}
