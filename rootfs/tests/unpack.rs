//! Hostile and tricky layers, crafted here byte by byte: nothing may be written
//! outside the layer directory, whatever the entry names say.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use peapod_rootfs::unpack::{get_xattr, unpack_tar};

/// Appends an entry with the name written raw into the header: the tar crate's
/// own builder refuses `..`, and attackers do not use it.
fn raw_entry(tar: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_size(data.len() as u64);
    header.set_mtime(1_600_000_000);
    header.set_uid(0);
    header.set_gid(0);
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    tar.extend_from_slice(data);
    tar.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
}

fn finish(mut tar: Vec<u8>) -> Vec<u8> {
    tar.extend(std::iter::repeat_n(0u8, 1024));
    tar
}

/// A layer dir inside a sandbox dir, so "outside the layer" is observable.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("layer")).unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/secret"), "secret").unwrap();
        Sandbox { dir }
    }
    fn layer(&self) -> std::path::PathBuf {
        self.dir.path().join("layer")
    }
    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }
    /// Everything outside the layer is as it was.
    fn assert_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        let outside: Vec<_> = std::fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(outside, vec![std::ffi::OsString::from("secret")]);
        assert_eq!(
            std::fs::read_to_string(self.outside().join("secret")).unwrap(),
            "secret"
        );
        assert_eq!(
            std::fs::metadata(self.outside().join("secret"))
                .unwrap()
                .nlink(),
            1
        );
    }
    fn unpack(&self, tar: Vec<u8>) -> peapod_rootfs::Result<peapod_rootfs::Digest> {
        unpack_tar(&tar[..], &self.layer())
    }
}

use tar::EntryType::{Directory, Link, Regular, Symlink};

#[test]
fn dot_dot_and_absolute_names_stay_inside() {
    let sb = Sandbox::new();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "../outside/evil", Regular, "", b"x");
    raw_entry(&mut tar, "../../../../../tmp/evil-abs", Regular, "", b"y");
    raw_entry(&mut tar, "/abs/file", Regular, "", b"z");
    raw_entry(&mut tar, "./a/../../b", Regular, "", b"w");
    sb.unpack(finish(tar)).unwrap();
    sb.assert_untouched();
    assert_eq!(
        std::fs::read_to_string(sb.layer().join("outside/evil")).unwrap(),
        "x"
    );
    assert_eq!(
        std::fs::read_to_string(sb.layer().join("tmp/evil-abs")).unwrap(),
        "y"
    );
    assert_eq!(
        std::fs::read_to_string(sb.layer().join("abs/file")).unwrap(),
        "z"
    );
    assert_eq!(std::fs::read_to_string(sb.layer().join("b")).unwrap(), "w");
}

#[test]
fn writes_through_symlinks_resolve_inside_the_layer() {
    let sb = Sandbox::new();
    let outside = sb.outside();
    let mut tar = Vec::new();
    // An absolute symlink to the real outside dir, a relative one climbing out.
    raw_entry(&mut tar, "abs", Symlink, outside.to_str().unwrap(), b"");
    raw_entry(&mut tar, "up", Symlink, "../../../../..", b"");
    raw_entry(&mut tar, "up/through-up", Regular, "", b"1");
    raw_entry(&mut tar, "abs/", Directory, "", b"");
    let result = sb.unpack(finish(tar.clone()));
    sb.assert_untouched();
    // `up` resolves to the layer root itself.
    if result.is_ok() {
        assert_eq!(
            std::fs::read_to_string(sb.layer().join("through-up")).unwrap(),
            "1"
        );
    }

    // Writing a file under a symlink that points outside: lands inside or fails.
    let sb = Sandbox::new();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "abs", Symlink, outside.to_str().unwrap(), b"");
    raw_entry(&mut tar, "abs/pwned", Regular, "", b"p");
    let _ = sb.unpack(finish(tar));
    sb.assert_untouched();
    assert!(!outside.join("pwned").exists());

    // Replacing a file that is a symlink to outside must replace the link, not write through it.
    let sb = Sandbox::new();
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        "secret",
        Symlink,
        sb.outside().join("secret").to_str().unwrap(),
        b"",
    );
    raw_entry(&mut tar, "secret", Regular, "", b"overwritten");
    sb.unpack(finish(tar)).unwrap();
    sb.assert_untouched();
    assert_eq!(
        std::fs::read_to_string(sb.layer().join("secret")).unwrap(),
        "overwritten"
    );
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let sb = Sandbox::new();
    let secret = sb.outside().join("secret");
    for target in [
        secret.to_str().unwrap().to_string(),
        "../outside/secret".to_string(),
    ] {
        let mut tar = Vec::new();
        raw_entry(&mut tar, "link", Link, &target, b"");
        assert!(
            sb.unpack(finish(tar)).is_err(),
            "hardlink to {target} must fail"
        );
        sb.assert_untouched();
    }
    // Through a symlink to outside: resolved inside the layer, where nothing exists.
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        "out",
        Symlink,
        sb.outside().to_str().unwrap(),
        b"",
    );
    raw_entry(&mut tar, "link2", Link, "out/secret", b"");
    assert!(sb.unpack(finish(tar)).is_err());
    sb.assert_untouched();

    // A legitimate hardlink inside the layer works.
    let sb = Sandbox::new();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "a", Regular, "", b"data");
    raw_entry(&mut tar, "b", Link, "a", b"");
    sb.unpack(finish(tar)).unwrap();
    assert_eq!(
        std::fs::metadata(sb.layer().join("b")).unwrap().ino(),
        std::fs::metadata(sb.layer().join("a")).unwrap().ino()
    );
}

#[test]
fn whiteouts_become_overlay_whiteouts() {
    let sb = Sandbox::new();
    let mut tar = Vec::new();
    raw_entry(&mut tar, "dir/", Directory, "", b"");
    raw_entry(&mut tar, "dir/.wh..wh..opq", Regular, "", b"");
    raw_entry(&mut tar, "dir/kept", Regular, "", b"k");
    raw_entry(&mut tar, "other/.wh.deleted", Regular, "", b"");
    let diff = sb.unpack(finish(tar.clone())).unwrap();
    assert_eq!(
        diff,
        peapod_rootfs::Digest::of(&finish(tar)),
        "diff ID covers the whole stream"
    );
    let wh = std::fs::symlink_metadata(sb.layer().join("other/deleted")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!sb.layer().join("other/.wh.deleted").exists());
    assert!(!sb.layer().join("dir/.wh..wh..opq").exists());
    assert_eq!(
        get_xattr(&sb.layer().join("dir"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        std::fs::metadata(sb.layer().join("dir")).unwrap().mtime(),
        1_600_000_000
    );
}

#[test]
fn overlay_xattrs_from_layers_are_dropped_and_others_kept() {
    let sb = Sandbox::new();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
            ("SCHILY.xattr.user.note", &b"hello"[..]),
        ])
        .unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_size(3);
    header.set_mode(0o4755);
    header.set_uid(42);
    header.set_gid(43);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append_data(&mut header, "suid", &b"abc"[..])
        .unwrap();
    let mut dev = tar::Header::new_ustar();
    dev.set_entry_type(tar::EntryType::Char);
    dev.set_device_major(1).unwrap();
    dev.set_device_minor(3).unwrap();
    dev.set_mode(0o666);
    dev.set_size(0);
    dev.set_uid(0);
    dev.set_gid(0);
    dev.set_mtime(0);
    dev.set_cksum();
    builder
        .append_data(&mut dev, "null", std::io::empty())
        .unwrap();
    let tar = builder.into_inner().unwrap();
    sb.unpack(tar).unwrap();
    let file = sb.layer().join("suid");
    assert_eq!(get_xattr(&file, "trusted.overlay.redirect"), None);
    assert_eq!(
        get_xattr(&file, "user.note").as_deref(),
        Some(&b"hello"[..])
    );
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o4755, 42, 43)
    );
    let null = std::fs::symlink_metadata(sb.layer().join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
}

#[test]
fn compressed_layers_unpack_and_verify() {
    let mut tar = Vec::new();
    raw_entry(&mut tar, "hello", Regular, "", b"hi");
    let tar = finish(tar);
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("layer.gz");
    let mut enc = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    enc.write_all(&tar).unwrap();
    enc.finish().unwrap();
    let zst = dir.path().join("layer.zst");
    std::fs::write(&zst, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    for (path, compression) in [
        (&gz, peapod_rootfs::manifest::Compression::Gzip),
        (&zst, peapod_rootfs::manifest::Compression::Zstd),
    ] {
        let out = dir.path().join(format!("out-{compression:?}"));
        std::fs::create_dir(&out).unwrap();
        let diff = peapod_rootfs::unpack::unpack_layer(path, &compression, &out).unwrap();
        assert_eq!(diff, peapod_rootfs::Digest::of(&tar));
        assert_eq!(std::fs::read_to_string(out.join("hello")).unwrap(), "hi");
    }
    assert!(Path::new(&gz).exists());
}
