//! `ferry watch`: print change events until Ctrl-C, reconnecting and resuming after a cut.

use std::io::Write;
use std::time::Duration;

use ferry::client::hex;
use ferry::proto::message::WatchEvent;
use ferry::proto::names::normalize_prefix;
use ferry::{Watch, WatchItem};
use serde_json::json;

use crate::cli::WatchArgs;
use crate::{output, transfer};

/// Wait before the first reconnection attempt; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `ferry watch`.
pub async fn watch(a: &WatchArgs) -> anyhow::Result<()> {
    normalize_prefix(&a.prefix)?;
    tokio::select! {
        r = follow(a) => r,
        // Ctrl-C is how a watch normally ends.
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Whether an error is a cut connection (worth reconnecting) rather than a refusal.
fn is_cut(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<ferry::Error>(),
            Some(
                ferry::Error::Closed
                    | ferry::Error::Connection(_)
                    | ferry::Error::Io(_)
                    | ferry::Error::Connect { .. }
                    | ferry::Error::Timeout(_)
                    | ferry::Error::Protocol(_)
            )
        )
    })
}

async fn start(a: &WatchArgs, after: Option<u64>) -> anyhow::Result<Watch> {
    let client = transfer::connect(&a.cred).await?;
    Ok(client.watch(&a.prefix, after).await?)
}

/// Watches until a refusal; reconnects after cuts, resuming at the last position seen.
async fn follow(a: &WatchArgs) -> anyhow::Result<()> {
    // A failed first connection is reported as it is, like any other command's.
    let mut w = start(a, a.since).await?;
    loop {
        let err = loop {
            match w.next().await {
                Ok(WatchItem::Event(e)) => print(&e)?,
                Ok(WatchItem::Gap { oldest, .. }) => eprintln!(
                    "ferry: warning: the server no longer keeps the changes before seq \
                     {oldest}; some were missed"
                ),
                Err(e) => break anyhow::Error::new(e),
            }
        };
        // Keep-alives move the position past changes we may not see: resume from there.
        let after = w.cursor();
        drop(w);
        if !is_cut(&err) {
            return Err(err);
        }
        crate::output::note!(
            "ferry: connection lost ({}); reconnecting to resume after seq {after}",
            crate::exit::message(&err)
        );
        w = reconnect(a, after).await?;
    }
}

/// Tries to watch again from `after` until it works, waiting longer after each cut attempt.
async fn reconnect(a: &WatchArgs, after: u64) -> anyhow::Result<Watch> {
    let mut wait = FIRST_BACKOFF;
    loop {
        tokio::time::sleep(wait).await;
        match start(a, Some(after)).await {
            Ok(w) => return Ok(w),
            Err(e) if is_cut(&e) => wait = (wait * 2).min(MAX_BACKOFF),
            Err(e) => return Err(e),
        }
    }
}

/// Prints one event as a line of text or JSON.
pub(crate) fn print(e: &WatchEvent) -> anyhow::Result<()> {
    let line = if output::json() {
        event_json(e).to_string()
    } else {
        event_line(e)
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

fn op(e: &WatchEvent) -> &'static str {
    if e.deleted { "rm" } else { "put" }
}

/// The human line: `seq 12  put  docs/a.txt  v3  1.2 KiB  blake3:5e1f…  by alice`.
fn event_line(e: &WatchEvent) -> String {
    if e.deleted {
        format!(
            "seq {}  rm   {}  v{}  by {}",
            e.seq,
            output::printable(&e.source),
            e.version,
            output::printable(&e.by)
        )
    } else {
        format!(
            "seq {}  put  {}  v{}  {}  blake3:{}  by {}",
            e.seq,
            output::printable(&e.source),
            e.version,
            output::size(e.size),
            output::short_hash(&e.hash),
            output::printable(&e.by)
        )
    }
}

/// The JSON object of `--json`.
fn event_json(e: &WatchEvent) -> serde_json::Value {
    json!({
        "seq": e.seq,
        "op": op(e),
        "source": e.source,
        "version": e.version,
        "deleted": e.deleted,
        "size": e.size,
        "hash": (!e.deleted).then(|| hex(&e.hash)),
        "modified": e.modified,
        "by": e.by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(deleted: bool) -> WatchEvent {
        WatchEvent {
            seq: 12,
            source: "docs/a.txt".into(),
            version: 3,
            deleted,
            size: if deleted { 0 } else { 1229 },
            hash: if deleted { [0; 32] } else { [0xab; 32] },
            modified: 1_700_000_000,
            by: "alice".into(),
        }
    }

    #[test]
    fn lines() {
        assert_eq!(
            event_line(&event(false)),
            "seq 12  put  docs/a.txt  v3  1.2 KiB  blake3:abababababababab…  by alice"
        );
        assert_eq!(
            event_line(&event(true)),
            "seq 12  rm   docs/a.txt  v3  by alice"
        );
        // Names from the server cannot drive the terminal.
        let mut evil = event(false);
        evil.source = "a\u{1b}[2Jb".into();
        evil.by = "x\ry".into();
        let line = event_line(&evil);
        assert!(!line.contains('\u{1b}') && !line.contains('\r'), "{line:?}");
        assert!(
            line.contains("a\\u{1b}[2Jb") && line.contains("by x\\ry"),
            "{line}"
        );
    }

    #[test]
    fn json_objects() {
        let put = event_json(&event(false));
        assert_eq!(put["op"], "put");
        assert_eq!(put["hash"], "ab".repeat(32));
        assert_eq!(put["size"], 1229);
        assert_eq!(put["seq"], 12);
        let rm = event_json(&event(true));
        assert_eq!(rm["op"], "rm");
        assert_eq!(rm["deleted"], true);
        assert!(rm["hash"].is_null());
    }

    #[test]
    fn cuts_and_refusals() {
        assert!(is_cut(&anyhow::Error::new(ferry::Error::Closed)));
        assert!(is_cut(
            &anyhow::Error::new(ferry::Error::Timeout("x")).context("watch")
        ));
        assert!(!is_cut(&anyhow::Error::new(ferry::Error::AuthFailed)));
        assert!(!is_cut(&anyhow::Error::new(
            ferry::Error::ServerIdMismatch("h:1".into())
        )));
        assert!(!is_cut(&anyhow::anyhow!("not logged in")));
    }
}
