//! The command line: clap definitions only.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Example:
  ferry init --dir ./srv                          # prints the server ID
  ferry serve --dir ./srv &                       # listens on 0.0.0.0:7443
  ferry client issue alice --role writer --server myhost:7443 --dir ./srv
                                                  # writes ./alice.cred (mode 0600)
  ferry client issue bob --role reader --server myhost:7443 --dir ./srv
  ferry put reports/q3 q3.pdf --cred alice.cred
  ferry get reports/q3 -o q3.pdf --cred bob.cred
  ferry put q3.csv reports/ --cred alice.cred     # stores reports/q3.csv
  ferry get reports/q3.csv ./ --cred bob.cred      # writes ./q3.csv
  ferry put -r ./photos photos/ --cred alice.cred  # a folder, over one connection
  ferry get -r photos/ ./photos --cred bob.cred    # run again: only what is missing moves
  ferry watch reports/ --cred bob.cred             # one line per change, until Ctrl-C
  ferry client revoke bob --dir ./srv             # bob.cred stops working at once
  ferry demo                                      # all of the above, in a temporary folder

User accounts (a password instead of a credential file):
  ferry user invite carol --role writer --server myhost:7443 --dir ./srv
                                                      # writes ./carol.invite (mode 0600)
  ferry register --invite carol.invite                # carol sets her password
  ferry login --user carol                            # opens a session
  ferry ls                                            # no --cred: uses the session
  ferry logout

Environment:
  FERRY_DIR   server folder for init, serve, client, user and session (default: the per-user
              data folder)
  FERRY_CRED  credential file for put, get, ls, stat, rm, sync and watch (without one: the
              login session)
  FERRY_PROFILE  client profile to use, as --profile
  FERRY_CONFIG  folder for profiles.toml, profile.toml and session.toml (default: the
              per-user config folder's \"ferry\", e.g. ~/.config/ferry)
  FERRY_LOG   log filter for serve (default: info)

Profiles (one person, several servers): CONFIG/profiles.toml names credentials,
  [profiles.work]
  cred = \"work.cred\"                  # relative to CONFIG
  [profiles.home]
  cred = \"/home/me/home.cred\"
  server = \"nas.local:7443\"           # optional: overrides the credential's address
and `ferry ls --profile home` (or FERRY_PROFILE=home) uses one. --server HOST:PORT overrides
the address for one command. --cred and --profile do not go together.

Output: --quiet prints only errors on stderr; --verbose adds the connection, server ID and
timings. JSON output (--json), one object per line on stdout:
  put, get -o, stat   {\"source\", \"version\", \"size\", \"hash\" (hex), \"modified\" (Unix
                      seconds), \"by\"}; get adds \"path\"
  ls, ls --versions   one such object per source or version (JSON Lines)
  rm                  {\"source\", \"version\" (of the deletion), \"deleted\": true}
  put -r, get -r, sync  {\"op\", \"files\", \"bytes\", \"unchanged\", \"deleted\", \"failed\" (names)};
                      sync --dry-run one {\"would\": \"put\"|\"get\"|\"delete\", \"source\"|\"path\",
                      \"size\"} per file, then {\"op\": \"dry-run\", ...}
  watch               one event per line (see ferry watch --help)
  login               {\"user\", \"role\", \"server\", \"expires\"}
  init                {\"server_id\", \"dir\"}
  client issue        {\"name\", \"role\", \"epoch\", \"server\", \"path\"} (not with --out -)
  client list, user list, session list  one JSON array (or object) of the table's rows
Commands with no result to print (serve, demo, ...) refuse --json with exit code 2.

Exit codes:
  0  success
  1  any other error
  2  usage error: a bad argument or bad input, wherever it is found (an unknown option, an
     invalid source name, prefix, client or user name, a folder given as FILE, a local file or
     credential file named that cannot be read or used, no credential and no login, an unknown
     profile, options that do not go together, passwords that differ, are empty or are too
     short, nothing typed to put from a terminal, no server address to write)
  3  authentication failed
  4  permission denied
  5  not found
  6  server ID mismatch (the server is not the one the credential pins)
  23  put -r, get -r or sync finished, but some files failed (each is named on stderr and counted
      in the summary line)
  129, 130, 143  stopped by SIGHUP, SIGINT (Ctrl-C) or SIGTERM during a put or get: the
     connection is closed, nothing is stored, and a partial download into a file is kept for
     the same command to resume
  141  the reader of standard output went away (as with SIGPIPE)";

/// ferry moves data securely between clients and a server: TLS 1.3, a pinned server key,
/// and per-client credentials whose key is derived from the server's master key.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Flags every command honours.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--quiet`, `--verbose` and `--json`: accepted before or after the command's name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// No progress bars, notes or confirmations (`stored ...`): only errors on stderr. Results
    /// asked for (a listing, stat, data to stdout, --json) are still printed. For serve and
    /// mesh up: log warnings and errors only.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// More detail on stderr: the server address and ID, who we are, and timings. For serve
    /// and mesh up: ferry's debug log lines too (FERRY_LOG overrides both).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Print the result as JSON on stdout (see "JSON output" in --help).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new server folder (master key, TLS identity, configuration) and print its
    /// server ID.
    Init(InitArgs),
    /// Run the server until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Issue, revoke and list client credentials (run on the server's machine).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Upload a file (or standard input) as a new version of SOURCE; with -r, a folder.
    #[command(long_about = PUT_ABOUT)]
    Put(PutArgs),
    /// Download the current version of SOURCE to standard output or a file; with -r, every
    /// source under a prefix into a folder.
    #[command(long_about = GET_ABOUT)]
    Get(GetArgs),
    /// Make a prefix match a local folder (`ferry sync DIR PREFIX/`) or a folder match a
    /// prefix (`ferry sync PREFIX/ DIR`), moving only what differs.
    #[command(long_about = SYNC_ABOUT)]
    Sync(SyncArgs),
    /// List the sources you may see, optionally only those starting with PREFIX.
    Ls(LsArgs),
    /// Show the current version of one source.
    Stat(StatArgs),
    /// Delete a source.
    Rm(RmArgs),
    /// Print changes (puts and deletes) as they happen, until Ctrl-C.
    #[command(long_about = WATCH_ABOUT)]
    Watch(WatchArgs),
    /// Invite, list, remove and reset password users (run on the server's machine).
    #[command(subcommand)]
    User(UserCommand),
    /// Set your password with an invite from the server's administrator (spends the invite).
    Register(RegisterArgs),
    /// Log in with your password; put, get, ls, stat, rm and watch then need no --cred.
    Login(LoginArgs),
    /// End the login session, on the server and here.
    Logout,
    /// Change your password (while logged in): asks for the current one, then the new one (at
    /// least 8 characters; with --password-stdin, the current one on the first line and the
    /// new one on the second). This ends every session and connection of the old password.
    Passwd(PasswordStdin),
    /// List and revoke login sessions (run on the server's machine).
    #[command(subcommand)]
    Session(SessionCommand),
    /// Join peers of one LAN into a mesh that shares changes (create, open, join, up, ...).
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Run the whole flow (init, serve, issue, put, get, refusals) in a temporary folder
    /// and check that every step behaves as expected.
    Demo,
    /// Print a shell completion script, e.g. `ferry completions bash >
    /// ~/.local/share/bash-completion/completions/ferry`.
    Completions(CompletionsArgs),
    /// Write the manual pages (ferry.1 and one per command, such as ferry-put.1) into DIR; without
    /// DIR, print ferry.1 (`ferry man | man -l -`).
    Man(ManArgs),
}

/// `ferry completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `ferry man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Folder to write the pages into (created if missing).
    pub dir: Option<PathBuf>,
}

const WATCH_ABOUT: &str = "\
Print changes (puts and deletes) as they happen, until Ctrl-C.

The server pushes one event per change to a source starting with PREFIX that you may list
(others are skipped). Each change has a server-wide sequence number (seq). One line per event:

  seq 12  put  docs/a.txt  v3  1.2 KiB  blake3:5e1fb8a0c3d2e4f6…  by alice
  seq 13  rm   docs/a.txt  v4  by bob

With --json, one JSON object per line: {\"seq\", \"op\" (\"put\" or \"rm\"), \"source\", \"version\",
\"deleted\", \"size\", \"hash\" (64 hex digits, null for rm), \"modified\" (Unix seconds), \"by\"}.

If the connection is cut, watch prints one line to stderr and reconnects (after 0.2 s,
doubling up to 5 s between attempts), resuming after the last change it saw: nothing is missed
or printed twice. If the server no longer keeps some of the changes since then, a warning
says so on stderr and watch goes on with the oldest change the server still has. A failed
first connection, a refused authentication (a revoked credential, for example) or a wrong
server ID end the command with the usual exit codes.";

/// The server folder.
#[derive(Debug, Args)]
pub struct DirArg {
    /// Server folder [default: $FERRY_DIR, else the per-user data folder's "ferry"].
    #[arg(long, value_name = "DIR", env = "FERRY_DIR", hide_env = true)]
    pub dir: Option<PathBuf>,
}

/// `ferry init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
    /// Where the account data (clients, users, invites, sessions, failed logins) lives: this
    /// folder's files, or a PostgreSQL database that several `ferry serve` instances share
    /// (written to ferry.toml's [backend]; see docs/SCALING.md).
    #[arg(long, value_enum, default_value_t = BackendArg::Local)]
    pub backend: BackendArg,
    /// With --backend postgres: the environment variable that holds the database URL
    /// (postgres://user:password@host:port/dbname) for serve and the account commands
    /// [default: FERRY_PG_URL].
    #[arg(long, value_name = "NAME")]
    pub url_env: Option<String>,
    /// With --backend postgres: a file that holds the database URL, readable by its owner
    /// only (mode 0600), instead of an environment variable.
    #[arg(long, value_name = "FILE")]
    pub url_file: Option<PathBuf>,
}

/// Where `ferry init --backend` keeps the account data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    /// The server folder's files (one server).
    Local,
    /// A PostgreSQL database, shared by every instance that names it.
    Postgres,
}

/// `ferry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
    /// Address to listen on, overriding `listen` in ferry.toml (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also serve the HTTP front (signed requests, plain HTTP for use behind a proxy that
    /// terminates TLS) on this address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Serve the HTTP front as HTTPS with the server's own identity (TLS 1.3; clients pin
    /// the server ID as over the TLS listener) instead of plain HTTP.
    #[arg(long, requires = "http")]
    pub http_tls: bool,
    /// Logs and metrics.
    #[command(flatten)]
    pub report: ReportArgs,
}

/// How a running server reports what it does: logs and metrics.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Log lines on standard error as `text` (for people) or `json` (one object per line,
    /// for a log collector). Every line of a connection carries its ID and peer, and its
    /// principal once known; audit lines (target ferry::audit) record every put, get,
    /// delete and refusal. Filter with FERRY_LOG (e.g. `info`, `ferry::audit=info,warn`).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (OpenMetrics text): connections,
    /// authentications, requests by operation and outcome, bytes, transfer durations,
    /// uploads in progress. A loopback address only, unless --metrics-public.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Allow --metrics on an address other hosts can reach (the counters name no principal
    /// or source, but they show how busy the server is).
    #[arg(long, requires = "metrics")]
    pub metrics_public: bool,
}

/// The format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// `ferry client ...`.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Issue a credential for NAME, or re-issue it (which invalidates the previous one).
    Issue(IssueArgs),
    /// Revoke NAME's credential; it stops working at once, even on a running server.
    Revoke(RevokeArgs),
    /// List issued clients with their role, epoch and status.
    List(ClientListArgs),
}

/// `ferry client issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// Client name: letters, digits and . _ - (starting with a letter or digit).
    pub name: String,
    /// Role, which decides what the client may do (see [roles] in ferry.toml).
    #[arg(long, value_name = "ROLE")]
    pub role: String,
    /// Another attribute to bind into the credential, as KEY=VALUE (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<(String, String)>,
    /// Address clients use to reach the server, written into the credential [default:
    /// `address` in ferry.toml; without either, the command refuses: ferry does not guess].
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_server)]
    pub server: Option<String>,
    /// Record the base URL of the server's HTTP front (http://HOST:PORT or
    /// https://HOST:PORT, often a proxy's) in the credential, for `--via http`.
    #[arg(long, value_name = "URL")]
    pub http_url: Option<String>,
    /// Where to write the credential (mode 0600); "-" prints it [default: ./NAME.cred].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Issue it even though ferry.toml defines no such role (the server refuses such a
    /// client every operation until a role of that name is added).
    #[arg(long)]
    pub force: bool,
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
}

/// `ferry client revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// Client name.
    pub name: String,
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
}

/// `ferry client list`.
#[derive(Debug, Args)]
pub struct ClientListArgs {
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
}

/// The credential file.
#[derive(Clone, Debug, Args)]
pub struct CredArg {
    /// Credential file (mode 0600) written by `ferry client issue` [default: the session of
    /// `ferry login`].
    #[arg(long, value_name = "FILE", env = "FERRY_CRED")]
    pub cred: Option<PathBuf>,
    /// A named client profile from CONFIG/profiles.toml: its credential file and, if it
    /// sets one, its server address (see "Profiles" in `ferry --help`).
    #[arg(long, value_name = "NAME", env = "FERRY_PROFILE")]
    pub profile: Option<String>,
    /// Reach the server at HOST:PORT instead of the address in the credential, profile or
    /// login session (the server ID pinned there is still checked).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_server)]
    pub server: Option<String>,
}

/// How `put`, `get`, `ls`, `stat` and `rm` reach the server.
#[derive(Clone, Debug, Args)]
pub struct ViaArg {
    /// `tls`: the server's own TLS listener; `http`: its HTTP front (`ferry serve --http`),
    /// with signed requests, for hosts and proxies that pass only HTTP (needs --cred).
    #[arg(long, value_enum, default_value = "tls")]
    pub via: Via,
    /// The HTTP front's base URL, http://HOST:PORT or https://HOST:PORT [default: the
    /// credential's http_url].
    #[arg(long, value_name = "URL", env = "FERRY_HTTP_URL")]
    pub http_url: Option<String>,
    /// PEM certificate(s) to trust for an https:// URL (the TLS-terminating proxy's).
    #[arg(long, value_name = "FILE")]
    pub http_ca: Option<PathBuf>,
    /// With --via http: seal put and get bodies end to end to the server's key, which the
    /// credential pins (HPKE), so the proxy sees only ciphertext.
    #[arg(long)]
    pub seal: bool,
}

/// Which front of the server a command talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Via {
    /// The TLS listener (the default).
    Tls,
    /// The HTTP front.
    Http,
}

/// `ferry user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Write a one-time invite with which NAME sets a password (`ferry register`). Inviting
    /// an existing user removes its password and ends its sessions at once.
    Invite(InviteArgs),
    /// List users and pending invites.
    List(ClientListArgs),
    /// Remove NAME: the password stops working and NAME's sessions end.
    Remove(UserNameArgs),
    /// Remove NAME's password and write a new invite with the same role and attributes.
    Reset(ResetArgs),
}

/// Where an invite goes and how long it is valid.
#[derive(Debug, Args)]
pub struct InviteOut {
    /// Address users reach the server at [default: `address` in ferry.toml; without either,
    /// the command refuses: ferry does not guess].
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_server)]
    pub server: Option<String>,
    /// Where to write the invite (mode 0600); "-" prints it [default: ./NAME.invite].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// How long the invite is valid: a number and s, m, h or d, e.g. 30m, 7d.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    pub expires: u64,
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
}

/// `ferry user invite`.
#[derive(Debug, Args)]
pub struct InviteArgs {
    /// User name: letters, digits and . _ - (starting with a letter or digit).
    pub name: String,
    /// Role, which decides what the user may do (see [roles] in ferry.toml).
    #[arg(long, value_name = "ROLE")]
    pub role: String,
    /// Another attribute the user gets, as KEY=VALUE (repeatable).
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<(String, String)>,
    /// Destination and validity.
    #[command(flatten)]
    pub out: InviteOut,
}

/// `ferry user reset`.
#[derive(Debug, Args)]
pub struct ResetArgs {
    /// User name.
    pub name: String,
    /// Destination and validity of the new invite.
    #[command(flatten)]
    pub out: InviteOut,
}

/// `ferry user remove`.
#[derive(Debug, Args)]
pub struct UserNameArgs {
    /// User name.
    pub name: String,
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
}

/// `ferry session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List sessions (never their secrets).
    List(ClientListArgs),
    /// End a session at once, also on a running server.
    Revoke(SessionRevokeArgs),
}

/// `ferry session revoke`.
#[derive(Debug, Args)]
pub struct SessionRevokeArgs {
    /// Session ID, as `ferry session list` shows it.
    pub id: String,
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
}

/// `ferry mesh ...`.
#[derive(Debug, Subcommand)]
pub enum MeshCommand {
    /// Start a new mesh with this peer as its only member (initialises DIR if it is empty)
    /// and print the peer's device ID.
    Create(MeshCreateArgs),
    /// Accept joins with a password for a while (the peer's running server answers them,
    /// one at a time). After `max_join_failures` failed joins (`[mesh]` in ferry.toml, 10 by
    /// default) the window closes early.
    Open(MeshOpenArgs),
    /// Stop accepting joins now: remove the join password from the folder (a running peer
    /// refuses joins from then on, those in progress too). The password is also removed
    /// when the window ends, and after too many failed joins.
    Close(DirArg),
    /// Join the mesh of an open peer (initialises DIR if it is empty) and print this peer's
    /// device ID. The password is used for this join only and never stored.
    Join(MeshJoinArgs),
    /// List the members: device ID, name, address and when each was last heard from.
    Members(DirArg),
    /// Remove a member and rotate the mesh key: it can no longer fetch or announce.
    Remove(MeshRemoveArgs),
    /// Run this peer until Ctrl-C: its server (which also answers joins while the mesh is
    /// open), the announcer of local changes and the listener that fetches other members'
    /// changes over TLS.
    Up(MeshUpArgs),
}

/// `ferry mesh up`.
#[derive(Debug, Args)]
pub struct MeshUpArgs {
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
    /// Address the TLS server listens on, overriding `listen` in ferry.toml.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Logs and metrics.
    #[command(flatten)]
    pub report: ReportArgs,
    /// UDP port announcements are received on and sent to (the same on every member).
    #[arg(long, value_name = "PORT", default_value_t = ferry::mesh::udp::DEFAULT_PORT)]
    pub announce_port: u16,
    /// Send announcements to these addresses instead of the IPv4 broadcast address and the
    /// multicast groups 239.255.70.77 and ff12::7077 (comma-separated or repeated), e.g. a
    /// subnet's broadcast address, or members on another network.
    #[arg(long, value_name = "IP:PORT", value_delimiter = ',')]
    pub announce_to: Vec<std::net::SocketAddr>,
    /// How often the digest of this peer's state is announced (a missed announcement is
    /// caught up within this), e.g. 10s, 1m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub digest_every: u64,
}

/// `ferry mesh create`.
#[derive(Debug, Args)]
pub struct MeshCreateArgs {
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
    /// This peer's display name, 1 to 64 characters, no control characters [default: the
    /// host name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The mesh's name.
    #[arg(long, value_name = "NAME", default_value = "mesh")]
    pub mesh_name: String,
}

/// `ferry mesh open`.
#[derive(Debug, Args)]
pub struct MeshOpenArgs {
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
    /// How long joins are accepted, e.g. 90s, 10m, 1h.
    #[arg(long = "for", value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
    pub duration: u64,
    /// How to read the password.
    #[command(flatten)]
    pub password: PasswordStdin,
}

/// `ferry mesh join`.
#[derive(Debug, Args)]
pub struct MeshJoinArgs {
    /// The server folder of this peer.
    #[command(flatten)]
    pub dir: DirArg,
    /// The open peer's TLS address.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_server,
          required_unless_present = "discover", requires = "peer_id")]
    pub peer: Option<String>,
    /// The open peer's device ID (as `ferry mesh create` printed it).
    #[arg(
        long,
        value_name = "ID",
        required_unless_present = "discover",
        requires = "peer"
    )]
    pub peer_id: Option<String>,
    /// Find the open peer by the join beacon it broadcasts while `ferry mesh open` is in
    /// effect and it runs `ferry mesh up` (on the LAN, on --announce-port).
    #[arg(long, conflicts_with_all = ["peer", "peer_id"])]
    pub discover: bool,
    /// The UDP port to listen on for beacons with --discover.
    #[arg(long, value_name = "PORT", default_value_t = ferry::mesh::udp::DEFAULT_PORT)]
    pub announce_port: u16,
    /// How long --discover listens for a beacon, e.g. 5s, 1m.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub discover_for: u64,
    /// This peer's display name, 1 to 64 characters, no control characters [default: the
    /// host name].
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// How to read the password.
    #[command(flatten)]
    pub password: PasswordStdin,
}

/// `ferry mesh remove`.
#[derive(Debug, Args)]
pub struct MeshRemoveArgs {
    /// The device ID of the member to remove.
    #[arg(value_name = "DEVICE")]
    pub device: String,
    /// The server folder.
    #[command(flatten)]
    pub dir: DirArg,
}

/// `--password-stdin`.
#[derive(Debug, Args)]
pub struct PasswordStdin {
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `ferry register`.
#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// Invite file (mode 0600) written by `ferry user invite`.
    #[arg(long, value_name = "FILE")]
    pub invite: PathBuf,
    /// How to read the password.
    #[command(flatten)]
    pub password: PasswordStdin,
}

/// `ferry login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Server address [default: the one remembered by `ferry register` or `ferry login`].
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_server, requires = "server_id")]
    pub server: Option<String>,
    /// The server's ID, as `ferry init` printed it (required with --server).
    #[arg(long, value_name = "ID", requires = "server")]
    pub server_id: Option<String>,
    /// User name [default: the remembered one].
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    /// How to read the password.
    #[command(flatten)]
    pub password: PasswordStdin,
    /// `--via http --http-url URL`: log in through the server's HTTP front; the session then
    /// signs `--via http` commands run without --cred.
    #[command(flatten)]
    pub via: ViaArg,
}

const PUT_ABOUT: &str = "\
Upload a file (or standard input) as a new version of SOURCE: `ferry put SOURCE FILE`.

A file of 1 MiB or more that replaces a version you may read goes as a delta: it is cut into
content-defined chunks while it is hashed, and only the chunks the server does not have are
sent (a one-byte edit of a 256 MiB file sends about 0.2 MiB); ferry says how much it sent.

`ferry put FILE PREFIX/` (a destination ending in '/') stores FILE under its own name:
`ferry put q3.csv reports/` stores reports/q3.csv.

`ferry put -r DIR [PREFIX/]` uploads every regular file under DIR as PREFIX/<its path under
DIR> (folders separated by '/', names in UTF-8, normalised to NFC), over one connection with
many requests in flight. Symbolic links are not followed: they are skipped with a note, as
are devices, FIFOs and sockets, and empty folders (a server stores files, not folders). A
file that cannot be read or named (not UTF-8, a control character, two names equal once
normalised) is reported and the others go on. The summary line counts files, bytes and
failures; the exit code is 23 if any file failed.";

const GET_ABOUT: &str = "\
Download the current version of SOURCE to standard output or a file (`-o FILE`, or a DEST
argument; a DEST ending in '/' or naming a folder keeps the source's last segment as the
file name: `ferry get reports/q3.csv ./` writes ./q3.csv).

`ferry get -r PREFIX/ DIR` downloads every source under PREFIX/ that you may list into DIR
(PREFIX/a/b becomes DIR/a/b), over one connection with many requests in flight. Each file is
written to a temporary file and renamed into place once its BLAKE3 checked out (files over
1 MiB are fsynced first; smaller ones are not, one by one: after a crash, run the command
again, it checks every file). A file that
is already there with the same size and BLAKE3 is not downloaded again, so a run that was
interrupted finishes without moving again what it completed. A name that cannot be written
safely inside DIR (none can leave it: '..', absolute names and backslashes are refused, and
no folder on the way may be a symbolic link) or that collides with another is reported and
the others go on. If the server is busy or goes away, or the connection breaks, it runs
again (--retries), moving only what is not complete yet. The summary line counts files,
bytes, unchanged files and failures; the exit code is 23 if any file failed.";

const SYNC_ABOUT: &str = "\
Make the destination match the source: `ferry sync DIR PREFIX/` uploads, `ferry sync PREFIX/
DIR` downloads. Only files whose content differs move: sizes are compared first, then the
BLAKE3 of the local file against the server's. Which argument is the local folder: one written
as a path (starting with '/', './', '../' or '~', or '.' itself) is; otherwise the one that is
an existing folder (if both or neither are, write the local one as ./NAME).

With --delete, what the source does not have is deleted from the destination (sources under
PREFIX/, or regular files under DIR; symbolic links are left alone). Uploading with --delete
refuses to start if a local file could not be read or named, since its copy would be deleted.
With --dry-run, it lists what it would put, get and delete, and changes nothing.

Files are moved as by put -r and get -r (one connection, many requests in flight; the same
notes for links, special files and empty folders). A changed file of 1 MiB or more whose older
copy is on the other side moves as a delta: only the content-defined chunks that copy lacks
travel, up and down. The summary line counts files and bytes moved (and how many went as
deltas, with the bytes sent for them), unchanged and deleted files and failures; the exit code
is 23 if any file failed.";

/// `ferry sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The source: a local folder (DIR) or a prefix (PREFIX/).
    pub from: String,
    /// The destination: a prefix (PREFIX/) or a local folder (DIR).
    pub to: String,
    /// Delete from the destination what the source does not have.
    #[arg(long)]
    pub delete: bool,
    /// Say what would be moved and deleted; change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Read every local file whose size matches to compare its BLAKE3, instead of believing
    /// the hash cache for files unchanged since they were last hashed (same size, times,
    /// inode and device; see README.md, "The hash cache").
    #[arg(short = 'c', long)]
    pub checksum: bool,
    /// How many times to run again when the server is busy or shutting down or the
    /// connection breaks (0: fail at once); what already matches is not moved again.
    #[arg(long, value_name = "N", default_value_t = crate::retry::RETRIES)]
    pub retries: u32,
    /// The credential.
    #[command(flatten)]
    pub cred: CredArg,
}

/// `ferry put`.
#[derive(Clone, Debug, Args)]
pub struct PutArgs {
    /// Source name to store under, e.g. reports/q3 or "Q3 report.pdf": any UTF-8 text
    /// without control characters (compared in Unicode NFC), folders separated by "/".
    /// With -r: the folder to upload; with a destination ending in '/': the file to upload.
    pub source: String,
    /// File to upload; "-" or nothing reads standard input (which does not resume). A
    /// destination ending in '/' (PREFIX/) instead: see above. With -r: the PREFIX.
    ///
    /// A regular file is uploaded resumably: it is read once to compute its BLAKE3, and the
    /// server keeps what it receives under your name, SOURCE, the size and that hash. If the
    /// upload is interrupted (Ctrl-C, a signal, a cut connection, a server restart), the
    /// same command run again sends only what the server does not hold yet ("resuming at N
    /// bytes"), as long as the file is unchanged. The server removes an interrupted upload
    /// after a day without activity (its `[uploads] keep_secs`); nothing of it is visible
    /// before the whole content has arrived and matched its hash. If the server is busy or
    /// shutting down, or the connection breaks, the command itself tries again (see
    /// --retries), resuming each time.
    #[arg(value_name = "FILE|-")]
    pub file: Option<PathBuf>,
    /// Send the file as a plain upload, without reading it first: an interruption then
    /// loses what was sent.
    #[arg(long)]
    pub no_resume: bool,
    /// How many times to try again, resuming, when the server is busy or shutting down or
    /// the connection breaks (0: fail at once).
    #[arg(long, value_name = "N", default_value_t = crate::retry::RETRIES)]
    pub retries: u32,
    /// Upload the folder SOURCE (DIR) under the prefix FILE (PREFIX/).
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Store an empty source when standard input is a terminal and nothing was typed
    /// before Ctrl-D (otherwise nothing is stored; from a pipe or file, empty is stored).
    #[arg(long)]
    pub allow_empty: bool,
    /// The credential.
    #[command(flatten)]
    pub cred: CredArg,
    /// The server's front to use.
    #[command(flatten)]
    pub via: ViaArg,
}

/// `ferry get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Source name to download; with -r, the prefix (PREFIX/) to download.
    pub source: String,
    /// Where to write, instead of -o: a DEST ending in '/' or naming a folder keeps the
    /// source's name; with -r, the folder to write into.
    #[arg(value_name = "DEST|DIR", conflicts_with = "output")]
    pub dest: Option<PathBuf>,
    /// File to write (replaced only once the download is complete and verified); "-" or
    /// nothing writes standard output (which does not resume).
    ///
    /// The download goes into `.FILE.ferry-partial` next to FILE, described by
    /// `.FILE.ferry-partial.toml`. If it is interrupted (Ctrl-C, a signal, a cut connection),
    /// both stay, and the same command run again continues from where it stopped if the
    /// source still has the same version; otherwise it starts over. A partial download
    /// older than 7 days, or of another source, is deleted when `ferry get -o FILE` next
    /// runs. A partial whose whole content fails the BLAKE3 check is deleted and the command
    /// fails; run it again to start over. If the server is busy or shutting down, or the
    /// connection breaks, the command itself tries again (see --retries), resuming each
    /// time.
    #[arg(short = 'o', long = "output", value_name = "FILE|-")]
    pub output: Option<PathBuf>,
    /// Delete any partial download of FILE and start from the beginning.
    #[arg(long)]
    pub no_resume: bool,
    /// How many times to try again, resuming, when the server is busy or shutting down or
    /// the connection breaks (0: fail at once).
    #[arg(long, value_name = "N", default_value_t = crate::retry::RETRIES)]
    pub retries: u32,
    /// Download this version instead of the current one (one the server still keeps: see
    /// `ferry ls --versions SOURCE`).
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
    /// Download every source under the prefix SOURCE into the folder DEST.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// The credential.
    #[command(flatten)]
    pub cred: CredArg,
    /// The server's front to use.
    #[command(flatten)]
    pub via: ViaArg,
}

/// `ferry ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only sources whose name starts with this (with --versions: the source).
    #[arg(default_value = "")]
    pub prefix: String,
    /// List the versions the server keeps of the source named PREFIX, newest first, instead
    /// of the sources under a prefix.
    #[arg(long)]
    pub versions: bool,
    /// The credential.
    #[command(flatten)]
    pub cred: CredArg,
    /// The server's front to use.
    #[command(flatten)]
    pub via: ViaArg,
}

/// `ferry stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// Source name.
    pub source: String,
    /// The credential.
    #[command(flatten)]
    pub cred: CredArg,
    /// The server's front to use.
    #[command(flatten)]
    pub via: ViaArg,
}

/// `ferry watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only sources whose name starts with this.
    #[arg(default_value = "")]
    pub prefix: String,
    /// The credential.
    #[command(flatten)]
    pub cred: CredArg,
    /// The server's front to use.
    #[command(flatten)]
    pub via: ViaArg,
    /// Start after this sequence number (0: every change the server still keeps) instead
    /// of with the changes from now on.
    #[arg(long, value_name = "SEQ")]
    pub since: Option<u64>,
}

/// `ferry rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Source name to delete.
    pub source: String,
    /// The credential.
    #[command(flatten)]
    pub cred: CredArg,
    /// The server's front to use.
    #[command(flatten)]
    pub via: ViaArg,
}

/// Parses `--attr KEY=VALUE`.
fn parse_attr(s: &str) -> Result<(String, String), String> {
    let Some((k, v)) = s.split_once('=') else {
        return Err("expected KEY=VALUE".into());
    };
    if k == "role" {
        return Err("set the role with --role, not --attr role=...".into());
    }
    ferry::proto::names::validate_attr_key(k).map_err(|e| e.to_string())?;
    ferry::proto::names::validate_attr_value(v).map_err(|e| e.to_string())?;
    Ok((k.to_owned(), v.to_owned()))
}

/// Parses a duration such as `90s`, `30m`, `24h` or `7d` into seconds.
fn parse_duration(s: &str) -> Result<u64, String> {
    let err = || "expected a number and s, m, h or d, e.g. 30m, 24h, 7d".to_owned();
    let unit = match s.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86_400,
        _ => return Err(err()),
    };
    let n = &s[..s.len() - 1];
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    n.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(err)
}

/// Parses `--server HOST:PORT` (a credential with anything else would not load).
pub(crate) fn parse_server(s: &str) -> Result<String, String> {
    let ok = match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !s.contains(char::is_whitespace) && port.parse::<u16>().is_ok()
        }
        None => false,
    };
    if ok {
        Ok(s.to_owned())
    } else {
        Err("expected HOST:PORT, e.g. files.example.com:7443".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn attrs() {
        assert_eq!(
            parse_attr("team=ops").unwrap(),
            ("team".into(), "ops".into())
        );
        assert_eq!(parse_attr("k=a=b").unwrap(), ("k".into(), "a=b".into()));
        assert!(parse_attr("role=admin").is_err());
        assert!(parse_attr("team").is_err());
        assert!(parse_attr("=x").is_err());
        assert!(parse_attr("Team=x").is_err());
        assert!(parse_attr("team=").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s").unwrap(), 0);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("24h").unwrap(), 86_400);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        for bad in [
            "",
            "h",
            "24",
            "-1h",
            "1.5h",
            "1w",
            "+3d",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn servers() {
        assert!(parse_server("127.0.0.1:7443").is_ok());
        assert!(parse_server("[::1]:7443").is_ok());
        assert!(parse_server("host.example:1").is_ok());
        assert!(parse_server("host.example").is_err());
        assert!(parse_server(":7443").is_err());
        assert!(parse_server("host:x").is_err());
        assert!(parse_server("a b:1").is_err());
    }
}
