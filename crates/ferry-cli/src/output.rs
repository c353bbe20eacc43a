//! Formatting for people and for scripts: times, sizes, entries, tables, JSON.

use std::borrow::Cow;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ferry::client::hex;
use ferry::proto::message::Entry;
use serde_json::{Value, json};

/// How much a command prints, from the global flags `--quiet`, `--verbose` and `--json`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    /// `--quiet`: no progress bars, no notes; only errors on stderr.
    pub quiet: bool,
    /// `--verbose`: more detail on stderr (connection, server ID, timing).
    pub verbose: bool,
    /// `--json`: results on stdout as JSON (JSON Lines for listings and streams).
    pub json: bool,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Sets the mode once, at start (later calls are ignored).
pub fn set_mode(mode: Mode) {
    let _ = MODE.set(mode);
}

fn mode() -> Mode {
    MODE.get().copied().unwrap_or_default()
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    mode().quiet
}

/// Whether `--verbose` was given.
pub fn verbose() -> bool {
    mode().verbose
}

/// Whether `--json` was given.
pub fn json() -> bool {
    mode().json
}

/// A note on stderr (what happened besides the result: skipped files, resumptions, hints),
/// unless `--quiet`.
macro_rules! note {
    ($($arg:tt)*) => {
        if !$crate::output::quiet() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use note;

/// A detail on stderr, only with `--verbose`.
macro_rules! detail {
    ($($arg:tt)*) => {
        if $crate::output::verbose() {
            eprintln!("ferry: {}", format_args!($($arg)*));
        }
    };
}
pub(crate) use detail;

/// Prints one JSON value on one line of stdout (a JSON Lines record) and flushes.
pub fn json_line(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(value)?)?;
    out.flush()?;
    Ok(())
}

/// Prints a command's one-line confirmation (`stored ...`, `deleted ...`) unless `--quiet`,
/// or `value` as one JSON line with `--json` (even with `--quiet`: it was asked for).
pub fn result(text: impl FnOnce() -> String, value: impl FnOnce() -> Value) -> anyhow::Result<()> {
    if json() {
        json_line(&value())
    } else {
        if !quiet() {
            println!("{}", text());
        }
        Ok(())
    }
}

/// Text that came from elsewhere (a source name, a principal's name, a server's message), made
/// safe to print to a terminal: control characters (C0, DEL, C1, which include the escape
/// that starts terminal sequences, carriage return and newline) and the Unicode
/// bidirectional controls (which can make text display in another order than it is) are
/// shown as Rust escapes (`\n`, `\u{1b}`). Everything else is left as it is. JSON output needs none of
/// this: serde_json escapes control characters itself.
pub fn printable(text: &str) -> Cow<'_, str> {
    fn hidden(c: char) -> bool {
        c.is_control()
            || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !text.chars().any(hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            // `\n`, `\r`, `\t`, else `\u{1b}`: Rust's escapes, readable and unambiguous.
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC).
pub fn time(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A byte count for people: `512 B`, `1.5 MiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The start of a hash, for one-line summaries.
pub fn short_hash(hash: &[u8; 32]) -> String {
    let mut h = hex(hash);
    h.truncate(16);
    h.push('…');
    h
}

/// An entry as a JSON object; `mtime` (nanoseconds since the Unix epoch) and `executable`
/// only where the version has them.
pub fn entry_json(e: &Entry) -> Value {
    let mut v = json!({
        "source": e.source,
        "version": e.version,
        "size": e.size,
        "hash": hex(&e.hash),
        "modified": e.modified,
        "by": e.by,
    });
    if let Some(mtime) = e.mtime {
        v["mtime"] = json!(mtime);
    }
    if e.executable {
        v["executable"] = json!(true);
    }
    v
}

/// Prints what `ferry stat` shows of `e`: one JSON object with `--json`, else its lines.
pub fn print_entry(e: &Entry) -> anyhow::Result<()> {
    if json() {
        json_line(&entry_json(e))?;
    } else {
        println!("{}", entry_lines(e));
    }
    Ok(())
}

/// `stat`'s human form: one `label value` line per field.
pub fn entry_lines(e: &Entry) -> String {
    let mut lines = entry_fields(e);
    if let Some(mtime) = e.mtime {
        let secs = mtime / 1_000_000_000;
        lines.push_str(&format!("\nfile time {} ({secs})", time(secs)));
    }
    if e.executable {
        lines.push_str("\nexecutable yes");
    }
    lines
}

fn entry_fields(e: &Entry) -> String {
    format!(
        "source    {}\nversion   {}\nsize      {} bytes ({})\nblake3    {}\nmodified  {} ({})\nby        {}",
        printable(&e.source),
        e.version,
        e.size,
        size(e.size),
        hex(&e.hash),
        time(e.modified),
        e.modified,
        printable(&e.by)
    )
}

/// Rows of cells as aligned columns (two spaces apart, last column not padded). Columns
/// listed in `right` are right-aligned.
pub fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = widths[c].saturating_sub(cell.chars().count());
            if right.contains(&c) {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c + 1 < row.len() {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Prints `ls`'s result: a table, or with `--json` one JSON object per entry (JSON Lines).
pub fn print_entries(entries: &[Entry]) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if json() {
        for e in entries {
            writeln!(stdout, "{}", serde_json::to_string(&entry_json(e))?)?;
        }
    } else {
        write!(stdout, "{}", entries_table(entries))?;
    }
    stdout.flush()?;
    Ok(())
}

/// `ls`'s lines: name, size, version, modified, by.
pub fn entries_table(entries: &[Entry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                printable(&e.source).into_owned(),
                e.size.to_string(),
                format!("v{}", e.version),
                time(e.modified),
                printable(&e.by).into_owned(),
            ]
        })
        .collect();
    table(&rows, &[1, 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_elsewhere_print_without_control_characters() {
        assert!(matches!(
            printable("docs/a.txt"),
            Cow::Borrowed("docs/a.txt")
        ));
        assert_eq!(printable("été/ü"), "été/ü");
        assert_eq!(
            printable("a\u{1b}[2J\rb\nc\u{7f}\u{9b}d\te\0"),
            "a\\u{1b}[2J\\rb\\nc\\u{7f}\\u{9b}d\\te\\u{0}"
        );
        // Bidirectional overrides cannot reorder what the user reads.
        assert_eq!(
            printable("invoice\u{202e}fdp.exe"),
            "invoice\\u{202e}fdp.exe"
        );
        assert_eq!(printable("x\u{2066}y\u{200f}"), "x\\u{2066}y\\u{200f}");
        let e = Entry {
            source: "evil\u{1b}]0;pwned\u{7}".into(),
            version: 1,
            size: 0,
            hash: [0; 32],
            modified: 0,
            by: "m\u{1b}[31m".into(),
            mtime: None,
            executable: false,
        };
        for text in [entry_lines(&e), entries_table(std::slice::from_ref(&e))] {
            assert!(
                !text.contains('\u{1b}') && !text.contains('\u{7}'),
                "{text:?}"
            );
            assert!(text.contains("evil\\u{1b}]0;pwned\\u{7}"), "{text:?}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(time(0), "1970-01-01 00:00:00Z");
        assert_eq!(time(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(time(1_735_689_599), "2024-12-31 23:59:59Z");
        assert_eq!(time(4_102_444_800), "2100-01-01 00:00:00Z");
    }

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(256 << 20), "256.0 MiB");
    }

    #[test]
    fn tables_align() {
        let rows = vec![
            vec!["a".to_owned(), "1".to_owned(), "x".to_owned()],
            vec!["long".to_owned(), "100".to_owned(), "y".to_owned()],
        ];
        assert_eq!(table(&rows, &[1]), "a       1  x\nlong  100  y\n");
    }
}
