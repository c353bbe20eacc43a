//! The server's side of PROTOCOL.md §5.1, observed with raw requests (the reference client
//! normalises before it sends, so only raw requests show what the server itself does): a name
//! in another normalisation form reaches the same source, a refused name is answered
//! `bad_request` saying which character and why, and a prefix not in NFC is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::TestServer;
use ferry::Client;
use ferry::proto::message::{ErrorCode, List, Message, SourceRef};

const COMPOSED: &str = "\u{65e5}\u{672c}/\u{e9}t\u{e9}.txt";
const DECOMPOSED: &str = "\u{65e5}\u{672c}/e\u{301}te\u{301}.txt";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_normalises_names_and_refuses_bad_ones() {
    let srv = TestServer::start().await;
    let alice = srv.issue("alice", "writer");
    let mut c = Client::connect_to(&srv.addr.to_string(), alice.server_id, &alice)
        .await
        .unwrap();
    c.put_bytes(COMPOSED, b"bonjour".to_vec()).await.unwrap();

    // A stat by the decomposed form finds the composed source.
    let reply = c
        .raw_request(&Message::Stat(SourceRef {
            source: DECOMPOSED.into(),
        }))
        .await
        .unwrap();
    match &reply {
        Message::StatOk(e) => assert_eq!(e.source, COMPOSED),
        m => panic!("{m:?}"),
    }

    // A refused character: the position (of the name as sent) and the code point.
    let reply = c
        .raw_request(&Message::Stat(SourceRef {
            source: "e\u{301}\u{1b}[2J".into(),
        }))
        .await
        .unwrap();
    assert!(
        matches!(&reply, Message::Error(e) if e.code == ErrorCode::BadRequest
            && e.message.contains("character 3 is U+001B, a control character")),
        "{reply:?}"
    );

    // A listing prefix must be in NFC; the NFC one finds the name.
    let reply = c
        .raw_request(&Message::List(List {
            prefix: "\u{65e5}\u{672c}/e\u{301}".into(),
            after: None,
        }))
        .await
        .unwrap();
    assert!(
        matches!(&reply, Message::Error(e) if e.code == ErrorCode::BadRequest && e.message.contains("NFC")),
        "{reply:?}"
    );
    let reply = c
        .raw_request(&Message::List(List {
            prefix: "\u{65e5}\u{672c}/\u{e9}".into(),
            after: None,
        }))
        .await
        .unwrap();
    match &reply {
        Message::ListOk(page) => {
            let names: Vec<&str> = page.entries.iter().map(|e| e.source.as_str()).collect();
            assert_eq!(names, [COMPOSED]);
        }
        m => panic!("{m:?}"),
    }

    // A delete by the decomposed form deletes the one source.
    let reply = c
        .raw_request(&Message::Delete(SourceRef {
            source: DECOMPOSED.into(),
        }))
        .await
        .unwrap();
    assert!(matches!(&reply, Message::DeleteOk(_)), "{reply:?}");
    assert!(c.stat(COMPOSED).await.is_err());
    c.close().await.unwrap();
    srv.stop().await;
}
