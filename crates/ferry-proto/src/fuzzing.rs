//! Entry points shared by the fuzz targets in `fuzz/` and the corpus replay test
//! (`tests/fuzz_corpus.rs`). Not part of the API.
//!
//! Each function feeds arbitrary bytes to one decoder of outside input and panics, with a
//! message naming the broken invariant, if the decoder's answer is inconsistent: a panic is
//! what the fuzzer reports as a crash.

use crate::claims::Claims;
use crate::credential::Credential;
use crate::frame::{self, HEADER_LEN};
use crate::message::Message;
use crate::server_id::ServerId;

/// Splits frames off `data` with [`frame::decode`] until it needs more bytes.
///
/// Checks that every decoded frame re-encodes to exactly the bytes it came from, that
/// [`frame::decode_header`] agrees with [`frame::decode`] on frames, errors and "need more",
/// and that one byte fewer than a whole frame is "need more". After an error it skips one
/// byte and goes on, so that the rest of the input is exercised too.
pub fn frame(data: &[u8]) {
    let mut rest = data;
    while !rest.is_empty() {
        let header: Option<[u8; HEADER_LEN]> =
            rest.get(..HEADER_LEN).and_then(|h| h.try_into().ok());
        match frame::decode(rest) {
            Ok(Some((kind, body, used))) => {
                assert_eq!(
                    used,
                    HEADER_LEN + body.len(),
                    "frame: used bytes != header + body"
                );
                assert!(used <= rest.len(), "frame: used more bytes than given");
                let Some(header) = header else {
                    panic!("frame: decoded a frame from fewer than {HEADER_LEN} bytes");
                };
                assert_eq!(
                    frame::decode_header(header),
                    Ok((kind, body.len())),
                    "frame: decode_header disagrees with decode"
                );
                let mut out = Vec::new();
                assert!(
                    frame::encode(kind, body, &mut out).is_some(),
                    "frame: a decoded body of {} bytes does not encode",
                    body.len()
                );
                assert_eq!(
                    out,
                    rest[..used],
                    "frame: re-encoding differs from the decoded bytes"
                );
                assert_eq!(
                    frame::decode(&rest[..used - 1]),
                    Ok(None),
                    "frame: a frame cut by one byte is not 'need more'"
                );
                rest = &rest[used..];
            }
            Ok(None) => {
                if let Some(header) = header {
                    match frame::decode_header(header) {
                        Ok((_, body_len)) => assert!(
                            rest.len() < HEADER_LEN + body_len,
                            "frame: 'need more' although the whole frame is there"
                        ),
                        Err(e) => panic!("frame: 'need more' but decode_header says {e}"),
                    }
                }
                return;
            }
            Err(e) => {
                match header {
                    Some(header) => assert_eq!(
                        frame::decode_header(header),
                        Err(e),
                        "frame: decode_header disagrees with decode on an error"
                    ),
                    // A bad length is refused from its four bytes alone.
                    None => {
                        let Some(length) = rest
                            .get(..frame::LENGTH_LEN)
                            .and_then(|l| <[u8; frame::LENGTH_LEN]>::try_from(l).ok())
                        else {
                            panic!(
                                "frame: error {e} from fewer than {} bytes",
                                frame::LENGTH_LEN
                            );
                        };
                        assert_eq!(
                            frame::decode_length(length).map(|_| ()),
                            Err(e),
                            "frame: decode_length disagrees with decode on an error"
                        );
                    }
                }
                rest = &rest[1..];
            }
        }
    }
}

/// Decodes a [`Message`]; if that succeeds, its encoding decodes to the same message and
/// encodes to the same bytes again.
pub fn message(data: &[u8]) {
    let Ok(msg) = Message::decode(data) else {
        return;
    };
    let _ = msg.type_name();
    let bytes = msg.encode();
    match Message::decode(&bytes) {
        Ok(again) => {
            assert_eq!(again, msg, "message: decode(encode(m)) != m");
            assert_eq!(
                again.encode(),
                bytes,
                "message: encoding is not stable across a round trip"
            );
        }
        Err(e) => panic!("message: the encoding of a decoded {msg:?} does not decode: {e}"),
    }
}

/// Opens the input as a listing cursor (`cursor::CursorKey::open`, fixed key): never panics,
/// and what opens is a name sealed by that key. Also seals the input as a name and checks that
/// it opens to the same name, and only for the same principal and prefix.
pub fn list_cursor(data: &[u8]) {
    use crate::cursor::CursorKey;
    let key = CursorKey::derive(&crate::secret::MasterKey::from_bytes([7; 32]));
    let text = String::from_utf8_lossy(data);
    if let Some(name) = key.open("p", "", &text) {
        let again = key.seal([1; 24], "p", "", &name);
        assert_eq!(
            key.open("p", "", &again),
            Some(name),
            "cursor: re-seal differs"
        );
    }
    let sealed = key.seal([2; 24], "p", "x", &text);
    assert!(sealed.starts_with(crate::cursor::MARK), "cursor: no mark");
    assert_eq!(
        key.open("p", "x", &sealed).as_deref(),
        Some(&*text),
        "cursor: round trip"
    );
    assert_eq!(
        key.open("q", "x", &sealed),
        None,
        "cursor: opened for another principal"
    );
    assert_eq!(
        key.open("p", "", &sealed),
        None,
        "cursor: opened for another prefix"
    );
}

/// Decodes [`Claims`]; if that succeeds, they encode to exactly the input (the decoder
/// accepts only canonical bytes) and satisfy the rules `Claims::new` enforces.
pub fn claims(data: &[u8]) {
    let Ok(claims) = Claims::decode(data) else {
        return;
    };
    assert_eq!(
        claims.encode(),
        data,
        "claims: accepted bytes that are not the canonical encoding"
    );
    assert_eq!(
        Claims::new(claims.name(), claims.epoch(), claims.attributes().clone()).as_ref(),
        Ok(&claims),
        "claims: decoded claims that Claims::new refuses or changes"
    );
}

/// Parses a [`Credential`] if `data` is UTF-8; if that succeeds, its `to_toml` parses to the
/// same credential. Whatever happens, the error's text holds no run of 64 hex digits (the
/// shape of a key).
pub fn credential(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    match Credential::parse(text) {
        Ok(cred) => {
            let toml = cred.to_toml();
            match Credential::parse(&toml) {
                Ok(again) => assert_eq!(again, cred, "credential: parse(to_toml(c)) != c"),
                Err(e) => panic!("credential: to_toml of a parsed credential does not parse: {e}"),
            }
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(
                !has_hex_run(&shown, 64),
                "credential: error text holds 64 hex digits: {shown:?}"
            );
        }
    }
}

/// Parses a [`ServerId`] if `data` is UTF-8; if that succeeds, its readable form (and that
/// form in lower case) parses to the same ID.
pub fn server_id(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    let Ok(id) = ServerId::parse(text) else {
        return;
    };
    let shown = id.to_string();
    assert_eq!(
        ServerId::parse(&shown).as_ref(),
        Ok(&id),
        "server_id: parse(display(id)) != id"
    );
    assert_eq!(
        ServerId::parse(&shown.to_lowercase()).as_ref(),
        Ok(&id),
        "server_id: the lower-case display does not parse to the same ID"
    );
}

/// Whether `s` contains at least `n` ASCII hex digits in a row.
fn has_hex_run(s: &str, n: usize) -> bool {
    let mut run = 0;
    for b in s.bytes() {
        if b.is_ascii_hexdigit() {
            run += 1;
            if run >= n {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// A server context with one registered user, one invite, one session and a mesh that has
/// every device as a member, none of whose secrets the fuzzer knows. Built once per process.
struct FuzzCtx {
    master: crate::secret::MasterKey,
    keys: crate::password::OpaqueKeys,
    record: crate::password::UserRecord,
    mesh: FuzzMesh,
}

/// A mesh whose key of every epoch is one the fuzzer does not know, and where every device is
/// a member and every signature valid: only the MAC stands in the way.
struct FuzzMesh(crate::secret::MeshKey);

impl crate::auth::MeshDirectory for FuzzMesh {
    fn me(&self) -> crate::server_id::ServerId {
        crate::server_id::ServerId::from_spki(b"fuzz")
    }
    fn member_spki(&self, _: &crate::server_id::ServerId) -> Option<Vec<u8>> {
        Some(Vec::new())
    }
    fn key_for(&self, _: u64) -> Option<crate::secret::MeshKey> {
        Some(self.0.clone())
    }
    fn epoch(&self) -> u64 {
        1
    }
    fn verify_signature(&self, _: &[u8], _: &[u8], _: &[u8]) -> bool {
        true
    }
}

fn fuzz_ctx() -> &'static FuzzCtx {
    static CTX: std::sync::OnceLock<FuzzCtx> = std::sync::OnceLock::new();
    CTX.get_or_init(|| {
        use crate::password::*;
        let mut rng = rand_core::OsRng;
        let keys = OpaqueKeys::generate(&mut rng);
        let ksf = KsfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let record = (|| {
            let (req, st) = client_register_start(&mut rng, b"secret password").ok()?;
            let resp = server_register_start(&keys, "alice", &req).ok()?;
            let up = client_register_finish(&mut rng, st, &resp, ksf).ok()?;
            server_register_finish(&up, ksf).ok()
        })()
        .unwrap_or_else(|| panic!("fuzz context: cannot register"));
        let mut master = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rng, &mut master);
        let mut mesh = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rng, &mut mesh);
        FuzzCtx {
            master: crate::secret::MasterKey::from_bytes(master),
            keys,
            record,
            mesh: FuzzMesh(crate::secret::MeshKey::from_bytes(mesh)),
        }
    })
}

impl crate::auth::ServerContext for FuzzCtx {
    fn master_key(&self) -> &crate::secret::MasterKey {
        &self.master
    }
    fn claims_current(&self, _: &Claims) -> bool {
        true
    }
    fn invite_current(&self, _: &Claims) -> bool {
        true
    }
    fn opaque_keys(&self) -> Option<&crate::password::OpaqueKeys> {
        Some(&self.keys)
    }
    fn user(&self, name: &str) -> Option<crate::auth::KnownUser> {
        (name == "alice").then(|| crate::auth::KnownUser {
            record: self.record.clone(),
            attributes: Default::default(),
            generation: 0,
        })
    }
    fn new_record_ksf(&self) -> crate::password::KsfParams {
        crate::password::KsfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }
    fn session(&self, _: &crate::session::SessionId) -> Option<crate::auth::StoredSession> {
        Some(crate::auth::StoredSession {
            secret: crate::secret::SessionSecret::from_bytes([7; 32]),
            principal: crate::auth::Principal {
                name: "alice".into(),
                attributes: Default::default(),
                method: crate::auth::Method::Password { generation: 0 },
            },
        })
    }
    fn mesh(&self) -> Option<&dyn crate::auth::MeshDirectory> {
        Some(&self.mesh)
    }
}

/// Feeds the frames in `data`, as messages, to the server's authentication state machine.
/// Whatever they say, they must never authenticate anyone or register a password: the fuzzer
/// knows no key, password, invite, session secret or mesh key (every lookup answers "yes,
/// current").
pub fn auth_server(data: &[u8]) {
    use crate::auth::{ServerAuth, ServerStep};
    let ctx = fuzz_ctx();
    let mut state = ServerAuth::new(crate::secret::Exporter::from_bytes([3; 32]));
    let mut rest = data;
    for _ in 0..8 {
        let Ok(Some((_, body, used))) = frame::decode(rest) else {
            return;
        };
        rest = &rest[used..];
        let Ok(msg) = Message::decode(body) else {
            return;
        };
        match state.handle(msg, ctx, &mut rand_core::OsRng, 1_000) {
            ServerStep::Continue { next, .. } => state = next,
            ServerStep::Accept { principal, .. } => {
                panic!("random input authenticated {:?}", principal.name)
            }
            ServerStep::Register { invite, .. } => {
                panic!("random input registered a password for {:?}", invite.name())
            }
            ServerStep::Reject { .. } => return,
        }
    }
}

/// Seed inputs for [`auth_server`]: well-formed openings of every method, framed.
pub fn auth_server_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::message::*;
    let mut rng = rand_core::OsRng;
    let exporter = crate::secret::Exporter::from_bytes([3; 32]);
    let framed = |msgs: &[Message]| {
        let mut out = Vec::new();
        for m in msgs {
            let _ = frame::encode(frame::Kind::Message, &m.encode(), &mut out);
        }
        out
    };
    let mut seeds = Vec::new();
    if let Ok((login, _)) =
        crate::auth::password_login(&mut rng, &exporter, "alice", b"guess", true)
    {
        let fin = Message::PasswordLoginFinish(PasswordLoginFinish {
            finalization: vec![0; 64],
        });
        seeds.push(("password-login", framed(&[login.clone(), fin])));
        seeds.push((
            "password-login-failed",
            framed(&[login, Message::PasswordLoginFailed(Empty {})]),
        ));
    }
    let claims = Claims::new("alice", 1, [("role", "writer"), ("expires", "2000")]);
    if let Ok(claims) = claims {
        let key = crate::secret::InviteKey::from_bytes([1; 32]);
        if let Ok((reg, _)) = crate::auth::register(&mut rng, &exporter, &claims, &key, b"pw") {
            let fin = Message::RegisterFinish(RegisterFinish {
                upload: vec![0; 192],
            });
            seeds.push(("register", framed(&[reg, fin])));
        }
        seeds.push((
            "psk",
            framed(&[Message::PskAuth(PskAuth {
                claims: claims.encode(),
                mac: [0; 32],
                session: true,
            })]),
        ));
    }
    seeds.push((
        "session",
        framed(&[Message::SessionAuth(SessionAuth {
            id: [1; 16],
            mac: [2; 32],
        })]),
    ));
    seeds.push((
        "mesh",
        framed(&[Message::MeshAuth(crate::mesh::wire::MeshAuth {
            device: [1; 32],
            epoch: 1,
            mac: [2; 32],
            signature: vec![3; 64],
        })]),
    ));
    seeds
}

/// The HTTP front's decoders of outside input. The first byte picks one:
///
/// * even: the rest, if UTF-8, as an `Authorization` header value, a body-hash header value,
///   a request path and a query. Whatever parses must print back to exactly the input (the
///   header has one spelling), and a canonical path or query must be its own canonical
///   form. The header must never verify: the fuzzer knows no credential.
/// * odd: the rest as a streamed body ([`crate::http::chunks`]) under a fixed key and seed.
///   A verifier must consume no more than it is given, hand out no empty data chunk, and
///   accept only chunks that the signer itself produces for the same data.
pub fn http_auth(data: &[u8]) {
    use crate::http::canonical::{self, BodyHash};
    use crate::http::header::Authorization;
    use crate::http::{ReplayCache, ReplayConfig, RequestParts};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let Ok(text) = core::str::from_utf8(rest) else {
            return;
        };
        if let Ok(auth) = Authorization::parse(text) {
            assert_eq!(
                auth.to_header_value(),
                text,
                "http_auth: accepted a header that is not in its one spelling"
            );
            assert_eq!(
                Claims::decode(auth.claims_encoding()).as_ref(),
                Ok(auth.claims()),
                "http_auth: claims differ from their encoding"
            );
        }
        if let Some(h) = BodyHash::parse(text) {
            assert_eq!(h.to_header(), text, "http_auth: body hash spelt two ways");
        }
        if let Ok(path) = canonical::canonical_path(text)
            && path.len() <= canonical::MAX_PATH_LEN
        {
            assert_eq!(
                canonical::canonical_path(&path).as_ref(),
                Ok(&path),
                "http_auth: canonical path is not canonical"
            );
        }
        if let Ok(query) = canonical::canonical_query(text)
            && query.len() <= canonical::MAX_QUERY_LEN
        {
            assert_eq!(
                canonical::canonical_query(&query).as_ref(),
                Ok(&query),
                "http_auth: canonical query is not canonical"
            );
        }
        let master = crate::secret::MasterKey::from_bytes([5; 32]);
        let parts = RequestParts::new("GET", "/v1/x", "", BodyHash::of(b""));
        let mut cache = ReplayCache::new(ReplayConfig::default());
        assert!(
            crate::http::verify_request(&master, text, &parts, 1_795_000_000, &mut cache, |_| {
                true
            })
            .is_err(),
            "http_auth: a header from the fuzzer verified"
        );
    } else {
        let (mut signer, mut verifier) = fuzz_chunk_pair();
        let mut input = rest;
        let mut signed = Vec::new();
        // Each accepted chunk consumes at least its header, so this ends.
        while let Ok(Some((chunk, used))) = verifier.decode(input) {
            assert!(
                (crate::http::chunks::CHUNK_HEADER_LEN..=input.len()).contains(&used),
                "http_auth: chunk used {used} of {} bytes",
                input.len()
            );
            let before = signed.len();
            match chunk {
                crate::http::chunks::Chunk::Data(d) => {
                    assert!(!d.is_empty(), "http_auth: empty data chunk");
                    signer.push(d, &mut signed);
                }
                crate::http::chunks::Chunk::End => {
                    // `finish` consumes the signer; nothing may follow the end anyway.
                    std::mem::replace(&mut signer, fuzz_chunk_pair().0).finish(&mut signed);
                }
            }
            assert_eq!(
                &signed[before..],
                &input[..used],
                "http_auth: accepted a chunk the signer would not produce"
            );
            input = &input[used..];
            if input.is_empty() {
                break;
            }
        }
    }
}

fn fuzz_chunk_pair() -> (
    crate::http::chunks::ChunkSigner,
    crate::http::chunks::ChunkVerifier,
) {
    use crate::http::chunks::{ChunkSigner, ChunkVerifier};
    let keys = crate::http::signing::DayKeys::derive(
        &crate::secret::Psk::from_bytes([5; 32]),
        "20261129".to_owned(),
    );
    let seed = crate::http::Signature([1; 32]);
    (
        ChunkSigner::new(keys.request.clone(), &keys.date, seed),
        ChunkVerifier::new(keys.request.clone(), &keys.date, seed),
    )
}

/// Seed inputs for [`http_auth`]: a signed request's header, paths, queries, body hashes
/// and a signed streamed body.
pub fn http_auth_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::http::{BodyHash, Nonce, RequestParts, RequestSigner};
    let text = |s: &str| [&[0u8][..], s.as_bytes()].concat();
    let mut seeds = Vec::new();
    if let Ok(claims) = Claims::new("alice", 1, [("role", "writer")]) {
        let signer = RequestSigner::new(claims, crate::secret::Psk::from_bytes([5; 32]));
        let parts = RequestParts::new("GET", "/v1/x", "", BodyHash::of(b""));
        if let Ok(signed) = signer.sign(&parts, 1_795_000_000, Nonce::from_bytes([7; 16])) {
            seeds.push(("authorization", text(signed.authorization())));
        }
    }
    seeds.push(("path", text("/v1/sources/a%2Fb/r%C3%A9sum%c3%a9.txt")));
    seeds.push(("query", text("b=2&a=%7e&flag&x=a%3Db")));
    seeds.push(("body-hash", text(&BodyHash::of(b"x").to_header())));
    seeds.push(("streaming", text(crate::http::canonical::STREAMING_PAYLOAD)));
    let (mut signer, _) = fuzz_chunk_pair();
    let mut body = vec![1u8];
    signer.push(b"hello ", &mut body);
    signer.push(b"world", &mut body);
    signer.finish(&mut body);
    seeds.push(("chunks", body));
    seeds
}

/// The sealed-body decoders ([`crate::http::seal`]). The first byte picks one: even, the rest
/// is a sealed request to a fixed key pair; odd, a sealed response under a fixed exported
/// secret. Whatever opens must be consistent: each step consumes bytes it was given (at
/// least a header), a chunk's plaintext is its ciphertext less the 16-byte tag and at most
/// [`crate::http::seal::MAX_SEALED_CHUNK`], nothing opens after the end, and the opener is
/// finished exactly when the final chunk opened.
pub fn http_seal(data: &[u8]) {
    use crate::http::seal::{
        CHUNK_HEADER_LEN, MAX_SEALED_CHUNK, RequestOpener, ResponseOpener, SealError, Unsealed,
    };
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let key = fuzz_seal_key();
    let mut request = RequestOpener::new(&key);
    let mut response = ResponseOpener::from_parts([9; 32], [8; 32]);
    let mut decode = |input: &[u8]| -> Result<Option<(Unsealed, usize)>, SealError> {
        if mode % 2 == 0 {
            request.decode(input)
        } else {
            response.decode(input)
        }
    };
    let mut ended = false;
    // Each step consumes at least a header, so this ends.
    loop {
        let step = decode(rest);
        if ended {
            assert!(
                rest.is_empty() || step.is_err(),
                "http_seal: accepted bytes after the end"
            );
            break;
        }
        let Ok(Some((what, used))) = step else {
            break;
        };
        assert!(
            used > 0 && used <= rest.len(),
            "http_seal: used {used} of {} bytes",
            rest.len()
        );
        match what {
            Unsealed::Start => {}
            Unsealed::Data(ref d) | Unsealed::End(ref d) => {
                assert_eq!(
                    d.len() + 16 + CHUNK_HEADER_LEN,
                    used,
                    "http_seal: plaintext length disagrees with the chunk"
                );
                assert!(d.len() <= MAX_SEALED_CHUNK, "http_seal: chunk too large");
                ended = matches!(what, Unsealed::End(_));
            }
        }
        rest = &rest[used..];
    }
    let finished = if mode % 2 == 0 {
        request.is_finished()
    } else {
        response.is_finished()
    };
    assert_eq!(
        finished,
        ended && rest.is_empty(),
        "http_seal: finished disagrees with the final chunk"
    );
}

/// The operating system's RNG (rand_core 0.6's `OsRng`) behind rand_core 0.10's traits, for
/// the seeds only.
struct SeedRng;

impl rand_core_10::TryRng for SeedRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(rand_core::RngCore::next_u32(&mut rand_core::OsRng))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(rand_core::RngCore::next_u64(&mut rand_core::OsRng))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, dst);
        Ok(())
    }
}

impl rand_core_10::TryCryptoRng for SeedRng {}

fn fuzz_seal_key() -> crate::http::seal::SealKeyPair {
    crate::http::seal::SealKeyPair::derive(1, &[42; 32])
}

/// Seed inputs for [`http_seal`]: a sealed request to the fixed key and a sealed response
/// under the fixed secret.
pub fn http_seal_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::http::seal::{RequestSealer, ResponseSealer};
    let mut seeds = Vec::new();
    let mut rng = SeedRng;
    let mut req = vec![0u8];
    if let Ok(mut s) = RequestSealer::new(&fuzz_seal_key().public_key(), &mut rng, &mut req)
        && s.push(b"hello ", &mut req).is_ok()
        && s.finish(b"world", &mut req).is_ok()
    {
        seeds.push(("request", req));
    }
    let mut resp = vec![1u8];
    resp.extend_from_slice(&[3; 32]);
    let mut s = ResponseSealer::from_parts([9; 32], [8; 32], &[3; 32]);
    if s.push(b"the answer", &mut resp).is_ok() && s.finish(b"", &mut resp).is_ok() {
        seeds.push(("response", resp));
    }
    seeds
}

/// Parses `data` (if UTF-8) as every state file ferry keeps (`users.toml`, `invites.toml`,
/// `sessions.toml`, `profile.toml`, `session.toml`). Whatever parses must survive its own
/// encoding unchanged, its accessors must not panic, and no error may quote the file (a run of
/// 16 hex digits in an error would be a secret leaking into a log).
pub fn state_files(data: &[u8]) {
    use crate::files::*;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    fn check<T: PartialEq + core::fmt::Debug>(
        what: &str,
        parsed: Result<T, FileError>,
        reparse: impl Fn(&T) -> Result<T, FileError>,
    ) -> Option<T> {
        match parsed {
            Ok(v) => {
                let again = reparse(&v);
                assert!(
                    again.as_ref() == Ok(&v),
                    "{what}: does not survive its own encoding"
                );
                Some(v)
            }
            Err(e) => {
                let msg = e.to_string();
                let hex_run = msg
                    .as_bytes()
                    .split(|b| !b.is_ascii_hexdigit())
                    .any(|run| run.len() >= 16);
                assert!(!hex_run, "{what}: error quotes the file: {msg}");
                None
            }
        }
    }
    if let Some(reg) = check("clients", Registry::parse(text), |v| {
        v.to_toml().and_then(|t| Registry::parse(&t))
    }) {
        for (name, c) in &reg.clients {
            let _ = reg.is_current(name, c.epoch);
        }
    }
    let reparse_users = |v: &Users| v.to_toml().and_then(|t| Users::parse(&t));
    if let Some(users) = check("users", Users::parse(text), reparse_users) {
        for u in users.users.values() {
            let _ = u.user_record();
        }
    }
    check("invites", Invites::parse(text), |v| {
        v.to_toml().and_then(|t| Invites::parse(&t))
    });
    if let Some(sessions) = check("sessions", Sessions::parse(text), |v| {
        v.to_toml().and_then(|t| Sessions::parse(&t))
    }) {
        for s in sessions.sessions.values() {
            let _ = (s.live(u64::MAX), &s.secret, s.principal());
        }
    }
    check("profile", Profile::parse(text), |v| {
        v.to_toml().and_then(|t| Profile::parse(&t))
    });
    if let Some(s) = check("session file", SessionFile::parse(text), |v| {
        v.to_toml().and_then(|t| SessionFile::parse(&t))
    }) {
        let _ = (s.session_id(), s.session_secret());
    }
}

/// The key the announcement target seals and opens with.
pub const ANNOUNCE_FUZZ_KEY: [u8; 32] = [0x42; 32];

/// Feeds `data` to the announcement decoder several ways: as a whole datagram (opened with a
/// fixed key: the fuzzer cannot forge the tag, so this exercises the header checks), as the
/// plaintext of a datagram sealed with that key (so the body decoder sees arbitrary bytes),
/// as a join beacon, through the mesh node's rules, and as a `mesh.toml`. Whatever opens must
/// re-seal and open to the same body; whatever decodes as a beacon must survive its own
/// encoding; whatever parses as a mesh state must survive its own encoding.
pub fn announcement(data: &[u8]) {
    use crate::mesh::{announce, beacon};

    if let Some(b) = beacon::decode(data) {
        assert_eq!(beacon::decode(&beacon::encode(&b)), Some(b));
    }

    let key = || Some(zeroize::Zeroizing::new(ANNOUNCE_FUZZ_KEY));
    if let Ok(body) = announce::open(data, |_| key()) {
        let again = announce::seal(&ANNOUNCE_FUZZ_KEY, 1, [0; 24], &body);
        if let Ok(d) = again {
            assert_eq!(announce::open(&d, |_| key()).ok(), Some(body));
        }
    }

    let datagram = announce::seal_raw(&ANNOUNCE_FUZZ_KEY, 7, [9; 24], data);
    if let Ok(body) = announce::open(&datagram, |e| (e == 7).then(key).flatten()) {
        let d = announce::seal(&ANNOUNCE_FUZZ_KEY, 7, [1; 24], &body);
        if let Ok(d) = d {
            assert_eq!(announce::open(&d, |_| key()).ok(), Some(body));
        }
    }

    announcement_node(data);

    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(state) = crate::mesh::state::MeshState::parse(text)
    {
        let _ = state.members_digest();
        let encoded = state.to_toml();
        let Ok(encoded) = encoded else {
            panic!("mesh state does not encode");
        };
        let back = crate::mesh::state::MeshState::parse(&encoded);
        assert!(
            back.as_ref().is_ok_and(|b| b.members == state.members
                && b.epoch == state.epoch
                && b.key == state.key
                && b.removed == state.removed),
            "mesh state does not survive its own encoding"
        );
    }
}

/// The mesh node's rules on `data` as a datagram and as the plaintext of one sealed for the
/// node's epoch: whatever it asks to fetch names a valid entry, and only a datagram of the
/// next epoch starts a catch-up.
fn announcement_node(data: &[u8]) {
    use crate::mesh::node::{Action, Node};
    use crate::mesh::{announce, key::announce_key, state};
    let mesh = state::MeshState::create(
        "fuzz",
        state::Member {
            spki: vec![1],
            name: "a".into(),
            addr: String::new(),
        },
        crate::secret::MeshKey::from_bytes(ANNOUNCE_FUZZ_KEY),
    );
    let mut node = Node::new(crate::server_id::ServerId::from_bytes([0; 32]), 60_000);
    let from = std::net::SocketAddr::from(([10, 0, 0, 9], 4434));
    let sealed = announce::seal_raw(
        &announce_key(&mesh.key, mesh.epoch),
        mesh.epoch,
        [9; 24],
        data,
    );
    for d in [data, &sealed] {
        match node.handle(1_700_000_000_000, from, d, &mesh) {
            Action::Change { entry, .. } => assert!(entry.check().is_ok(), "{entry:?}"),
            Action::CatchUp { .. } => {
                assert_eq!(announce::peek_epoch(d), Ok(mesh.epoch + 1));
            }
            _ => {}
        }
    }
}

/// Seeds for the announcement target: sealed datagrams, their bodies, and a mesh state file.
pub fn announcement_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::mesh::announce::{self, Body, Event};
    use crate::mesh::state::{Member, MeshState};
    let body = |event| Body {
        sender: [3; 32],
        counter: 1_700_000_000_000_000,
        time: 1_700_000_000_000,
        addr: vec![10, 0, 0, 2],
        port: 4433,
        manual: true,
        event,
    };
    let change = body(Event::Change {
        source: "docs/a.txt".into(),
        version: 3,
        hash: [5; 32],
        deleted: false,
    });
    let digest = body(Event::Digest {
        sources: [1; 32],
        members: [2; 32],
    });
    let mut seeds = vec![(
        "beacon",
        crate::mesh::beacon::encode(&crate::mesh::beacon::Beacon {
            device: [3; 32],
            addr: vec![0; 4],
            port: 7443,
            mesh: "home".into(),
            name: "alpha".into(),
        }),
    )];
    for (name, b) in [("change", &change), ("digest", &digest)] {
        if let Ok(d) = announce::seal(&ANNOUNCE_FUZZ_KEY, 1, [4; 24], b) {
            seeds.push((name, d));
        }
        let mut plain = Vec::new();
        let _ = ciborium::into_writer(b, &mut plain);
        seeds.push((
            if name == "change" {
                "change-body"
            } else {
                "digest-body"
            },
            plain,
        ));
    }
    let mut state = MeshState::create(
        "home",
        Member {
            spki: vec![1, 2, 3],
            name: "a".into(),
            addr: "10.0.0.1:4433".into(),
        },
        crate::secret::MeshKey::from_bytes([6; 32]),
    );
    state.add_member(Member {
        spki: vec![4, 5],
        name: "b".into(),
        addr: String::new(),
    });
    if let Ok(text) = state.to_toml() {
        seeds.push(("mesh-toml", text.as_bytes().to_vec()));
    }
    seeds
}

/// Parses the input (UTF-8) as a source name and as a listing prefix. A name that parses is
/// canonical (NFC: it parses to itself, also with `parse_canonical`), keeps every limit, holds
/// no refused character, and each of its prefixes (cut at a character) is a valid prefix, so a
/// listing can always be narrowed to it. A prefix that normalises is valid as sent.
pub fn source_name(data: &[u8]) {
    use crate::names::{self, SourceName};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(name) = SourceName::parse(text) {
        let s = name.as_str();
        assert_eq!(
            SourceName::parse_canonical(s).as_ref(),
            Ok(&name),
            "names: not canonical"
        );
        assert!(s.len() <= names::MAX_SOURCE_LEN, "names: too long");
        let segments: Vec<&str> = s.split('/').collect();
        assert!(
            segments.len() <= names::MAX_SEGMENTS,
            "names: too many segments"
        );
        for seg in segments {
            assert!(
                !seg.is_empty() && seg != "." && seg != ".." && seg.len() <= names::MAX_SEGMENT_LEN,
                "names: bad segment {seg:?}"
            );
        }
        assert!(
            s.chars().all(|c| names::refused_char(c).is_none()),
            "names: refused character kept"
        );
        for (i, _) in s.char_indices().chain([(s.len(), ' ')]) {
            assert_eq!(
                names::validate_prefix(&s[..i]),
                Ok(()),
                "names: prefix {:?} of a name refused",
                &s[..i]
            );
        }
    }
    if let Ok(p) = names::normalize_prefix(text) {
        assert_eq!(
            names::validate_prefix(&p),
            Ok(()),
            "names: normalised prefix refused"
        );
    }
}

/// The HTTP front's request target and `Range` decoders ([`crate::http::target`]).
///
/// Checks that a decoded path re-encodes to a target that decodes to the same path, that
/// decoded query parameters re-encode to a query that parses to the same parameters, and
/// that a parsed range re-spells to a header that parses to the same range and resolves
/// inside the body it is resolved against.
pub fn http_target(data: &[u8]) {
    use crate::http::target::{ByteRange, decode_path, encode, parse_query};
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Some(path) = decode_path(text) {
        let again = encode(&path, true);
        if again.len() <= crate::http::canonical::MAX_PATH_LEN {
            assert_eq!(
                decode_path(&again).as_ref(),
                Some(&path),
                "http_target: path does not round-trip"
            );
        }
    }
    if let Some(params) = parse_query(text) {
        let again: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k, false), encode(v, false)))
            .collect();
        let again = again.join("&");
        if again.len() <= crate::http::canonical::MAX_QUERY_LEN {
            assert_eq!(
                parse_query(&again).as_ref(),
                Some(&params),
                "http_target: query does not round-trip"
            );
        }
    }
    if let Some(range) = ByteRange::parse(text) {
        assert_eq!(
            ByteRange::parse(&range.to_header()),
            Some(range),
            "http_target: range spelt two ways"
        );
        for size in [0, 1, range.first, range.first.saturating_add(1), u64::MAX] {
            if let Some((first, len)) = range.resolve(size) {
                assert!(
                    first.checked_add(len).is_some_and(|end| end <= size),
                    "http_target: resolved range past the body"
                );
            }
        }
    }
}

/// Seeds for [`hash_cache`]: a good file (names with spaces and CJK, negative times) and
/// malformed ones.
pub fn hash_cache_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::hash_cache::{Cached, Stamp, encode};
    let stamp = Stamp {
        size: 4096,
        mtime_ns: 1_700_000_000_123_456_789,
        ctime_ns: -1,
        ino: 42,
        dev: 2049,
    };
    let cached = Cached {
        stamp,
        hashed_at_ns: 1_700_000_100_000_000_000,
        hash: [0xab; 32],
    };
    let good = encode(&std::collections::BTreeMap::from([
        ("Q3 report.pdf".to_owned(), cached),
        ("日本/ファイル".to_owned(), cached),
    ]));
    let line = good.lines().nth(1).unwrap_or_default().to_owned();
    vec![
        ("good", good.clone().into_bytes()),
        ("empty", Vec::new()),
        ("header-only", b"ferry-hash-cache 1\n".to_vec()),
        (
            "short-hash",
            format!("ferry-hash-cache 1\n{}", &line[1..]).into_bytes(),
        ),
        (
            "no-path",
            format!(
                "ferry-hash-cache 1\n{}",
                &line[..line.len().saturating_sub(14)]
            )
            .into_bytes(),
        ),
        ("bad-number", good.replacen(" 4096 ", " x ", 1).into_bytes()),
    ]
}

/// The client's hash cache ([`crate::hash_cache`]): never panics; what parses survives its
/// own encoding; an error quotes nothing from the file.
pub fn hash_cache(data: &[u8]) {
    use crate::hash_cache::{decode, encode};
    match decode(data) {
        Ok(entries) => {
            let again = decode(encode(&entries).as_bytes());
            assert_eq!(
                again.as_ref(),
                Ok(&entries),
                "hash_cache: does not survive its own encoding"
            );
        }
        Err(e) => assert!(
            !has_hex_run(&e.to_string(), 16),
            "hash_cache: error quotes the file"
        ),
    }
}

/// Seeds for [`chunk_list`]: a whole list, and ones with a bad length, a zero-length chunk
/// and a truncated entry.
pub fn chunk_list_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::chunking::{ChunkRef, encode_list};
    let list = encode_list(&[
        ChunkRef {
            hash: [1; 32],
            len: 70_000,
        },
        ChunkRef {
            hash: [2; 32],
            len: 5,
        },
    ]);
    let mut zero = list.clone();
    zero[32..36].copy_from_slice(&[0; 4]);
    vec![
        ("good", list.clone()),
        ("empty", Vec::new()),
        ("zero-length", zero),
        ("truncated", list[..40].to_vec()),
    ]
}

/// A chunk list ([`crate::chunking::decode_list`]), decoded against the size its lengths
/// add up to and against one byte more: never panics; what decodes re-encodes to the same
/// bytes, and its lengths add up to the size.
pub fn chunk_list(data: &[u8]) {
    use crate::chunking::{decode_list, encode_list};
    let sum: u64 = data
        .chunks_exact(crate::chunking::CHUNK_REF_LEN)
        .map(|e| u64::from(u32::from_be_bytes([e[32], e[33], e[34], e[35]])))
        .sum();
    if let Ok(list) = decode_list(data, sum) {
        assert_eq!(encode_list(&list), data, "chunk_list: re-encoding differs");
        let total: u64 = list.iter().map(|c| u64::from(c.len)).sum();
        assert_eq!(total, sum, "chunk_list: lengths do not add up");
    }
    assert!(
        decode_list(data, sum.wrapping_add(1)).is_err(),
        "chunk_list: accepted a list for the wrong size"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_run() {
        assert!(has_hex_run(&"aB3".repeat(22), 64));
        assert!(!has_hex_run(
            &format!("{}-{}", "a".repeat(63), "a".repeat(63)),
            64
        ));
        assert!(!has_hex_run("", 64));
    }
}
