//! A version's metadata (docs/PROTOCOL.md §5.3) given back to a downloaded file: its
//! modification time, and the executable bit where the file is readable.

use std::fs::{File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

use ferry::proto::message::Entry;

/// Sets `file`'s modification time to the version's, and adds execute permission for whoever
/// may read it if the version was executable. A version without metadata changes nothing.
pub(crate) fn apply(file: &File, e: &Entry) -> io::Result<()> {
    if let Some(ns) = e.mtime {
        file.set_modified(UNIX_EPOCH + Duration::from_nanos(ns))?;
    }
    if e.executable {
        let mode = file.metadata()?.permissions().mode();
        let x = (mode & 0o444) >> 2;
        if mode & x != x {
            file.set_permissions(Permissions::from_mode(mode | x))?;
        }
    }
    Ok(())
}
