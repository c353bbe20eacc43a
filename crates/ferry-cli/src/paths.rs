//! Mapping between local paths and source names for folder transfers (`put -r`, `get -r`):
//! a relative path under DIR becomes `PREFIX/a/b` (UTF-8, NFC, PROTOCOL.md §5.1), and a
//! listed name under `PREFIX/` becomes a path that can only lie inside DIR, whatever the
//! server sent.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use ferry::proto::names::{SourceName, normalize_prefix};

/// A folder prefix as typed (`reports`, `reports/`, or empty for everything), normalised to
/// NFC and ending in `/` unless empty.
pub fn folder_prefix(typed: &str) -> Result<String, ferry::proto::names::NameError> {
    let mut p = normalize_prefix(typed)?;
    if !p.is_empty() && !p.ends_with('/') {
        p.push('/');
    }
    Ok(p)
}

/// The source name for `rel` (a path relative to the folder being uploaded) under `prefix`
/// (from [`folder_prefix`]), or why there is none.
pub fn source_for(prefix: &str, rel: &Path) -> Result<SourceName, String> {
    let mut name = prefix.to_owned();
    for (i, c) in rel.components().enumerate() {
        let Component::Normal(part) = c else {
            return Err("not a plain relative path".into());
        };
        let Some(part) = part.to_str() else {
            return Err("its name is not UTF-8".into());
        };
        if i > 0 {
            name.push('/');
        }
        name.push_str(part);
    }
    SourceName::parse(&name).map_err(|e| format!("cannot be a source name: {e}"))
}

/// The path under `dir` where the listed source `name` goes, for a listing of `prefix` (from
/// [`folder_prefix`]). Refuses anything that is not a canonical source name under `prefix`,
/// so every segment is a plain, non-empty file name without `/`, `\`, NUL or control
/// characters, never `.` or `..`: the path cannot leave `dir`.
pub fn local_for(dir: &Path, prefix: &str, name: &str) -> Result<PathBuf, String> {
    let canonical =
        SourceName::parse_canonical(name).map_err(|e| format!("not a valid name: {e}"))?;
    let rest = canonical
        .as_str()
        .strip_prefix(prefix)
        .ok_or_else(|| format!("not under the prefix '{prefix}'"))?;
    let mut path = dir.to_path_buf();
    for seg in rest.split('/') {
        // Belt and braces: §5.1 refuses all of these already.
        if seg.is_empty()
            || seg == "."
            || seg == ".."
            || seg.contains(['\\', '\0'])
            || seg.chars().any(char::is_control)
        {
            return Err(format!("segment '{seg}' cannot be a file name"));
        }
        let mut one = Path::new(seg).components();
        match (one.next(), one.next()) {
            (Some(Component::Normal(_)), None) => path.push(seg),
            _ => return Err(format!("segment '{seg}' cannot be a file name")),
        }
    }
    if !path.starts_with(dir) || path == dir {
        return Err("it maps outside the folder".into());
    }
    Ok(path)
}

/// Remembers the paths a download writes, to refuse two names that would write the same
/// path, or a file where another name needs a folder (and the other way round).
#[derive(Default)]
pub struct Claimed {
    files: HashSet<PathBuf>,
    folders: HashSet<PathBuf>,
}

impl Claimed {
    /// Claims `path` (under `dir`) as a file; `Err` says what it collides with.
    pub fn claim(&mut self, dir: &Path, path: &Path) -> Result<(), String> {
        if self.files.contains(path) {
            return Err("another name maps to the same file".into());
        }
        if self.folders.contains(path) {
            return Err("another name needs a folder there".into());
        }
        let parents: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .take_while(|p| p.starts_with(dir) && *p != dir)
            .collect();
        if let Some(p) = parents.iter().find(|p| self.files.contains(**p)) {
            return Err(format!(
                "{} is a file of another name, not a folder",
                p.display()
            ));
        }
        for p in parents {
            self.folders.insert(p.to_path_buf());
        }
        self.files.insert(path.to_path_buf());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_listed_names_never_leave_the_folder() {
        let dir = Path::new("/tmp/into");
        let p = "reports/";
        for bad in [
            "reports/../x",
            "reports/a/../../x",
            "reports/./x",
            "reports//x",
            "reports/",
            "reports",
            "/etc/passwd",
            "reports//etc/passwd",
            "reports/a\\..\\..\\x",
            "reports/..\\x",
            "reports/a\u{0}b",
            "reports/\u{1b}[2J",
            "reports/e\u{301}",
            "other/x",
            "reportsx/y",
            "../reports/x",
            "",
            "~cursor",
        ] {
            assert!(local_for(dir, p, bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            local_for(dir, p, "reports/2026/Q3 été 日本.csv").unwrap(),
            Path::new("/tmp/into/2026/Q3 été 日本.csv")
        );
        assert_eq!(
            local_for(dir, "", "a/b").unwrap(),
            Path::new("/tmp/into/a/b")
        );
        // Whatever is accepted stays strictly inside the folder.
        for name in [
            "reports/..a",
            "reports/a..",
            "reports/...",
            "reports/ a /~b",
        ] {
            let path = local_for(dir, p, name).unwrap();
            assert!(path.starts_with(dir) && path != dir, "{name}");
            assert!(
                path.components()
                    .all(|c| !matches!(c, Component::ParentDir))
            );
        }
    }

    #[test]
    fn names_that_collide_after_mapping_are_refused() {
        let dir = Path::new("/d");
        let mut c = Claimed::default();
        c.claim(dir, Path::new("/d/a/b")).unwrap();
        assert!(c.claim(dir, Path::new("/d/a/b")).is_err());
        // `a` is a folder of a/b: no file `a`.
        assert!(c.claim(dir, Path::new("/d/a")).is_err());
        c.claim(dir, Path::new("/d/f")).unwrap();
        // `f` is a file: nothing under it.
        assert!(c.claim(dir, Path::new("/d/f/g")).is_err());
        c.claim(dir, Path::new("/d/a/c")).unwrap();
    }

    #[test]
    fn local_paths_become_nfc_names_under_the_prefix() {
        assert_eq!(folder_prefix("reports").unwrap(), "reports/");
        assert_eq!(folder_prefix("reports/").unwrap(), "reports/");
        assert_eq!(folder_prefix("").unwrap(), "");
        let n = source_for("r/", Path::new("e\u{301}t\u{e9}/日本 x.txt")).unwrap();
        assert_eq!(n.as_str(), "r/\u{e9}t\u{e9}/日本 x.txt");
        assert!(source_for("r/", Path::new("a\\b")).is_err());
        assert!(source_for("r/", Path::new("tab\t")).is_err());
        assert!(source_for("r/", Path::new("../x")).is_err());
        use std::os::unix::ffi::OsStrExt;
        let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9");
        assert!(source_for("r/", Path::new(latin1)).is_err());
    }
}
