#![allow(clippy::expect_used, clippy::unwrap_used)]
//! The source-name vectors of docs/PROTOCOL.md §5.1, read from the document itself, so the
//! specification and the implementation cannot drift apart.

use ferry_proto::names::SourceName;

/// The table between the markers, one `(input, expected)` pair per row.
fn vectors() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("read PROTOCOL.md");
    let start = doc
        .find("<!-- source-name-vectors:start -->")
        .expect("start marker");
    let end = doc
        .find("<!-- source-name-vectors:end -->")
        .expect("end marker");
    let mut rows = Vec::new();
    for line in doc[start..end].lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 4, "row {line:?} has not two cells");
        if cells[1] == "input" || cells[1].starts_with("---") {
            continue;
        }
        rows.push((cells[1].to_owned(), cells[2].to_owned()));
    }
    rows
}

/// A cell's text: `(empty)`, or a code span in which `\u{X}` is U+X and `[s]*n` is `s`
/// repeated `n` times.
fn text(cell: &str) -> String {
    if cell == "(empty)" {
        return String::new();
    }
    let inner = cell
        .strip_prefix('`')
        .and_then(|c| c.strip_suffix('`'))
        .unwrap_or_else(|| panic!("cell {cell:?} is not a code span"));
    let mut out = String::new();
    let mut rest = inner;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("\\u{") {
            let close = after.find('}').expect("closing brace");
            let n = u32::from_str_radix(&after[..close], 16).expect("hex");
            out.push(char::from_u32(n).expect("a scalar value"));
            rest = &after[close + 1..];
        } else if let Some((body, times, after)) = repetition(rest) {
            out.push_str(&text(&format!("`{body}`")).repeat(times));
            rest = after;
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// `[s]*n...` at the start of `rest`: `(s, n, what follows)`.
fn repetition(rest: &str) -> Option<(&str, usize, &str)> {
    let after_open = rest.strip_prefix('[')?;
    let close = after_open.find("]*")?;
    let digits = after_open[close + 2..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(after_open.len(), |i| close + 2 + i);
    let times = after_open[close + 2..digits].parse().ok()?;
    Some((&after_open[..close], times, &after_open[digits..]))
}

#[test]
fn protocol_vectors() {
    let rows = vectors();
    assert!(rows.len() >= 40, "only {} vectors", rows.len());
    let (mut valid, mut refused) = (0, 0);
    for (input, expected) in rows {
        let name = text(&input);
        let got = SourceName::parse(&name);
        match expected.strip_prefix("refused: ") {
            Some(why) => {
                let e = got.expect_err(&format!("{input} was accepted"));
                assert_eq!(e.problem().to_string(), why, "{input}");
                assert_eq!(e.to_string(), format!("invalid source name: {why}"));
                refused += 1;
            }
            None => {
                let want = text(&expected);
                let got = got.unwrap_or_else(|e| panic!("{input} refused: {e}"));
                assert_eq!(got.as_str(), want, "{input}");
                // The result is canonical: parsing it again changes nothing.
                assert_eq!(SourceName::parse_canonical(&want).as_ref(), Ok(&got));
                valid += 1;
            }
        }
    }
    println!("{valid} valid and {refused} refused source-name vectors");
}
