//! Control messages.
//!
//! Each message frame carries one CBOR data item (RFC 8949): a map with exactly one entry whose
//! key is the message type (a text string such as `"put"`) and whose value is a map of named
//! fields. Decoders ignore fields they do not know, so later versions can add fields (for
//! example to resume transfers) without a new protocol version; a missing optional field takes
//! its documented default. Byte fields are CBOR byte strings; hashes are 32-byte BLAKE3 digests.

use serde::{Deserialize, Serialize};

/// Longest encoded message a decoder accepts: one frame body.
pub const MAX_MESSAGE_LEN: usize = crate::frame::MAX_BODY_LEN;

/// A 32-byte hash or MAC.
pub type Digest = [u8; 32];

/// Every control message of protocol version 1.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Message {
    /// C→S: authenticate with a credential.
    PskAuth(PskAuth),
    /// S→C: authentication succeeded; carries the server's proof.
    AuthOk(AuthOk),
    /// S→C: authentication failed. Carries nothing, whatever the cause.
    AuthFailed(Empty),
    /// C→S: start an upload.
    Put(Put),
    /// S→C: the upload may start; data frames follow from the client.
    PutReady(PutReady),
    /// C→S: the last data frame of an upload has been sent.
    PutEnd(PutEnd),
    /// S→C: the upload is stored as a new version.
    PutOk(Entry),
    /// C→S: fetch a source.
    Get(Get),
    /// S→C: data frames of `size - offset` bytes follow.
    GetOk(GetOk),
    /// C→S: describe one source.
    Stat(SourceRef),
    /// S→C: the description.
    StatOk(Entry),
    /// C→S: list sources by prefix, one page at a time.
    List(List),
    /// S→C: one page of a listing.
    ListOk(ListOk),
    /// C→S: delete a source.
    Delete(SourceRef),
    /// S→C: the source is deleted.
    DeleteOk(DeleteOk),
    /// S→C: the request failed.
    Error(ErrorMsg),
    /// C→S: start a password login (OPAQUE KE1).
    PasswordLoginStart(PasswordLoginStart),
    /// S→C: the OPAQUE response (KE2) and the record's Argon2id parameters.
    PasswordLoginResponse(OpaqueResponse),
    /// C→S: the OPAQUE finalization (KE3).
    PasswordLoginFinish(PasswordLoginFinish),
    /// C→S: the client could not finish (wrong password, or not the right server).
    PasswordLoginFailed(Empty),
    /// C→S: redeem an invite and start registering a password.
    RegisterStart(RegisterStart),
    /// S→C: the OPAQUE registration response and the Argon2id parameters to use.
    RegisterResponse(OpaqueResponse),
    /// C→S: the OPAQUE registration upload.
    RegisterFinish(RegisterFinish),
    /// S→C: the record is stored and the invite spent.
    RegisterOk(Empty),
    /// C→S: resume a session.
    SessionAuth(SessionAuth),
    /// C→S: end the session this connection belongs to.
    Logout(Empty),
    /// S→C: the session is ended.
    LogoutOk(Empty),
    /// C→S (authenticated user): start changing one's password by proving the current one
    /// (OPAQUE KE1, bound to this connection's exporter).
    PasswordChangeStart(PasswordChangeStart),
    /// S→C: the OPAQUE response (KE2) for the current password and its Argon2id parameters.
    PasswordChangeResponse(OpaqueResponse),
    /// C→S: the proof of the current password (KE3) and the registration request of the new
    /// one; the server answers `register_response` only if the proof verifies.
    PasswordChangeProof(PasswordChangeProof),
    /// C→S: the new OPAQUE record upload (after a `register_response`).
    PasswordChangeFinish(RegisterFinish),
    /// S→C: the new password is set; the user's password sessions have ended.
    PasswordChangeOk(Empty),
    /// Joiner → opener: start a mesh join (CPace).
    MeshJoinStart(crate::mesh::wire::MeshJoinStart),
    /// Opener → joiner: CPace answer and confirmation.
    MeshJoinResponse(crate::mesh::wire::MeshJoinResponse),
    /// Joiner → opener: confirmation and device signature.
    MeshJoinFinish(crate::mesh::wire::MeshJoinFinish),
    /// Opener → joiner: the join succeeded; here is the mesh.
    MeshJoinOk(Box<crate::mesh::wire::MeshGrant>),
    /// Member → member: authenticate.
    MeshAuth(crate::mesh::wire::MeshAuth),
    /// Member → member: send me your mesh state (key, epoch, members).
    MeshState(Empty),
    /// The mesh state.
    MeshStateOk(Box<crate::mesh::wire::MeshGrant>),
    /// Member → member: list every source's state, tombstones included.
    MeshList(crate::mesh::wire::MeshList),
    /// A page of source states.
    MeshListOk(crate::mesh::wire::MeshListOk),
    /// C→S: turn this connection into a stream of change events.
    Watch(Watch),
    /// S→C: the stream starts; events, gaps and pings follow until the connection closes.
    WatchOk(WatchOk),
    /// S→C: one change the principal may see.
    Event(WatchEvent),
    /// S→C: changes the client asked to resume from are gone; the stream skips ahead.
    WatchGap(WatchGap),
    /// S→C: keep-alive, with the stream's position.
    WatchPing(WatchPing),
    /// C→S: list the versions of one source the server keeps.
    Versions(SourceRef),
    /// S→C: those versions.
    VersionsOk(VersionsOk),
    /// C→S: the chunks of a version (§5.4), one page at a time.
    Chunks(Chunks),
    /// S→C: one page of them.
    ChunksOk(ChunksOk),
}

/// Ask for the chunks of a version (docs/PROTOCOL.md §5.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunks {
    /// Source name.
    pub source: String,
    /// A specific retained version; the current one if absent.
    #[serde(default)]
    pub version: Option<u64>,
    /// The index of the first chunk wanted; 0 if absent.
    #[serde(default)]
    pub from: u64,
}

/// One page of a version's chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunksOk {
    /// The version they are of.
    pub entry: Entry,
    /// The index of the first chunk in `chunks`.
    pub from: u64,
    /// At most [`MAX_LIST_CHUNKS`](crate::chunking::MAX_LIST_CHUNKS) chunks, encoded as a
    /// chunk list (§5.4).
    #[serde(with = "serde_bytes")]
    pub chunks: Vec<u8>,
    /// More chunks follow: ask again with `from` past these.
    #[serde(default)]
    pub more: bool,
}

/// Start watching for changes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    /// Only sources whose name starts with this string.
    #[serde(default)]
    pub prefix: String,
    /// Resume after this sequence number (the last one seen); absent: only changes from now.
    #[serde(default)]
    pub after: Option<u64>,
}

/// The watch stream starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchOk {
    /// The last change sequence number the server has given out.
    pub seq: u64,
    /// The server sends something (at least a `watch_ping`) at least this often, in
    /// milliseconds; silence for much longer means the link is dead. 20 000 if absent.
    #[serde(default = "default_ping_ms")]
    pub ping_ms: u64,
}

/// Default of [`WatchOk::ping_ms`].
pub const DEFAULT_PING_MS: u64 = 20_000;

fn default_ping_ms() -> u64 {
    DEFAULT_PING_MS
}

/// One change: a new current version of a source, or its deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Server-wide sequence number of the change: increasing, never reused.
    pub seq: u64,
    /// Source name.
    pub source: String,
    /// The version the change made current (a deletion takes a number too).
    pub version: u64,
    /// `true` if the source was deleted.
    #[serde(default)]
    pub deleted: bool,
    /// Size of the new content in bytes (0 for a deletion).
    pub size: u64,
    /// BLAKE3 of the new content (all zeros for a deletion).
    #[serde(with = "serde_bytes")]
    pub hash: Digest,
    /// When the change was made, in seconds since the Unix epoch.
    pub modified: u64,
    /// Name of the principal who made it.
    pub by: String,
}

/// Changes after the requested position were pruned from the server's log (or the position
/// is unknown to it): some may have been missed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchGap {
    /// The oldest sequence number the server still has.
    pub oldest: u64,
    /// The stream continues with changes after this sequence number.
    pub seq: u64,
}

/// Keep-alive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchPing {
    /// The stream's position: every change up to this number has been sent or is not
    /// visible to the principal, so resuming after it misses nothing.
    pub seq: u64,
}

/// Start a password change: a fresh login with the current password.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordChangeStart {
    /// OPAQUE `KE1` for the current password (RFC 9807 §6.3).
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
}

/// Prove the current password and ask to register the new one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordChangeProof {
    /// OPAQUE `KE3` of the login started by `password_change_start`.
    #[serde(with = "serde_bytes")]
    pub finalization: Vec<u8>,
    /// OPAQUE `RegistrationRequest` for the new password.
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
}

/// Start a password login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordLoginStart {
    /// User name.
    pub user: String,
    /// OPAQUE `KE1` (RFC 9807 §6.3).
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
    /// Whether the client wants a session to resume later.
    #[serde(default)]
    pub session: bool,
}

/// An OPAQUE server message plus the key-stretching parameters the client must use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpaqueResponse {
    /// OPAQUE `KE2` or `RegistrationResponse`.
    #[serde(with = "serde_bytes")]
    pub response: Vec<u8>,
    /// Argon2id parameters.
    pub ksf: crate::password::KsfParams,
}

/// Finish a password login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasswordLoginFinish {
    /// OPAQUE `KE3`.
    #[serde(with = "serde_bytes")]
    pub finalization: Vec<u8>,
}

/// Redeem an invite.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterStart {
    /// Canonical invite claims (name, serial as epoch, `role`, `expires`).
    #[serde(with = "serde_bytes")]
    pub claims: Vec<u8>,
    /// `HMAC-SHA256(invite_key, "ferry invite client v1" ‖ 0x00 ‖ exporter ‖ SHA-256(claims))`.
    #[serde(with = "serde_bytes")]
    pub mac: Digest,
    /// OPAQUE `RegistrationRequest`.
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
}

// The upload is the record a server stores: it allows an offline dictionary attack on the
// password, so it is never printed.
impl core::fmt::Debug for RegisterFinish {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegisterFinish").finish_non_exhaustive()
    }
}

impl core::fmt::Debug for RegisterStart {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RegisterStart").finish_non_exhaustive()
    }
}

/// Finish a registration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterFinish {
    /// OPAQUE `RegistrationRecord` upload.
    #[serde(with = "serde_bytes")]
    pub upload: Vec<u8>,
}

/// Resume a session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionAuth {
    /// The session ID.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    /// `HMAC-SHA256(secret, "ferry session client v1" ‖ 0x00 ‖ exporter ‖ id)`.
    #[serde(with = "serde_bytes")]
    pub mac: Digest,
}

impl core::fmt::Debug for SessionAuth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SessionAuth").finish_non_exhaustive()
    }
}

/// A session the server opened for this login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionGrant {
    /// Random session ID.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 16],
    /// Seconds of inactivity after which the session ends.
    pub idle_secs: u64,
    /// Unix time at which the session ends regardless.
    pub expires: u64,
}

/// A message with no fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Credential authentication.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PskAuth {
    /// Canonical encoding of the claims (see `claims`).
    #[serde(with = "serde_bytes")]
    pub claims: Vec<u8>,
    /// `HMAC-SHA256(psk, "ferry psk client v1" ‖ 0x00 ‖ exporter ‖ SHA-256(claims))`.
    #[serde(with = "serde_bytes")]
    pub mac: Digest,
    /// Whether the client wants a session to resume later.
    #[serde(default)]
    pub session: bool,
}

impl core::fmt::Debug for PskAuth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PskAuth").finish_non_exhaustive()
    }
}

/// Who the server authenticated, as it tells the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrincipalInfo {
    /// Client or user name.
    pub name: String,
    /// Verified attributes, `role` among them.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Authentication succeeded.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthOk {
    /// The method that succeeded, e.g. `"psk"`.
    pub method: String,
    /// The server's proof, specific to the method.
    #[serde(with = "serde_bytes")]
    pub proof: Vec<u8>,
    /// Who the client is now.
    pub principal: PrincipalInfo,
    /// A session opened by this authentication, if the client asked for one.
    #[serde(default)]
    pub session: Option<Box<SessionGrant>>,
}

impl core::fmt::Debug for AuthOk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("AuthOk")
            .field("method", &self.method)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Start an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Put {
    /// Source name.
    pub source: String,
    /// Total size if known in advance; the server then refuses a different total.
    #[serde(default)]
    pub size: Option<u64>,
    /// Reserved: always 0 (non-zero is refused as `unsupported`). Where a resumable upload
    /// continues is the server's to say, in [`PutReady::offset`]: only it knows what it holds.
    #[serde(default)]
    pub offset: u64,
    /// BLAKE3 of the whole content, announced in advance. With `size`, it makes the upload
    /// **resumable**: the server keeps what it receives under a key of (principal, source,
    /// size, hash) and a later `put` with the same four continues it (docs/PROTOCOL.md §5).
    /// Absent (not encoded) for a plain upload.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub hash: Option<Digest>,
    /// The content follows right behind this message, without waiting for `put_ready`
    /// (docs/PROTOCOL.md §5.2): needs `size`, and no `hash`. If the server refuses the put it
    /// reads and drops that content. Absent (not encoded) when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub streamed: bool,
    /// The file's modification time, in nanoseconds since the Unix epoch, kept with the
    /// version as metadata (docs/PROTOCOL.md §5.3). Absent (not encoded) if not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<u64>,
    /// The file was executable (by its owner), kept with the version as metadata. Absent
    /// (not encoded) when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub executable: bool,
    /// The content's chunk list (§5.4), asking for a **delta put**: with `size` and `hash`,
    /// the server may answer with the chunks it needs ([`PutReady::need`]). Absent (not
    /// encoded) for a whole put.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<u8>>,
}

/// For `skip_serializing_if`: a flag that is off is not encoded.
fn is_false(b: &bool) -> bool {
    !*b
}

/// The upload may start at `offset`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReady {
    /// Where the server expects the first data byte: 0 for a plain upload; for a resumable
    /// one, how many bytes of the content the server already holds (0 to `size`); for a
    /// delta put, how many bytes of the delta body it holds.
    pub offset: u64,
    /// For a delta put the server took (§5.4): the bitmap of the chunks to send, as the
    /// delta body. Absent (not encoded): send the whole content from `offset`.
    #[serde(default, with = "serde_bytes", skip_serializing_if = "Option::is_none")]
    pub need: Option<Vec<u8>>,
}

/// End of an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutEnd {
    /// Total bytes sent.
    pub size: u64,
    /// BLAKE3 of the whole content.
    #[serde(with = "serde_bytes")]
    pub hash: Digest,
}

/// One stored version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Source name.
    pub source: String,
    /// Version, counting up from 1 per source.
    pub version: u64,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of the content.
    #[serde(with = "serde_bytes")]
    pub hash: Digest,
    /// When it was stored, in seconds since the Unix epoch.
    pub modified: u64,
    /// Name of the principal who stored it.
    pub by: String,
    /// The modification time the uploader gave, in nanoseconds since the Unix epoch
    /// (metadata, §5.3). Absent (not encoded) if none was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<u64>,
    /// The uploader said the file was executable. Absent (not encoded) when false.
    #[serde(default, skip_serializing_if = "is_false")]
    pub executable: bool,
}

/// Fetch a source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Get {
    /// Source name.
    pub source: String,
    /// A specific retained version; the current one if absent.
    #[serde(default)]
    pub version: Option<u64>,
    /// First byte wanted, to resume a cut transfer; 0 if absent.
    #[serde(default)]
    pub offset: u64,
    /// How many bytes from `offset` (a range, §5.4); to the end if absent (not encoded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
}

/// A get's answer: `size - offset` bytes (or the `len` asked) of data frames follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetOk {
    /// The version being sent; `hash` covers the whole content.
    pub entry: Entry,
    /// Where the data frames start.
    pub offset: u64,
}

/// A request naming one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// Source name.
    pub source: String,
}

/// List sources.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct List {
    /// Only names starting with this string.
    #[serde(default)]
    pub prefix: String,
    /// Only names after this one: a source name, or the `next` of the previous page (which
    /// may be an opaque cursor starting with `~`).
    #[serde(default)]
    pub after: Option<String>,
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOk {
    /// Entries, sorted by source name (only those the principal may list).
    pub entries: Vec<Entry>,
    /// If more may follow: ask again with `after` set to this. Never the name of a source the
    /// principal may not list: a visible name, or an opaque cursor starting with `~`.
    #[serde(default)]
    pub next: Option<String>,
}

/// The versions of a source the server keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsOk {
    /// Newest first; empty once the source is deleted.
    pub entries: Vec<Entry>,
}

/// A deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteOk {
    /// The version number the deletion took.
    pub version: u64,
}

/// A failed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// Machine-readable cause.
    pub code: ErrorCode,
    /// One line for a person.
    pub message: String,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The principal's role does not allow the operation on that source.
    Forbidden,
    /// No such source or version.
    NotFound,
    /// The request is malformed or out of order.
    BadRequest,
    /// The request uses something this server does not support.
    Unsupported,
    /// The uploaded bytes do not match the announced hash or size.
    HashMismatch,
    /// Another connection is uploading the same content to the same source as the same
    /// principal (a resumable upload has one writer at a time); try again once it ended.
    Busy,
    /// The server's storage is full: nothing of the request was stored.
    NoSpace,
    /// The content is larger than the server accepts in one put (`max_upload_bytes`).
    TooLarge,
    /// The put would take the principal past its quota (`quota_bytes`, `quota_versions`).
    QuotaExceeded,
    /// The server is shutting down: the connection ends; try again shortly.
    ShuttingDown,
    /// The server could not complete the request.
    Internal,
    /// A code this version does not know.
    #[serde(other)]
    Other,
}

/// A message that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed or unknown message")]
pub struct DecodeError;

impl Message {
    /// Encodes the message as CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Serialising these types into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// Decodes one message; the whole input must be one CBOR item. Any well-formed encoding
    /// is accepted (RFC 8949 §5.2): indefinite lengths and longer-than-needed heads, in every
    /// position.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(DecodeError);
        }
        match Self::decode_direct(bytes) {
            Ok(msg) => Ok(msg),
            // The direct decoder reads the message map and the field names only in their
            // definite-length form. Any other well-formed item is rewritten with definite
            // lengths and read again: the same rules, a second pass only for rare encodings.
            Err(e) => match definite::rewrite(bytes) {
                Some(rewritten) => Self::decode_direct(&rewritten),
                None => Err(e),
            },
        }
    }

    fn decode_direct(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = bytes;
        let msg = ciborium::from_reader(&mut reader).map_err(|_| DecodeError)?;
        if !reader.is_empty() {
            return Err(DecodeError);
        }
        Ok(msg)
    }

    /// The type name as on the wire, for logs.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::PskAuth(_) => "psk_auth",
            Self::AuthOk(_) => "auth_ok",
            Self::AuthFailed(_) => "auth_failed",
            Self::Put(_) => "put",
            Self::PutReady(_) => "put_ready",
            Self::PutEnd(_) => "put_end",
            Self::PutOk(_) => "put_ok",
            Self::Get(_) => "get",
            Self::GetOk(_) => "get_ok",
            Self::Stat(_) => "stat",
            Self::StatOk(_) => "stat_ok",
            Self::List(_) => "list",
            Self::ListOk(_) => "list_ok",
            Self::Delete(_) => "delete",
            Self::DeleteOk(_) => "delete_ok",
            Self::Error(_) => "error",
            Self::PasswordLoginStart(_) => "password_login_start",
            Self::PasswordLoginResponse(_) => "password_login_response",
            Self::PasswordLoginFinish(_) => "password_login_finish",
            Self::PasswordLoginFailed(_) => "password_login_failed",
            Self::RegisterStart(_) => "register_start",
            Self::RegisterResponse(_) => "register_response",
            Self::RegisterFinish(_) => "register_finish",
            Self::RegisterOk(_) => "register_ok",
            Self::SessionAuth(_) => "session_auth",
            Self::Logout(_) => "logout",
            Self::LogoutOk(_) => "logout_ok",
            Self::PasswordChangeStart(_) => "password_change_start",
            Self::PasswordChangeResponse(_) => "password_change_response",
            Self::PasswordChangeProof(_) => "password_change_proof",
            Self::PasswordChangeFinish(_) => "password_change_finish",
            Self::PasswordChangeOk(_) => "password_change_ok",
            Self::MeshJoinStart(_) => "mesh_join_start",
            Self::MeshJoinResponse(_) => "mesh_join_response",
            Self::MeshJoinFinish(_) => "mesh_join_finish",
            Self::MeshJoinOk(_) => "mesh_join_ok",
            Self::MeshAuth(_) => "mesh_auth",
            Self::MeshState(_) => "mesh_state",
            Self::MeshStateOk(_) => "mesh_state_ok",
            Self::MeshList(_) => "mesh_list",
            Self::MeshListOk(_) => "mesh_list_ok",
            Self::Watch(_) => "watch",
            Self::WatchOk(_) => "watch_ok",
            Self::Event(_) => "event",
            Self::WatchGap(_) => "watch_gap",
            Self::WatchPing(_) => "watch_ping",
            Self::Versions(_) => "versions",
            Self::VersionsOk(_) => "versions_ok",
            Self::Chunks(_) => "chunks",
            Self::ChunksOk(_) => "chunks_ok",
        }
    }
}

/// Rewrites one well-formed CBOR item with definite lengths only.
mod definite {
    use ciborium_io::Read;
    use ciborium_ll::{Decoder, Encoder, Header};

    /// Deeper nesting than any message has; also bounds the rewriting's stack and memory.
    const MAX_DEPTH: usize = 32;

    /// The item `bytes` holds (exactly one) with every indefinite-length array, map, byte
    /// string and text string made definite; `None` if `bytes` is not exactly one well-formed
    /// item. Memory is bounded by the input's size times the nesting depth.
    pub(super) fn rewrite(bytes: &[u8]) -> Option<Vec<u8>> {
        let mut dec = Decoder::from(bytes);
        let mut out = Vec::with_capacity(bytes.len());
        item(&mut dec, &mut out, bytes.len(), 0)?;
        (dec.offset() == bytes.len()).then_some(out)
    }

    fn head(out: &mut Vec<u8>, h: Header) -> Option<()> {
        Encoder::from(out).push(h).ok()
    }

    /// Reads the `n` bytes of a definite string (after its head) onto `out`.
    fn copy(dec: &mut Decoder<&[u8]>, out: &mut Vec<u8>, n: usize, total: usize) -> Option<()> {
        if n > total {
            return None;
        }
        let start = out.len();
        out.resize(start + n, 0);
        dec.read_exact(&mut out[start..]).ok()
    }

    fn item(dec: &mut Decoder<&[u8]>, out: &mut Vec<u8>, total: usize, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match dec.pull().ok()? {
            Header::Break => None,
            Header::Tag(t) => {
                head(out, Header::Tag(t))?;
                item(dec, out, total, depth + 1)
            }
            h @ Header::Bytes(Some(n)) | h @ Header::Text(Some(n)) => {
                head(out, h)?;
                let start = out.len();
                copy(dec, out, n, total)?;
                if matches!(h, Header::Text(_)) {
                    std::str::from_utf8(&out[start..]).ok()?;
                }
                Some(())
            }
            h @ Header::Bytes(None) | h @ Header::Text(None) => {
                let text = matches!(h, Header::Text(_));
                let mut data = Vec::new();
                loop {
                    match dec.pull().ok()? {
                        Header::Break => break,
                        Header::Bytes(Some(n)) if !text => copy(dec, &mut data, n, total)?,
                        Header::Text(Some(n)) if text => {
                            let start = data.len();
                            copy(dec, &mut data, n, total)?;
                            // Every chunk of a text string is itself valid UTF-8.
                            std::str::from_utf8(&data[start..]).ok()?;
                        }
                        _ => return None,
                    }
                }
                let n = data.len();
                head(
                    out,
                    if text {
                        Header::Text(Some(n))
                    } else {
                        Header::Bytes(Some(n))
                    },
                )?;
                out.extend_from_slice(&data);
                Some(())
            }
            Header::Array(Some(n)) => {
                // Every item takes at least one byte.
                if n > total {
                    return None;
                }
                head(out, Header::Array(Some(n)))?;
                (0..n).try_for_each(|_| item(dec, out, total, depth + 1))
            }
            Header::Map(Some(n)) => {
                if n > total {
                    return None;
                }
                head(out, Header::Map(Some(n)))?;
                (0..n * 2).try_for_each(|_| item(dec, out, total, depth + 1))
            }
            h @ Header::Array(None) | h @ Header::Map(None) => {
                let mut inner = Vec::new();
                let mut count = 0usize;
                loop {
                    match dec.pull().ok()? {
                        Header::Break => break,
                        other => dec.push(other),
                    }
                    item(dec, &mut inner, total, depth + 1)?;
                    count += 1;
                }
                let h = if matches!(h, Header::Map(_)) {
                    if !count.is_multiple_of(2) {
                        return None;
                    }
                    Header::Map(Some(count / 2))
                } else {
                    Header::Array(Some(count))
                };
                head(out, h)?;
                out.extend_from_slice(&inner);
                Some(())
            }
            h => head(out, h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Message> {
        let entry = Entry {
            source: "a/b".into(),
            version: 2,
            size: 10,
            hash: [7; 32],
            modified: 1_700_000_000,
            by: "alice".into(),
            mtime: None,
            executable: false,
        };
        vec![
            Message::PskAuth(PskAuth {
                claims: vec![1, 2],
                mac: [3; 32],
                session: true,
            }),
            Message::PasswordLoginResponse(OpaqueResponse {
                response: vec![9; 40],
                ksf: crate::password::KsfParams::DEFAULT,
            }),
            Message::SessionAuth(SessionAuth {
                id: [1; 16],
                mac: [2; 32],
            }),
            Message::AuthOk(AuthOk {
                method: "password".into(),
                proof: vec![],
                principal: PrincipalInfo {
                    name: "a".into(),
                    attributes: Default::default(),
                },
                session: Some(Box::new(SessionGrant {
                    id: [3; 16],
                    idle_secs: 60,
                    expires: 99,
                })),
            }),
            Message::AuthFailed(Empty {}),
            Message::Put(Put {
                source: "a".into(),
                size: Some(5),
                offset: 0,
                hash: None,
                streamed: false,
                mtime: None,
                executable: false,
                chunks: None,
            }),
            Message::Put(Put {
                source: "a".into(),
                size: Some(5),
                offset: 0,
                hash: Some([2; 32]),
                streamed: false,
                mtime: None,
                executable: false,
                chunks: None,
            }),
            Message::Put(Put {
                source: "a".into(),
                size: Some(0),
                offset: 0,
                hash: None,
                streamed: true,
                mtime: None,
                executable: false,
                chunks: None,
            }),
            Message::PutEnd(PutEnd {
                size: 5,
                hash: [1; 32],
            }),
            Message::GetOk(GetOk {
                entry: entry.clone(),
                offset: 0,
            }),
            Message::ListOk(ListOk {
                entries: vec![entry],
                next: Some("a/b".into()),
            }),
            Message::Error(ErrorMsg {
                code: ErrorCode::Forbidden,
                message: "no".into(),
            }),
            Message::Watch(Watch {
                prefix: "docs/".into(),
                after: Some(12),
            }),
            Message::WatchOk(WatchOk {
                seq: 40,
                ping_ms: 250,
            }),
            Message::Event(WatchEvent {
                seq: 13,
                source: "docs/a.txt".into(),
                version: 3,
                deleted: true,
                size: 0,
                hash: [0; 32],
                modified: 1_700_000_000,
                by: "alice".into(),
            }),
            Message::WatchGap(WatchGap { oldest: 9, seq: 40 }),
            Message::WatchPing(WatchPing { seq: u64::MAX }),
        ]
    }

    /// `{"<ty>": {fields...}}` from hand-made CBOR field bytes, for malformed variants.
    fn one_entry(ty: &str, fields: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0xa1, 0x60 + ty.len() as u8];
        out.extend_from_slice(ty.as_bytes());
        out.push(0xa0 + fields.len() as u8);
        for (k, v) in fields {
            out.push(0x60 + k.len() as u8);
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    #[test]
    fn watch_messages_have_their_wire_names_and_defaults() {
        assert_eq!(
            Message::decode(&one_entry("watch", &[])).unwrap(),
            Message::Watch(Watch {
                prefix: String::new(),
                after: None
            })
        );
        // {"watch_ok": {"seq": 5, "later": "x"}}: ping_ms defaults, unknown fields ignored.
        assert_eq!(
            Message::decode(&one_entry(
                "watch_ok",
                &[("seq", &[5]), ("later", &[0x61, b'x'])]
            ))
            .unwrap(),
            Message::WatchOk(WatchOk {
                seq: 5,
                ping_ms: DEFAULT_PING_MS
            })
        );
        assert_eq!(
            Message::decode(&one_entry("watch_ping", &[("seq", &[0x18, 200])])).unwrap(),
            Message::WatchPing(WatchPing { seq: 200 })
        );
        // `deleted` may be omitted (false); null `after` is "from now".
        let mut hash = vec![0x58, 0x20];
        hash.extend_from_slice(&[7; 32]);
        let event = one_entry(
            "event",
            &[
                ("seq", &[1]),
                ("source", &[0x61, b's']),
                ("version", &[2]),
                ("size", &[3]),
                ("hash", &hash),
                ("modified", &[4]),
                ("by", &[0x61, b'b']),
            ],
        );
        let Message::Event(e) = Message::decode(&event).unwrap() else {
            panic!("not an event")
        };
        assert!(!e.deleted);
        assert_eq!((e.seq, e.version, e.size, e.hash), (1, 2, 3, [7; 32]));
        assert_eq!(
            Message::decode(&one_entry("watch", &[("after", &[0xf6])])).unwrap(),
            Message::Watch(Watch::default())
        );
        for m in samples().iter().skip(10) {
            let name = m.type_name();
            let bytes = m.encode();
            assert_eq!(&bytes[2..2 + name.len()], name.as_bytes(), "{name}");
        }
    }

    #[test]
    fn malformed_watch_messages_are_refused() {
        let mut short_hash = vec![0x58, 0x1f];
        short_hash.extend_from_slice(&[7; 31]);
        for bad in [
            // Missing required fields.
            one_entry("watch_ok", &[]),
            one_entry("watch_gap", &[("oldest", &[1])]),
            one_entry("watch_ping", &[]),
            one_entry("event", &[("seq", &[1])]),
            // Wrong types: a negative number, text for a number, a number for a prefix.
            one_entry("watch_ping", &[("seq", &[0x20])]),
            one_entry("watch", &[("after", &[0x61, b'1'])]),
            one_entry("watch", &[("prefix", &[1])]),
            one_entry("watch_ok", &[("seq", &[0x1b, 1, 2, 3])]),
            // A hash of 31 bytes.
            one_entry(
                "event",
                &[
                    ("seq", &[1]),
                    ("source", &[0x61, b's']),
                    ("version", &[2]),
                    ("size", &[3]),
                    ("hash", &short_hash),
                    ("modified", &[4]),
                    ("by", &[0x61, b'b']),
                ],
            ),
            // Not a map of fields.
            vec![0xa1, 0x65, b'w', b'a', b't', b'c', b'h', 0x80],
        ] {
            assert_eq!(Message::decode(&bad), Err(DecodeError), "{bad:02x?}");
        }
        for m in samples().iter().skip(10) {
            let good = m.encode();
            for cut in 0..good.len() {
                assert!(Message::decode(&good[..cut]).is_err(), "{m:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn round_trip() {
        for m in samples() {
            assert_eq!(Message::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn wire_shape_is_a_one_entry_map() {
        let m = Message::Stat(SourceRef { source: "x".into() });
        // {"stat": {"source": "x"}}
        let mut expected = vec![0xa1, 0x64];
        expected.extend_from_slice(b"stat");
        expected.extend_from_slice(&[0xa1, 0x66]);
        expected.extend_from_slice(b"source");
        expected.extend_from_slice(&[0x61, b'x']);
        assert_eq!(m.encode(), expected);
    }

    /// `put_ok` and `stat_ok` carry the entry's six fields directly (flat); `get_ok` nests
    /// them under `entry` (PROTOCOL.md §3).
    #[test]
    fn put_ok_and_stat_ok_are_flat_and_get_ok_nests_the_entry() {
        let entry = Entry {
            source: "x".into(),
            version: 1,
            size: 0,
            hash: [0; 32],
            modified: 0,
            by: "b".into(),
            mtime: None,
            executable: false,
        };
        for (m, name) in [
            (Message::PutOk(entry.clone()), "put_ok"),
            (Message::StatOk(entry.clone()), "stat_ok"),
        ] {
            // {"put_ok": {"source": "x", ...}}: a map of 6 fields, the first `source`.
            let mut head = vec![0xa1, 0x60 + name.len() as u8];
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(&[0xa6, 0x66]);
            head.extend_from_slice(b"source");
            assert!(m.encode().starts_with(&head), "{name}");
        }
        let get_ok = Message::GetOk(GetOk { entry, offset: 0 }).encode();
        let mut head = vec![0xa1, 0x66];
        head.extend_from_slice(b"get_ok");
        head.extend_from_slice(&[0xa2, 0x65]);
        head.extend_from_slice(b"entry");
        head.push(0xa6);
        assert!(get_ok.starts_with(&head));
    }

    /// Metadata (PROTOCOL.md §5.3) is encoded only where present, and round-trips.
    #[test]
    fn metadata_is_encoded_only_where_present() {
        let entry = Entry {
            source: "x".into(),
            version: 1,
            size: 0,
            hash: [0; 32],
            modified: 0,
            by: "b".into(),
            mtime: Some(1_000_000_000_123_456_789),
            executable: true,
        };
        let bytes = Message::StatOk(entry.clone()).encode();
        assert_eq!(bytes[1 + 1 + "stat_ok".len()], 0xa8, "eight fields");
        assert_eq!(Message::decode(&bytes).unwrap(), Message::StatOk(entry));
        let put = Put {
            source: "x".into(),
            size: Some(1),
            offset: 0,
            hash: None,
            streamed: false,
            mtime: Some(5),
            executable: false,
            chunks: None,
        };
        let bytes = Message::Put(put.clone()).encode();
        // source, size, offset, mtime: `executable` false is not encoded.
        assert_eq!(bytes[1 + 1 + "put".len()], 0xa4);
        assert_eq!(Message::decode(&bytes).unwrap(), Message::Put(put));
    }

    #[test]
    fn unknown_fields_ignored_missing_defaults() {
        // {"get": {"source": "x", "future": 1}}
        let mut bytes = vec![0xa1, 0x63];
        bytes.extend_from_slice(b"get");
        bytes.extend_from_slice(&[0xa2, 0x66]);
        bytes.extend_from_slice(b"source");
        bytes.extend_from_slice(&[0x61, b'x', 0x66]);
        bytes.extend_from_slice(b"future");
        bytes.push(0x01);
        assert_eq!(
            Message::decode(&bytes).unwrap(),
            Message::Get(Get {
                source: "x".into(),
                version: None,
                offset: 0,
                len: None,
            })
        );
    }

    #[test]
    fn unknown_error_code_decodes() {
        // {"error": {"code": "later", "message": ""}}
        let mut bytes = vec![0xa1, 0x65];
        bytes.extend_from_slice(b"error");
        bytes.extend_from_slice(&[0xa2, 0x64]);
        bytes.extend_from_slice(b"code");
        bytes.push(0x65);
        bytes.extend_from_slice(b"later");
        bytes.push(0x67);
        bytes.extend_from_slice(b"message");
        bytes.push(0x60);
        let Message::Error(e) = Message::decode(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(e.code, ErrorCode::Other);
    }

    #[test]
    fn malformed_refused() {
        for bad in [
            &[][..],
            &[0xff],
            &[0xa0],
            &[0xa1, 0x63, b'f', b'o', b'o', 0xa0],
            // Claims a byte string of 2^63 bytes.
            &[0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0],
            // Deep nesting.
            &[0x81; 10_000],
        ] {
            assert_eq!(Message::decode(bad), Err(DecodeError), "{bad:?}");
        }
        let good = samples()[2].encode();
        for cut in 0..good.len() {
            assert!(Message::decode(&good[..cut]).is_err());
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(Message::decode(&trailing).is_err());
    }

    /// `{"stat": {"source": "x"}}` in the encodings §3 says a decoder accepts.
    #[test]
    fn any_well_formed_encoding_is_accepted() {
        let want = Message::Stat(SourceRef { source: "x".into() });
        let cases: [(&str, &[u8]); 7] = [
            ("preferred", b"\xa1\x64stat\xa1\x66source\x61x"),
            // An indefinite-length outer map (0xbf ... 0xff).
            ("outer map", b"\xbf\x64stat\xa1\x66source\x61x\xff"),
            // An indefinite-length field map.
            ("field map", b"\xa1\x64stat\xbf\x66source\x61x\xff"),
            // A field name, and the type name, as indefinite-length text in chunks.
            ("field name", b"\xa1\x64stat\xa1\x7f\x63sou\x63rce\xff\x61x"),
            ("type name", b"\xa1\x7f\x62st\x62at\xff\xa1\x66source\x61x"),
            // A field value as indefinite-length text.
            ("value", b"\xa1\x64stat\xa1\x66source\x7f\x61x\xff"),
            // Lengths in longer heads than needed: map(1) as 0xb8 0x01, text(4) as 0x78 0x04.
            (
                "long heads",
                b"\xb8\x01\x78\x04stat\xb9\x00\x01\x66source\x61x",
            ),
        ];
        for (what, bytes) in cases {
            assert_eq!(Message::decode(bytes), Ok(want.clone()), "{what}");
        }
        // Everything indefinite at once, with a non-shortest integer: {"get": {"source": "x",
        // "offset": 5 as 8 bytes}}.
        let get = b"\xbf\x7f\x63get\xff\xbf\x7f\x66source\xff\x61x\x66offset\x1b\0\0\0\0\0\0\0\x05\xff\xff";
        assert_eq!(
            Message::decode(get),
            Ok(Message::Get(Get {
                source: "x".into(),
                version: None,
                offset: 5,
                len: None,
            }))
        );
        // Still exactly one item, still exactly one entry, and still well-formed.
        for bad in [
            &b"\xbf\x64stat\xa1\x66source\x61x\xff\x00"[..],
            b"\xbf\x64stat\xa1\x66source\x61x",
            b"\xbf\xff",
            b"\xbf\x64stat\xa1\x66source\x61x\x64stat\xa1\x66source\x61x\xff",
            // A chunk of an indefinite text string that is not text.
            b"\xa1\x7f\x42st\x62at\xff\xa1\x66source\x61x",
        ] {
            assert_eq!(Message::decode(bad), Err(DecodeError), "{bad:02x?}");
        }
    }

    #[test]
    fn hash_must_be_32_bytes() {
        let mut m = Message::PutEnd(PutEnd {
            size: 0,
            hash: [0; 32],
        })
        .encode();
        // Shorten the byte string header 0x58 0x20 to 0x58 0x1f and drop one byte.
        let pos = m.windows(2).position(|w| w == [0x58, 0x20]).unwrap();
        m[pos + 1] = 0x1f;
        m.pop();
        assert!(Message::decode(&m).is_err());
    }
}
