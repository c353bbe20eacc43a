//! Files written whole or not at all, and secret files only their owner can read.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Largest secret or config file read.
const MAX_READ: u64 = 1 << 20;

/// Writes `data` to `path` atomically: a temporary file in the same folder with `mode`,
/// fsync, rename over `path`, fsync the folder. A reader sees the old file or the new one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have cleared bits we asked for; set exactly `mode`.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes a secret file (mode 0600) atomically.
pub fn write_secret(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic(path, data, 0o600)
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Reads a secret file, refusing it if anyone but its owner may read or write it.
pub fn read_secret(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    if meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is accessible by other users (mode {:o}); run: chmod 600 {}",
                path.display(),
                meta.mode() & 0o777,
                path.display()
            ),
        ));
    }
    read_bounded(&mut f, meta.len())
}

/// Reads a file of at most 1 MiB.
pub fn read_small(path: &Path) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    read_bounded(&mut f, len)
}

fn read_bounded(f: &mut File, len: u64) -> io::Result<Zeroizing<Vec<u8>>> {
    if len > MAX_READ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file is larger than 1 MiB",
        ));
    }
    let mut buf = Zeroizing::new(Vec::with_capacity(len as usize));
    f.take(MAX_READ + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_READ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file is larger than 1 MiB",
        ));
    }
    Ok(buf)
}

/// Reads a secret file as UTF-8 text.
pub fn read_secret_text(path: &Path) -> io::Result<Zeroizing<String>> {
    let bytes = read_secret(path)?;
    match std::str::from_utf8(&bytes) {
        Ok(s) => Ok(Zeroizing::new(s.to_owned())),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "file is not UTF-8 text",
        )),
    }
}

/// Creates a folder (and its parents) that only its owner can enter. A folder that already
/// exists keeps its permissions: ferry does not change the mode of a folder it did not make.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))
}

/// Makes `path` a folder only its owner can enter (mode 0700): created if missing, and if it
/// exists with access for group or others, its mode is set to 0700. Returns the mode it had
/// if it was changed. A shared folder (sticky bit, like `/tmp`) is refused, never changed.
///
/// For folders ferry owns whole, such as a server folder: its keys are protected by their own
/// modes, and the folder's mode keeps others from even listing them.
pub fn make_private_dir(path: &Path) -> io::Result<Option<u32>> {
    if !path.is_dir() {
        create_private_dir(path)?;
        return Ok(None);
    }
    let mode = fs::metadata(path)?.mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    if mode & 0o1000 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is a shared folder (mode {mode:o}); choose a folder of its own",
                path.display()
            ),
        ));
    }
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    Ok(Some(mode))
}

/// The mode of folder `path` if group or others have any access to it.
pub fn open_to_others(path: &Path) -> Option<u32> {
    let mode = fs::metadata(path).ok()?.mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_private_dir_closes_an_existing_folder_and_refuses_a_shared_one() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("new");
        assert_eq!(make_private_dir(&new).unwrap(), None);
        assert_eq!(fs::metadata(&new).unwrap().mode() & 0o777, 0o700);
        assert_eq!(open_to_others(&new), None);
        let old = dir.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(open_to_others(&old), Some(0o755));
        assert_eq!(make_private_dir(&old).unwrap(), Some(0o755));
        assert_eq!(fs::metadata(&old).unwrap().mode() & 0o777, 0o700);
        assert_eq!(make_private_dir(&old).unwrap(), None);
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(
            make_private_dir(&shared).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(fs::metadata(&shared).unwrap().mode() & 0o7777, 0o1777);
    }

    #[test]
    fn secret_files_are_0600_and_refused_when_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_secret(&p, b"abc").unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(&read_secret(&p).unwrap()[..], b"abc");
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&p).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("chmod 600"));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(read_secret(&p).is_err());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomic(&p, b"one", 0o644).unwrap();
        write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_dir_is_0700_but_an_existing_one_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let new = dir.path().join("a/b");
        create_private_dir(&new).unwrap();
        assert_eq!(fs::metadata(&new).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(dir.path()).unwrap();
        assert_eq!(fs::metadata(dir.path()).unwrap().mode() & 0o777, 0o755);
    }

    #[test]
    fn oversized_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        write_secret(&p, &vec![0; (MAX_READ + 1) as usize]).unwrap();
        assert!(read_secret(&p).is_err());
    }
}
