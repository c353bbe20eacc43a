//! The parts of `ferry.toml` a running server re-reads on request (SIGHUP for `ferry serve`):
//! roles, login limits, session lifetimes, password parameters and `[limits]`. [`Rules`] are swapped
//! whole, so a request sees either the old file or the new one, never a mix; a file that
//! does not parse or whose roles are invalid is refused and the old rules stay. Settings read
//! only at start (addresses, connection budgets, timeouts, `keep_versions`) are reported as
//! needing a restart when they differ.

use std::sync::{Arc, RwLock};

use ferry_backend::accounts::LoginPolicy;
use ferry_proto::password::KsfParams;

use crate::Error;
use crate::config::{Config, PrincipalLimits, SessionLimits};
use crate::policy::Policy;
use crate::server_dir::ServerDir;

/// What a reload may change.
#[derive(Debug)]
pub(crate) struct Rules {
    /// Roles: who may do what (`[roles]`).
    pub(crate) policy: Policy,
    /// When failed logins lock an account or an address (`[login]`).
    pub(crate) login: LoginPolicy,
    /// Session lifetimes (`[sessions]`).
    pub(crate) sessions: SessionLimits,
    /// Argon2id parameters for new password records (`[password]`).
    pub(crate) new_ksf: KsfParams,
    /// Limits per principal and per address (`[limits]`).
    pub(crate) limits: PrincipalLimits,
}

impl Rules {
    pub(crate) fn from_config(config: &Config) -> Result<Self, Error> {
        Ok(Self {
            policy: Policy::new(&config.roles)?,
            login: config.login.policy(),
            sessions: config.sessions.clone(),
            new_ksf: config.password,
            limits: config.limits.clone(),
        })
    }
}

/// The current rules, shared by the engine and every [`Reloader`].
#[derive(Clone, Debug)]
pub(crate) struct LiveRules {
    current: Arc<RwLock<Arc<Rules>>>,
    /// The configuration the server started with, to name settings a reload cannot change.
    started: Arc<Config>,
}

impl LiveRules {
    pub(crate) fn new(config: &Config) -> Result<Self, Error> {
        Ok(Self {
            current: Arc::new(RwLock::new(Arc::new(Rules::from_config(config)?))),
            started: Arc::new(config.clone()),
        })
    }

    /// The rules now in force.
    pub(crate) fn get(&self) -> Arc<Rules> {
        match self.current.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, rules: Rules) {
        let mut w = match self.current.write() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        *w = Arc::new(rules);
    }
}

/// Re-reads a running server's `ferry.toml`: see [`BoundServer::reloader`](crate::BoundServer::reloader).
#[derive(Clone, Debug)]
pub struct Reloader {
    pub(crate) dir: ServerDir,
    pub(crate) rules: LiveRules,
}

impl Reloader {
    /// Reads `ferry.toml` again and puts its roles, `[limits]`, `[login]`, `[sessions]` and `[password]`
    /// in force for every request from now on; open connections stay open (a principal
    /// whose role lost a right is refused at its next request). A file that does not load
    /// is refused with its error and the rules in force stay. Returns the settings that
    /// differ from those the server started with but take effect only at the next start.
    pub fn reload(&self) -> Result<Vec<&'static str>, Error> {
        let config = self.dir.config()?;
        let rules = Rules::from_config(&config)?;
        self.rules.set(rules);
        Ok(needs_restart(&self.rules.started, &config))
    }
}

/// The settings read only at start that differ between `a` and `b`.
fn needs_restart(a: &Config, b: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name, same: bool| {
        if !same {
            out.push(name);
        }
    };
    check("listen", a.listen == b.listen);
    check("address", a.address == b.address);
    check("keep_versions", a.keep_versions == b.keep_versions);
    check("keep_changes", a.keep_changes == b.keep_changes);
    check("max_connections", a.max_connections == b.max_connections);
    check("max_pending", a.max_pending == b.max_pending);
    check(
        "max_pending_per_address",
        a.max_pending_per_address == b.max_pending_per_address,
    );
    check(
        "hello_timeout_secs",
        a.hello_timeout_secs == b.hello_timeout_secs,
    );
    check(
        "handshake_timeout_secs",
        a.handshake_timeout_secs == b.handshake_timeout_secs,
    );
    check(
        "idle_timeout_secs",
        a.idle_timeout_secs == b.idle_timeout_secs,
    );
    check(
        "shutdown_grace_secs",
        a.shutdown_grace_secs == b.shutdown_grace_secs,
    );
    check(
        "mesh.max_join_failures",
        a.mesh.max_join_failures == b.mesh.max_join_failures,
    );
    check(
        "uploads.keep_secs",
        a.uploads.keep_secs == b.uploads.keep_secs,
    );
    check("backend", a.backend == b.backend);
    out
}
