//! Writes seed inputs into `fuzz/corpus/<target>/seed-*`: real encodings made by ferry-proto
//! itself, plus malformed variants of them.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed`, then run and minimise the
//! targets (see README.md).

use std::fs;
use std::path::{Path, PathBuf};

use ferry_proto::claims::Claims;
use ferry_proto::credential::Credential;
use ferry_proto::frame::{self, Kind};
use ferry_proto::message::*;
use ferry_proto::secret::Psk;
use ferry_proto::server_id::ServerId;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn entry() -> Entry {
    Entry {
        source: "reports/2026/q3.csv".into(),
        version: 2,
        size: 10,
        hash: [7; 32],
        modified: 1_700_000_000,
        by: "alice".into(),
        mtime: None,
        executable: false,
    }
}

fn messages() -> Vec<Message> {
    let claims = Claims::new("alice", 1, [("role", "writer")]).unwrap();
    vec![
        Message::PskAuth(PskAuth {
            claims: claims.encode(),
            mac: [3; 32],
            session: true,
        }),
        Message::AuthOk(AuthOk {
            method: "psk".into(),
            proof: vec![9; 32],
            principal: PrincipalInfo {
                name: "alice".into(),
                attributes: [("role".to_owned(), "writer".to_owned())].into(),
            },
            session: None,
        }),
        Message::AuthFailed(Empty {}),
        Message::Put(Put {
            source: "a/b".into(),
            size: Some(5),
            offset: 0,
            hash: None,
            streamed: false,
            mtime: None,
            executable: false,
            chunks: None,
        }),
        Message::PutReady(PutReady { offset: 0, need: None }),
        Message::PutEnd(PutEnd {
            size: u64::MAX,
            hash: [1; 32],
        }),
        Message::PutOk(entry()),
        Message::Get(Get {
            source: "a".into(),
            version: Some(3),
            offset: 1 << 40,
            len: None,
        }),
        Message::GetOk(GetOk {
            entry: entry(),
            offset: 0,
        }),
        Message::Stat(SourceRef { source: "x".into() }),
        Message::StatOk(entry()),
        Message::List(List {
            prefix: "reports/".into(),
            after: Some("reports/a".into()),
        }),
        Message::ListOk(ListOk {
            entries: vec![entry(), entry()],
            next: None,
        }),
        Message::Delete(SourceRef { source: "x".into() }),
        Message::DeleteOk(DeleteOk { version: 4 }),
        Message::Error(ErrorMsg {
            code: ErrorCode::HashMismatch,
            message: "hash mismatch".into(),
        }),
        Message::Watch(Watch {
            prefix: "reports/".into(),
            after: Some(41),
        }),
        Message::WatchOk(WatchOk {
            seq: 57,
            ping_ms: 20_000,
        }),
        Message::Event(WatchEvent {
            seq: 42,
            source: "reports/2026/q3.csv".into(),
            version: 3,
            deleted: false,
            size: 10,
            hash: [7; 32],
            modified: 1_700_000_000,
            by: "alice".into(),
        }),
        Message::WatchGap(WatchGap {
            oldest: 17,
            seq: 57,
        }),
        Message::WatchPing(WatchPing { seq: 57 }),
    ]
}

fn main() {
    for (name, bytes) in ferry_proto::fuzzing::auth_server_seeds() {
        write("auth_server", name, &bytes);
    }
    for (name, bytes) in ferry_proto::fuzzing::announcement_seeds() {
        write("announcement", name, &bytes);
    }
    for (name, bytes) in ferry_proto::fuzzing::http_auth_seeds() {
        write("http_auth", name, &bytes);
    }
    for (name, bytes) in ferry_proto::fuzzing::http_seal_seeds() {
        write("http_seal", name, &bytes);
    }
    for (name, bytes) in ferry_proto::fuzzing::hash_cache_seeds() {
        write("hash_cache", name, &bytes);
    }
    for (name, bytes) in ferry_proto::fuzzing::chunk_list_seeds() {
        write("chunk_list", name, &bytes);
    }
    // message: every variant, then malformed ones.
    let msgs = messages();
    for m in &msgs {
        write("message", m.type_name(), &m.encode());
    }
    let get = msgs[7].encode();
    write("message", "truncated", &get[..get.len() - 1]);
    let mut trailing = get.clone();
    trailing.push(0);
    write("message", "trailing", &trailing);
    write(
        "message",
        "unknown-type",
        &[0xa1, 0x63, b'f', b'o', b'o', 0xa0],
    );
    write("message", "huge-bytes", &[0x5b, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    write("message", "huge-array", &[0x9b, 0, 0, 0, 1, 0, 0, 0, 0]);
    write("message", "nesting", &[0x81; 300]);
    // {"error": {"code": "later", "message": ""}} with an indefinite-length inner map.
    let mut e = vec![0xa1, 0x65];
    e.extend_from_slice(b"error");
    e.extend_from_slice(&[0xbf, 0x64]);
    e.extend_from_slice(b"code");
    e.push(0x65);
    e.extend_from_slice(b"later");
    e.push(0x67);
    e.extend_from_slice(b"message");
    e.extend_from_slice(&[0x60, 0xff]);
    write("message", "indefinite-unknown-code", &e);

    // claims: canonical encodings, then non-canonical ones.
    let alice = Claims::new("alice", 3, [("role", "writer"), ("team", "ops")]).unwrap();
    write("claims", "alice", &alice.encode());
    let many: Vec<(String, String)> = (0..16)
        .map(|i| {
            if i == 0 {
                ("role".into(), "r".into())
            } else {
                (format!("k{i:02}"), "Zürich, ops team".into())
            }
        })
        .collect();
    let big = Claims::new(&"n".repeat(64), u64::MAX, many).unwrap();
    write("claims", "sixteen-attributes", &big.encode());
    let mut long_int = alice.encode();
    let pos = long_int.iter().position(|&b| b == 0x03).unwrap();
    long_int.splice(pos..=pos, [0x18, 0x03]);
    write("claims", "long-form-epoch", &long_int);
    let mut indefinite = alice.encode();
    indefinite[0] = 0x9f;
    indefinite.push(0xff);
    write("claims", "indefinite-array", &indefinite);
    let mut wrong_tag = alice.encode();
    let pos = wrong_tag.windows(2).position(|w| w == b"v1").unwrap();
    wrong_tag[pos + 1] = b'2';
    write("claims", "wrong-tag", &wrong_tag);

    // credential: real files, then broken ones.
    let cred = Credential {
        server: "127.0.0.1:7443".into(),
        server_id: ServerId::from_spki(b"k"),
        claims: Claims::new("alice", 2, [("role", "writer"), ("team", "a \"b\"")]).unwrap(),
        key: Psk::from_bytes([0xab; 32]),
        http_url: None,
        http_seal: None,
    };
    let good = cred.to_toml().to_string();
    write("credential", "good", good.as_bytes());
    let cred2 = Credential {
        server: "[::1]:1".into(),
        server_id: ServerId::from_spki(b""),
        claims: Claims::new("b0", 1, [("role", "reader")]).unwrap(),
        key: Psk::from_bytes([0x5c; 32]),
        http_url: Some("https://files.example.com".into()),
        http_seal: Some(ferry_proto::http::seal::SealPublicKey::from_bytes(1, [9; 32])),
    };
    write("credential", "ipv6", cred2.to_toml().as_bytes());
    let broken = [
        ("epoch-string", good.replace("epoch = 2", "epoch = \"two\"")),
        ("key-unquoted", good.replace("key = \"", "key = ")),
        ("key-upper", good.replace("abab", "ABAB")),
        ("key-short", good.replace("key = \"abab", "key = \"ab")),
        (
            "extra-field",
            good.replace("[attributes]", "extra = 1\n[attributes]"),
        ),
        ("no-role", good.replace("role = \"writer\"\n", "")),
        (
            "server-id-bad",
            good.replace("server_id = \"", "server_id = \"X"),
        ),
    ];
    for (name, text) in broken {
        write("credential", name, text.as_bytes());
    }

    // server_id: readable forms, then broken ones.
    let id = ServerId::from_spki(b"key").to_string();
    write("server_id", "display", id.as_bytes());
    write(
        "server_id",
        "lower-spaced",
        id.to_lowercase().replace('-', " ").as_bytes(),
    );
    write("server_id", "all-a", "A".repeat(52).as_bytes());
    write(
        "server_id",
        "trailing-bits",
        format!("{}B", "A".repeat(51)).as_bytes(),
    );
    write("server_id", "short", b"ABCD-EFGH");

    // frame: a stream of frames, then broken headers.
    let mut stream = Vec::new();
    frame::encode(Kind::Message, &msgs[3].encode(), &mut stream).unwrap();
    frame::encode(Kind::Data, b"hello", &mut stream).unwrap();
    frame::encode(Kind::Data, b"", &mut stream).unwrap();
    frame::encode(Kind::Message, &msgs[5].encode(), &mut stream).unwrap();
    write("frame", "stream", &stream);
    write("frame", "cut", &stream[..stream.len() - 1]);
    write("frame", "empty", &[0, 0, 0, 0, 1]);
    write("frame", "too-large", &[0, 0x10, 0, 1, 2]);
    write("frame", "unknown-kind", &[0, 0, 0, 1, 7]);
    write(
        "frame",
        "max-header",
        &frame::encode_header(Kind::Data, frame::MAX_BODY_LEN).unwrap(),
    );
}
