//! Password accounts through the real binary: `user invite|list|remove|reset`, `register`,
//! `login`, data commands on the login session, `logout`, `passwd`, `session list|revoke`.

// Test code: a failed step should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Env, Out, Served};

const PW: &str = "correct horse battery staple";

/// A running server whose Argon2id parameters are small, so tests run fast.
struct Accounts {
    env: Env,
    server: Served,
    id: String,
}

impl Accounts {
    fn new() -> Self {
        let env = Env::new();
        let id = env.init();
        let conf = env.server_dir().join("ferry.toml");
        let text = fs::read_to_string(&conf).unwrap();
        let fast = text.replace("m_kib = 65536\nt = 3", "m_kib = 1024\nt = 1");
        assert_ne!(fast, text, "ferry.toml's [password] section changed shape");
        fs::write(&conf, fast).unwrap();
        let server = Served::start(&env);
        Self { env, server, id }
    }

    fn run(&self, args: &[&str]) -> Out {
        self.env.run(args)
    }

    /// `user invite NAME --role ROLE --server ADDR` with extra arguments; returns the file.
    fn invite(&self, name: &str, role: &str, extra: &[&str]) -> PathBuf {
        let mut args = vec![
            "user",
            "invite",
            name,
            "--role",
            role,
            "--server",
            &self.server.addr,
        ];
        args.extend(extra);
        self.run(&args).ok();
        self.env.join(&format!("{name}.invite"))
    }

    fn register(&self, invite: &Path, pw: &str) -> Out {
        self.env.run_stdin(
            &[
                "register",
                "--invite",
                invite.to_str().unwrap(),
                "--password-stdin",
            ],
            format!("{pw}\n").into_bytes(),
        )
    }

    /// `login --user NAME` using the profile.
    fn login(&self, user: &str, pw: &str) -> Out {
        self.env.run_stdin(
            &["login", "--user", user, "--password-stdin"],
            format!("{pw}\n").into_bytes(),
        )
    }

    /// Invite, register and log in `name`.
    fn enrol(&self, name: &str, role: &str) {
        let invite = self.invite(name, role, &[]);
        self.register(&invite, PW).ok();
        self.login(name, PW).ok();
    }

    fn session_file(&self) -> PathBuf {
        self.env.config_dir().join("session.toml")
    }

    /// A field of session.toml.
    fn session_field(&self, key: &str) -> String {
        let text = fs::read_to_string(self.session_file()).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        v[key].as_str().unwrap().to_owned()
    }
}

#[track_caller]
fn auth_failed(out: &Out) {
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("ferry: authentication failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn invite_register_login_use_the_session_and_logout() {
    let a = Accounts::new();
    let out = a
        .run(&[
            "user",
            "invite",
            "carol",
            "--role",
            "writer",
            "--attr",
            "team=ops",
            "--server",
            &a.server.addr,
        ])
        .ok();
    assert!(out.stderr.contains("carol.invite"), "{}", out.stderr);
    assert!(out.stderr.contains("valid until"), "{}", out.stderr);
    let invite = a.env.join("carol.invite");
    let mode = fs::metadata(&invite).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let out = a.register(&invite, PW).ok();
    assert!(out.text().contains("registered carol"), "{}", out.text());
    assert!(!out.stderr.contains(PW) && !out.text().contains(PW));
    let profile = fs::read_to_string(a.env.config_dir().join("profile.toml")).unwrap();
    assert!(profile.contains(&a.id), "{profile}");
    assert!(profile.contains(&a.server.addr), "{profile}");

    // The invite is spent.
    auth_failed(&a.register(&invite, "another password"));

    // The profile is enough: no --server.
    let out = a.login("carol", PW).ok();
    assert!(
        out.text()
            .starts_with("logged in as carol (role writer); session valid until "),
        "{}",
        out.text()
    );
    let mode = fs::metadata(a.session_file()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // Data commands without --cred use the session.
    let data = a.env.join("data.txt");
    fs::write(&data, b"hello via session").unwrap();
    a.run(&["put", "notes/a", data.to_str().unwrap()]).ok();
    let got = a.run(&["get", "notes/a"]).ok();
    assert_eq!(got.stdout, b"hello via session");
    let ls = a.run(&["ls"]).ok();
    assert!(ls.text().contains("notes/a"), "{}", ls.text());
    let stat = a.run(&["stat", "notes/a", "--json"]).ok();
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).unwrap();
    assert_eq!(stat["by"], "carol", "{stat}");

    // `user list` shows the user, its parameters and the spent invite.
    let list = a.run(&["user", "list"]).ok().text();
    assert!(list.contains("carol"), "{list}");
    assert!(list.contains("team=ops"), "{list}");
    assert!(list.contains("1024KiB/1/1"), "{list}");
    assert!(list.contains("spent"), "{list}");
    let json = a.run(&["user", "list", "--json"]).ok().text();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["users"][0]["name"], "carol");
    assert_eq!(v["users"][0]["argon2id"]["m_kib"], 1024);
    assert_eq!(v["invites"][0]["spent"], true);

    let out = a.run(&["logout"]).ok();
    assert!(out.text().contains("logged out carol"), "{}", out.text());
    assert!(!a.session_file().exists());
    let out = a.run(&["put", "notes/b", data.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("not logged in"), "{}", out.stderr);
}

#[test]
fn explicit_server_login_works_anywhere_and_updates_the_profile() {
    let a = Accounts::new();
    let invite = a.invite("dave", "reader", &[]);
    a.register(&invite, PW).ok();
    // Another machine: a fresh configuration folder, no profile.
    fs::remove_dir_all(a.env.config_dir()).unwrap();
    let out = a.login("dave", PW);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--server"), "{}", out.stderr);
    let out = a.env.run_stdin(
        &[
            "login",
            "--server",
            &a.server.addr,
            "--server-id",
            &a.id,
            "--user",
            "dave",
            "--password-stdin",
        ],
        format!("{PW}\n").into_bytes(),
    );
    let out = out.ok();
    assert!(out.text().contains("role reader"), "{}", out.text());
    // Now the profile holds the server and the user.
    let out = a
        .env
        .run_stdin(
            &["login", "--password-stdin"],
            format!("{PW}\n").into_bytes(),
        )
        .ok();
    assert!(out.text().contains("logged in as dave"), "{}", out.text());
    a.run(&["ls"]).ok();
}

#[test]
fn wrong_password_and_unknown_user_fail_alike() {
    let a = Accounts::new();
    let invite = a.invite("carol", "writer", &[]);
    a.register(&invite, PW).ok();
    let wrong = a.login("carol", "not the password");
    let unknown = a.login("nobody", PW);
    auth_failed(&wrong);
    assert_eq!(wrong.code, unknown.code);
    assert_eq!(wrong.stderr, unknown.stderr);
    assert_eq!(wrong.stderr, "ferry: authentication failed\n");
    assert!(!a.session_file().exists());
}

#[test]
fn an_expired_invite_fails() {
    let a = Accounts::new();
    let invite = a.invite("erin", "writer", &["--expires", "0s"]);
    let out = a.register(&invite, PW);
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
    let list = a.run(&["user", "list"]).ok().text();
    assert!(list.contains("expired"), "{list}");

    // Refused durations are usage errors.
    for bad in ["1w", "h", "-1h"] {
        let out = a.run(&["user", "invite", "x", "--role", "writer", "--expires", bad]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
    }
}

#[test]
fn an_empty_password_is_refused() {
    let a = Accounts::new();
    let invite = a.invite("carol", "writer", &[]);
    let out = a.register(&invite, "");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("empty"), "{}", out.stderr);
    // The invite was not spent.
    a.register(&invite, PW).ok();
}

#[test]
fn register_and_passwd_refuse_passwords_under_8_characters() {
    let a = Accounts::new();
    let invite = a.invite("carol", "writer", &[]);
    let out = a.register(&invite, "1234567");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("shorter than 8"), "{}", out.stderr);
    // Nothing was sent: the invite is still good.
    a.register(&invite, PW).ok();
    a.login("carol", PW).ok();
    let out = a.env.run_stdin(
        &["passwd", "--password-stdin"],
        format!("{PW}\nshort\n").into_bytes(),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("shorter than 8"), "{}", out.stderr);
    // Still logged in with the old password.
    a.run(&["ls"]).ok();
}

#[test]
fn session_list_hides_secrets_and_revoke_ends_the_session_on_a_running_server() {
    let a = Accounts::new();
    a.enrol("carol", "writer");
    a.run(&["ls"]).ok();
    let id = a.session_field("id");
    let secret = a.session_field("secret");
    assert_eq!(secret.len(), 64);

    for args in [&["session", "list"][..], &["session", "list", "--json"][..]] {
        let out = a.run(args).ok();
        let text = out.text();
        assert!(text.contains(&id), "{text}");
        assert!(text.contains("carol"), "{text}");
        assert!(!text.contains(&secret), "the secret leaked: {text}");
        assert!(!text.contains(&secret[..16]), "the secret leaked: {text}");
        assert!(!out.stderr.contains(&secret[..16]));
    }

    let out = a.run(&["session", "revoke", "0123456789abcdef0123456789abcdef"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    a.run(&["session", "revoke", &id]).ok();
    let out = a.run(&["ls"]);
    auth_failed(&out);
    assert!(out.stderr.contains("ferry login"), "{}", out.stderr);

    // Logging out of an ended session still removes it here.
    a.run(&["logout"]).ok();
    assert!(!a.session_file().exists());
}

#[test]
fn removing_a_user_ends_its_sessions_and_reset_reinvites() {
    let a = Accounts::new();
    a.enrol("carol", "writer");
    a.run(&["ls"]).ok();
    a.run(&["user", "remove", "carol"]).ok();
    auth_failed(&a.run(&["ls"]));
    auth_failed(&a.login("carol", PW));
    let out = a.run(&["user", "remove", "carol"]);
    assert_eq!(out.code, 5, "{}", out.stderr);
    assert_eq!(a.run(&["user", "reset", "nobody"]).code, 5);

    // Reset: the password stops working; the new invite keeps the role.
    a.enrol("frank", "reader");
    a.run(&["user", "reset", "frank", "--server", &a.server.addr])
        .ok();
    auth_failed(&a.run(&["ls"]));
    auth_failed(&a.login("frank", PW));
    let invite = a.env.join("frank.invite");
    let out = a.register(&invite, "new password").ok();
    assert!(out.text().contains("role reader"), "{}", out.text());
    let out = a.login("frank", "new password").ok();
    assert!(out.text().contains("role reader"), "{}", out.text());
}

#[test]
fn re_inviting_a_user_ends_its_session_on_a_running_server() {
    let a = Accounts::new();
    a.enrol("carol", "writer");
    a.run(&["ls"]).ok();
    let out = a
        .run(&[
            "user",
            "invite",
            "carol",
            "--role",
            "reader",
            "--server",
            &a.server.addr,
        ])
        .ok();
    assert!(out.stderr.contains("sessions"), "{}", out.stderr);
    // The writer's session ends at once; the new role comes with the registration.
    auth_failed(&a.run(&["ls"]));
    a.register(&a.env.join("carol.invite"), "new password").ok();
    let out = a.login("carol", "new password").ok();
    assert!(out.text().contains("role reader"), "{}", out.text());
}

#[test]
fn passwd_asks_for_the_current_password() {
    let a = Accounts::new();
    a.enrol("carol", "writer");
    // A wrong current password: refused like any failed login, nothing changed.
    let out = a.env.run_stdin(
        &["passwd", "--password-stdin"],
        b"not the password\na new password\n".to_vec(),
    );
    auth_failed(&out);
    assert!(out.stderr.contains("current password"), "{}", out.stderr);
    auth_failed(&a.login("carol", "a new password"));
    a.login("carol", PW).ok();
}

#[test]
fn passwd_changes_the_password_and_ends_the_session() {
    let a = Accounts::new();
    a.enrol("carol", "writer");
    let out = a
        .env
        .run_stdin(
            &["passwd", "--password-stdin"],
            format!("{PW}\na new password\n").into_bytes(),
        )
        .ok();
    assert!(out.stderr.contains("ferry login"), "{}", out.stderr);
    assert!(!a.session_file().exists());
    auth_failed(&a.login("carol", PW));
    a.login("carol", "a new password").ok();
    a.run(&["ls"]).ok();

    // Not logged in: passwd says so.
    a.run(&["logout"]).ok();
    let out = a
        .env
        .run_stdin(&["passwd", "--password-stdin"], b"x\n".to_vec());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("not logged in"), "{}", out.stderr);
}

#[test]
fn a_credential_still_wins_over_the_session_and_keeps_its_plain_message() {
    let a = Accounts::new();
    a.enrol("carol", "writer");
    let cred = a.env.issue("bob", "reader", &a.server.addr);
    let out = a.run(&["ls", "--cred", cred.to_str().unwrap()]).ok();
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    a.run(&["client", "revoke", "bob"]).ok();
    let out = a.run(&["ls", "--cred", cred.to_str().unwrap()]);
    assert_eq!(out.code, 3);
    assert_eq!(out.stderr, "ferry: authentication failed\n");
}

#[test]
fn logout_without_a_reachable_server_still_forgets_the_session() {
    let mut a = Accounts::new();
    a.enrol("carol", "writer");
    a.server.signal("TERM");
    assert!(a.server.wait(Duration::from_secs(30)).is_some());
    let out = a.run(&["logout"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("removed the local session"),
        "{}",
        out.stderr
    );
    assert!(!a.session_file().exists());
}
