//! Removing objects nothing references. An object is referenced while a row names it: a
//! visible blob (`ferry_blobs`), an upload in progress (`ferry_uploads`), staged content
//! (`ferry_staged`, written before the object is). Every change of reference is one
//! transaction (a commit swaps the staged row for the blob row), so an object is always
//! named by a row or by none. Objects named by none are removed once older than the grace:
//!
//! 1. `ferry_dead_objects` (pruned or deleted content, duplicates), recorded when the last
//!    reference went: the grace lets readers opened before that finish;
//! 2. staged rows older than the grace (a staged upload dropped, or an instance that died
//!    between staging and commit): their commit now fails instead of naming a removed object;
//! 3. objects in the bucket that no row names and that are older than the grace (an instance
//!    that died between writing an object and recording it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_backend::Result;
use futures_util::StreamExt;
use object_store::ObjectStore;

use super::SharedBackend;
use super::objects::s3;
use crate::rows::get;
use crate::sql::{c_all, c_exec};

/// Names checked against the index per statement.
const BATCH: usize = 1000;

impl SharedBackend {
    /// Removes the objects that no row has referenced for `grace` (or, for objects no row
    /// ever named, that are older than `grace`); returns how many. Run it now and then on
    /// one instance (any): with a grace longer than any read or upload-to-commit takes.
    pub async fn sweep_objects(&self, grace: Duration) -> Result<u64> {
        let objects = &self.inner.objects;
        let secs = grace.as_secs_f64();
        let c = self.conn().await?;
        let mut removed = 0u64;

        // 1 and 2: rows whose grace is over.
        let dead = c_all(
            &c,
            "SELECT object FROM ferry_dead_objects WHERE since <= now() - make_interval(secs => $1)",
            &[&secs],
        )
        .await?;
        for row in &dead {
            let name: String = get(row, "object")?;
            objects.delete(&name).await?;
            c_exec(
                &c,
                "DELETE FROM ferry_dead_objects WHERE object = $1",
                &[&name],
            )
            .await?;
            removed += 1;
        }
        let stale = c_all(
            &c,
            "DELETE FROM ferry_staged WHERE since <= now() - make_interval(secs => $1) RETURNING object",
            &[&secs],
        )
        .await?;
        for row in &stale {
            objects.delete(&get::<String>(row, "object")?).await?;
            removed += 1;
        }

        // 3: objects no row names.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut listing = objects.store.list(objects.root().as_ref());
        let mut batch = Vec::new();
        loop {
            let next = listing.next().await;
            let done = next.is_none();
            if let Some(meta) = next {
                let meta = meta.map_err(|e| s3("list objects", e))?;
                let modified = u64::try_from(meta.last_modified.timestamp()).unwrap_or(0);
                if modified.saturating_add(grace.as_secs()) <= now
                    && let Some(name) = objects.name_of(&meta.location)
                {
                    batch.push(name);
                }
            }
            if batch.len() >= BATCH || done {
                removed += self.remove_unnamed(&c, std::mem::take(&mut batch)).await?;
            }
            if done {
                break;
            }
        }
        Ok(removed)
    }

    /// Removes the objects of `names` that no row names.
    async fn remove_unnamed(
        &self,
        c: &deadpool_postgres::Object,
        names: Vec<String>,
    ) -> Result<u64> {
        if names.is_empty() {
            return Ok(0);
        }
        let named = c_all(
            c,
            "SELECT object FROM ferry_blobs WHERE object = ANY($1) \
             UNION SELECT object FROM ferry_uploads WHERE object = ANY($1) \
             UNION SELECT object FROM ferry_staged WHERE object = ANY($1) \
             UNION SELECT object FROM ferry_dead_objects WHERE object = ANY($1)",
            &[&names],
        )
        .await?;
        let named: std::collections::HashSet<String> = named
            .iter()
            .map(|r| get::<String>(r, "object"))
            .collect::<Result<_>>()?;
        let mut removed = 0;
        for name in names.iter().filter(|n| !named.contains(*n)) {
            self.inner.objects.delete(name).await?;
            removed += 1;
        }
        Ok(removed)
    }

    /// For tests: the names of every object under the prefix.
    #[doc(hidden)]
    pub async fn object_names(&self) -> Result<Vec<String>> {
        let objects = &self.inner.objects;
        let mut listing = objects.store.list(objects.root().as_ref());
        let mut out = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| s3("list objects", e))?;
            out.extend(objects.name_of(&meta.location));
        }
        Ok(out)
    }
}
