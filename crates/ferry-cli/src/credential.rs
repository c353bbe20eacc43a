//! Reading a credential file.

use std::path::Path;

use ferry::fsutil;
use ferry::proto::credential::Credential;

use crate::exit::bad_input;

/// Reads and parses a credential file, refusing one that others may read. The file is given
/// on the command line (or by a profile), so any failure is bad input (exit code 2).
pub fn load(path: &Path) -> anyhow::Result<Credential> {
    let text = fsutil::read_secret_text(path).map_err(|e| {
        if e.raw_os_error().is_some() {
            bad_input(format!(
                "cannot read credential file {}: {e}",
                path.display()
            ))
        } else {
            // fsutil's own refusals (mode, size, encoding) already name the file or the fix.
            bad_input(format!("credential file {}: {e}", path.display()))
        }
    })?;
    Credential::parse(&text)
        .map_err(|e| bad_input(format!("credential file {}: {e}", path.display())).into())
}
