//! Named client profiles, so one person can use several servers: `CONFIG/profiles.toml`
//! names credential files, and `--profile NAME` (or `FERRY_PROFILE`) picks one.
//!
//! ```toml
//! [profiles.work]
//! cred = "work.cred"              # relative to CONFIG
//! [profiles.home]
//! cred = "/home/me/home.cred"
//! server = "nas.local:7443"       # optional: overrides the credential's address
//! ```
//!
//! CONFIG is `$FERRY_CONFIG`, else the per-user configuration folder's `ferry` (see
//! [`crate::account::config_dir`]). The file holds no secret: only paths and addresses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::CredArg;
use crate::exit::bad_input;

/// The file's name in the config folder.
pub const FILE: &str = "profiles.toml";

/// `profiles.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profiles {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// One profile.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The credential file (relative paths are relative to the config folder).
    pub cred: PathBuf,
    /// Overrides the credential's server address.
    #[serde(default)]
    pub server: Option<String>,
}

/// How a data command reaches the server: a credential file (or none: the login session)
/// and an address overriding the one stored with it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// The credential file; `None`: the session of `ferry login`.
    pub cred: Option<PathBuf>,
    /// `--server`, else the profile's `server`.
    pub server: Option<String>,
}

/// Parses `text` (the contents of `CONFIG/profiles.toml`) and picks `name`, resolving a
/// relative credential path against `config`.
fn pick(text: &str, name: &str, config: &Path, file: &Path) -> anyhow::Result<Profile> {
    let all: Profiles =
        toml::from_str(text).map_err(|e| bad_input(format!("{}: {e}", file.display())))?;
    let Some(p) = all.profiles.get(name) else {
        let known: Vec<&str> = all.profiles.keys().map(String::as_str).collect();
        return Err(bad_input(format!(
            "no profile '{name}' in {} (it has: {})",
            file.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        ))
        .into());
    };
    let mut p = p.clone();
    if p.cred.is_relative() {
        p.cred = config.join(&p.cred);
    }
    Ok(p)
}

/// Resolves `--cred`, `--profile` and `--server` into where to connect.
pub fn target(arg: &CredArg) -> anyhow::Result<Target> {
    let Some(name) = &arg.profile else {
        return Ok(Target {
            cred: arg.cred.clone(),
            server: arg.server.clone(),
        });
    };
    if arg.cred.is_some() {
        return Err(bad_input(
            "--cred (or FERRY_CRED) and --profile (or FERRY_PROFILE) do not go together",
        )
        .into());
    }
    let config = crate::account::config_dir()?;
    let file = config.join(FILE);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            return Err(bad_input(format!(
                "--profile {name}: cannot read {}: {e}",
                file.display()
            ))
            .into());
        }
    };
    let p = pick(&text, name, &config, &file)?;
    if let Some(s) = &p.server {
        crate::cli::parse_server(s).map_err(|e| {
            bad_input(format!(
                "{}: profile {name}: server {s:?}: {e}",
                file.display()
            ))
        })?;
    }
    Ok(Target {
        cred: Some(p.cred),
        server: arg.server.clone().or(p.server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
[profiles.work]
cred = "work.cred"
[profiles.home]
cred = "/abs/home.cred"
server = "nas.local:7443"
"#;

    #[test]
    fn picks_a_profile_and_resolves_its_path() {
        let cfg = Path::new("/cfg");
        let f = Path::new("/cfg/profiles.toml");
        let w = pick(TEXT, "work", cfg, f).unwrap();
        assert_eq!(w.cred, Path::new("/cfg/work.cred"));
        assert_eq!(w.server, None);
        let h = pick(TEXT, "home", cfg, f).unwrap();
        assert_eq!(h.cred, Path::new("/abs/home.cred"));
        assert_eq!(h.server.as_deref(), Some("nas.local:7443"));
        let e = pick(TEXT, "nope", cfg, f).unwrap_err();
        assert!(e.to_string().contains("it has: home, work"), "{e}");
        assert_eq!(crate::exit::code(&e), crate::exit::USAGE);
        let e = pick("[profiles.x]\ncredd = 1", "x", cfg, f).unwrap_err();
        assert_eq!(crate::exit::code(&e), crate::exit::USAGE);
    }
}
