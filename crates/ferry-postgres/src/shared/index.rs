//! The [`Index`] reads: single statements (each sees one committed state), and the change
//! log page in one REPEATABLE READ transaction.

use deadpool_postgres::Object;
use ferry_backend::{Change, Changes, Entry, Head, Index, Meta, Result, Usage};
use tokio_postgres::Row;

use super::{SharedBackend, col_hash, col_u64};
use crate::rows::{big, get};
use crate::sql::{c_all, c_opt, t_all, t_opt};

/// The columns an [`Entry`] is read from, in `ferry_heads` and `ferry_versions`.
pub(crate) const ENTRY: &str = "source, version, size, hash, modified, by_name, mtime, executable";

pub(crate) fn entry(row: &Row) -> Result<Entry> {
    let mtime: Option<i64> = get(row, "mtime")?;
    Ok(Entry {
        source: get(row, "source")?,
        version: col_u64(row, "version")?,
        size: col_u64(row, "size")?,
        hash: col_hash(row, "hash")?,
        modified: col_u64(row, "modified")?,
        by: get(row, "by_name")?,
        meta: Meta {
            mtime: mtime.and_then(|m| u64::try_from(m).ok()),
            executable: get(row, "executable")?,
        },
    })
}

fn head(row: &Row) -> Result<Head> {
    Ok(Head {
        version: col_u64(row, "version")?,
        hash: col_hash(row, "hash")?,
        deleted: get(row, "deleted")?,
    })
}

fn change(row: &Row) -> Result<Change> {
    Ok(Change {
        seq: col_u64(row, "seq")?,
        source: get(row, "source")?,
        version: col_u64(row, "version")?,
        deleted: get(row, "deleted")?,
        size: col_u64(row, "size")?,
        hash: col_hash(row, "hash")?,
        modified: col_u64(row, "modified")?,
        by: get(row, "by_name")?,
    })
}

/// The log's last sequence number.
pub(crate) async fn last_seq(c: &Object) -> Result<u64> {
    let row = c_opt(c, "SELECT last_seq FROM ferry_log", &[]).await?;
    row.map_or(Ok(0), |r| col_u64(&r, "last_seq"))
}

/// A limit as a BIGINT (a `usize` above `i64::MAX` means "all").
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Index for SharedBackend {
    async fn stat(&self, source: &str) -> Result<Option<Entry>> {
        let c = self.conn().await?;
        let sql = format!("SELECT {ENTRY} FROM ferry_heads WHERE source = $1 AND NOT deleted");
        c_opt(&c, &sql, &[&source])
            .await?
            .as_ref()
            .map(entry)
            .transpose()
    }

    async fn stat_version(&self, source: &str, version: u64) -> Result<Option<Entry>> {
        let Ok(version) = i64::try_from(version) else {
            return Ok(None);
        };
        let c = self.conn().await?;
        let sql = format!("SELECT {ENTRY} FROM ferry_versions WHERE source = $1 AND version = $2");
        c_opt(&c, &sql, &[&source, &version])
            .await?
            .as_ref()
            .map(entry)
            .transpose()
    }

    async fn versions(&self, source: &str) -> Result<Vec<Entry>> {
        let c = self.conn().await?;
        let sql = format!("SELECT {ENTRY} FROM ferry_versions WHERE source = $1 ORDER BY version");
        c_all(&c, &sql, &[&source])
            .await?
            .iter()
            .map(entry)
            .collect()
    }

    async fn head(&self, source: &str) -> Result<Option<Head>> {
        let c = self.conn().await?;
        c_opt(
            &c,
            "SELECT version, hash, deleted FROM ferry_heads WHERE source = $1",
            &[&source],
        )
        .await?
        .as_ref()
        .map(head)
        .transpose()
    }

    async fn heads(&self, after: Option<&str>, limit_n: usize) -> Result<Vec<(String, Head)>> {
        let c = self.conn().await?;
        let rows = c_all(
            &c,
            "SELECT source, version, hash, deleted FROM ferry_heads \
             WHERE $1::text IS NULL OR source > $1 ORDER BY source LIMIT $2",
            &[&after, &limit(limit_n)],
        )
        .await?;
        rows.iter()
            .map(|r| Ok((get(r, "source")?, head(r)?)))
            .collect()
    }

    async fn list(&self, prefix: &str, after: Option<&str>, limit_n: usize) -> Result<Vec<Entry>> {
        let c = self.conn().await?;
        // `starts_with` compares bytes under the "C" collation; `>= prefix` lets the
        // primary key's order serve the scan.
        let sql = format!(
            "SELECT {ENTRY} FROM ferry_heads WHERE source >= $1 AND starts_with(source, $1) \
             AND NOT deleted AND ($2::text IS NULL OR source > $2) ORDER BY source LIMIT $3"
        );
        c_all(&c, &sql, &[&prefix, &after, &limit(limit_n)])
            .await?
            .iter()
            .map(entry)
            .collect()
    }

    async fn changes_since(&self, after: u64, limit_n: usize) -> Result<Changes> {
        let mut c = self.conn().await?;
        let t = c
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(crate::db)?;
        let last = match t_opt(&t, "SELECT last_seq FROM ferry_log", &[]).await? {
            Some(r) => col_u64(&r, "last_seq")?,
            None => 0,
        };
        let oldest = match t_opt(&t, "SELECT min(seq) AS seq FROM ferry_changes", &[]).await? {
            Some(r) => get::<Option<i64>>(&r, "seq")?
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(last.saturating_add(1)),
            None => last.saturating_add(1),
        };
        let gap = after > last || after.saturating_add(1) < oldest;
        let from = if gap { oldest } else { after.saturating_add(1) };
        let rows = t_all(
            &t,
            "SELECT seq, source, version, deleted, size, hash, modified, by_name \
             FROM ferry_changes WHERE seq >= $1 ORDER BY seq LIMIT $2",
            &[&big(from, "sequence number")?, &limit(limit_n)],
        )
        .await?;
        let changes = rows.iter().map(change).collect::<Result<Vec<_>>>()?;
        t.commit().await.map_err(crate::db)?;
        Ok(Changes {
            changes,
            gap,
            oldest,
            last,
        })
    }

    async fn last_seq(&self) -> Result<u64> {
        last_seq(&self.conn().await?).await
    }

    async fn usage(&self, by: Option<&str>) -> Result<Usage> {
        let c = self.conn().await?;
        let row = c_opt(
            &c,
            "SELECT count(*) AS versions, coalesce(sum(size), 0)::bigint AS bytes \
             FROM ferry_versions WHERE $1::text IS NULL OR by_name = $1",
            &[&by],
        )
        .await?;
        match row {
            Some(r) => Ok(Usage {
                bytes: col_u64(&r, "bytes")?,
                versions: col_u64(&r, "versions")?,
            }),
            None => Ok(Usage::default()),
        }
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.signal.subscribe()
    }
}
