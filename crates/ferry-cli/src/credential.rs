//! Reading a credential file.

use std::path::Path;

use anyhow::{Context, anyhow};
use ferry::fsutil;
use ferry::proto::credential::Credential;

/// Reads and parses a credential file, refusing one that others may read.
pub fn load(path: &Path) -> anyhow::Result<Credential> {
    let text = fsutil::read_secret_text(path).map_err(|e| {
        if e.raw_os_error().is_some() {
            anyhow!("cannot read credential file {}: {e}", path.display())
        } else {
            // fsutil's own refusals (mode, size, encoding) already name the file or the fix.
            anyhow!("credential file {}: {e}", path.display())
        }
    })?;
    Credential::parse(&text).with_context(|| format!("credential file {}", path.display()))
}
