//! Real file names end to end (PROTOCOL.md §5.1): UTF-8 source names with spaces, accents and
//! CJK go up and come back byte-identical through a real server on loopback; a name typed in
//! decomposed form is the same source as its composed form (put, get, stat, ls, and the roles
//! of ferry.toml); a refused name says which character and why.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;

use common::{Env, Served};

/// Random-looking bytes.
fn data(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

const COMPOSED: &str = "Caf\u{e9}/r\u{e9}sum\u{e9}.txt";
const DECOMPOSED: &str = "Cafe\u{301}/re\u{301}sume\u{301}.txt";

#[test]
fn utf8_names_round_trip_and_normalise() {
    let env = Env::new();
    env.init();
    // A role whose pattern is written in decomposed form: it must match the NFC names.
    let conf = env.server_dir().join("ferry.toml");
    let text = fs::read_to_string(&conf).unwrap();
    let text = text.replacen(
        "[roles]\n",
        "[roles]\ncafe = [{ ops = [\"get\", \"stat\"], sources = [\"Cafe\\u0301/*\"] }]\n",
        1,
    );
    fs::write(&conf, text).unwrap();
    let server = Served::start(&env);
    let writer = env.issue("alice", "writer", &server.addr);
    let cafe = env.issue("carol", "cafe", &server.addr);
    let with = |cred: &std::path::Path, args: &[&str]| {
        let mut v = args.to_vec();
        v.extend(["--cred", cred.to_str().unwrap()]);
        env.run(&v)
    };

    for (i, name) in ["Q3 report.pdf", "\u{e9}t\u{e9}.txt", "日本/ファイル"]
        .into_iter()
        .enumerate()
    {
        let content = data(name, 1000 + i * 4096);
        let file = env.join(&format!("up{i}"));
        fs::write(&file, &content).unwrap();
        let out = with(&writer, &["put", name, file.to_str().unwrap()]).ok();
        assert!(
            out.text().starts_with(&format!("stored {name} v1 (")),
            "{}",
            out.text()
        );
        let back = env.join(&format!("down{i}"));
        with(&writer, &["get", name, "-o", back.to_str().unwrap()]).ok();
        assert!(fs::read(&back).unwrap() == content, "{name} differs");
        let out = with(&writer, &["stat", name, "--json"]).ok();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["source"], name);
    }

    // Put under the decomposed form: stored (and reported) under the composed one.
    let content = data("cafe", 5000);
    let file = env.join("cafe");
    fs::write(&file, &content).unwrap();
    let out = with(&writer, &["put", DECOMPOSED, file.to_str().unwrap()]).ok();
    assert!(
        out.text().starts_with(&format!("stored {COMPOSED} v1 (")),
        "{}",
        out.text()
    );
    // Fetched by its composed form, and by the decomposed one; one source, one version.
    let out = with(&writer, &["get", COMPOSED]).ok();
    assert!(out.stdout == content, "composed get differs");
    let out = with(&writer, &["get", DECOMPOSED]).ok();
    assert!(out.stdout == content, "decomposed get differs");
    let out = with(&writer, &["put", COMPOSED, file.to_str().unwrap()]).ok();
    assert!(out.text().starts_with(&format!("stored {COMPOSED} v2 (")));

    // A listing in either form finds it; JSON carries the name as UTF-8 text.
    for prefix in ["Caf\u{e9}/", "Cafe\u{301}/"] {
        let out = with(&writer, &["ls", prefix, "--json"]).ok();
        let v = common::json_lines(&out.stdout);
        let names: Vec<&str> = v.iter().map(|e| e["source"].as_str().unwrap()).collect();
        assert_eq!(names, [COMPOSED], "ls {prefix:?}");
    }
    // Every name, in byte (code point) order.
    let out = with(&writer, &["ls", "--json"]).ok();
    let v = common::json_lines(&out.stdout);
    let names: Vec<&str> = v.iter().map(|e| e["source"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            COMPOSED,
            "Q3 report.pdf",
            "\u{e9}t\u{e9}.txt",
            "日本/ファイル"
        ]
    );

    // The server's role pattern, written decomposed, matches the composed name only.
    let out = with(&cafe, &["get", COMPOSED]).ok();
    assert!(out.stdout == content);
    let out = with(&cafe, &["get", "日本/ファイル"]);
    assert_eq!(out.code, 4, "{}", out.stderr);

    // A refused name: which character, which rule; nothing is sent.
    let out = with(
        &writer,
        &["put", "bad\u{1b}[2Jname", file.to_str().unwrap()],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("invalid source name: character 4 is U+001B, a control character"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
}
