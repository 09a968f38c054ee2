//! Property tests for the layer unpacker, the parser that takes registry content: whatever a
//! layer holds, unpacking returns Ok or Err, never panics, and never writes outside the root.

use fogshell_agent::image::unpack::{Compression, apply_layer};
use proptest::prelude::*;

/// One hostile-ish tar entry: a path from parts that include `..`, `/` and symlink-prone
/// names, and a kind.
#[derive(Debug, Clone)]
enum Kind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
    Whiteout,
}

fn part() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("".to_owned()),
        Just("etc".to_owned()),
        "[a-z]{1,3}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    (any::<bool>(), proptest::collection::vec(part(), 1..4)).prop_map(|(absolute, parts)| {
        let joined = parts.join("/");
        if absolute {
            format!("/{joined}")
        } else {
            joined
        }
    })
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::File),
        Just(Kind::Dir),
        path().prop_map(Kind::Symlink),
        path().prop_map(Kind::Hardlink),
        Just(Kind::Whiteout),
    ]
}

fn layer(entries: &[(String, Kind)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, kind) in entries {
        let mut h = tar::Header::new_gnu();
        let (entry_type, name) = match kind {
            Kind::File => (tar::EntryType::Regular, name.clone()),
            Kind::Dir => (tar::EntryType::Directory, name.clone()),
            Kind::Symlink(_) => (tar::EntryType::Symlink, name.clone()),
            Kind::Hardlink(_) => (tar::EntryType::Link, name.clone()),
            Kind::Whiteout => (tar::EntryType::Regular, format!("{name}/.wh.a")),
        };
        h.set_entry_type(entry_type);
        h.set_size(if entry_type == tar::EntryType::Regular {
            1
        } else {
            0
        });
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let bytes = name.as_bytes();
        if bytes.len() > 99 {
            continue;
        }
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        if let Kind::Symlink(t) | Kind::Hardlink(t) = kind
            && (t.is_empty() || h.set_link_name(t).is_err())
        {
            continue;
        }
        h.set_cksum();
        let body: &[u8] = if entry_type == tar::EntryType::Regular {
            b"x"
        } else {
            b""
        };
        builder.append(&h, body).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Everything under `dir`, as paths relative to it (not following symlinks).
fn tree(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(dir).unwrap().to_path_buf());
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn nothing_lands_outside_the_root(entries in proptest::collection::vec((path(), kind()), 1..8)) {
        let sandbox = tempfile::tempdir().unwrap();
        let root = sandbox.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let _ = apply_layer(&layer(&entries)[..], Compression::None, &root);
        let outside: Vec<_> = tree(sandbox.path()).into_iter().filter(|p| !p.starts_with("root")).collect();
        prop_assert!(outside.is_empty(), "written outside the root: {outside:?}");
    }

    #[test]
    fn any_bytes_are_refused_or_unpacked_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        compression in prop_oneof![Just(Compression::None), Just(Compression::Gzip), Just(Compression::Zstd)],
    ) {
        let sandbox = tempfile::tempdir().unwrap();
        let root = sandbox.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let _ = apply_layer(&bytes[..], compression, &root);
        let outside: Vec<_> = tree(sandbox.path()).into_iter().filter(|p| !p.starts_with("root")).collect();
        prop_assert!(outside.is_empty(), "written outside the root: {outside:?}");
    }
}
