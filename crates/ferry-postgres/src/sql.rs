//! Statements run through the pool's statement cache, their errors as [`db`] reports them.

use deadpool_postgres::{Object, Transaction};
use ferry_backend::Result;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::db;

pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(crate) async fn c_opt(c: &Object, sql: &str, p: Params<'_>) -> Result<Option<Row>> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query_opt(&st, p).await.map_err(db)
}

pub(crate) async fn c_all(c: &Object, sql: &str, p: Params<'_>) -> Result<Vec<Row>> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.query(&st, p).await.map_err(db)
}

pub(crate) async fn c_exec(c: &Object, sql: &str, p: Params<'_>) -> Result<u64> {
    let st = c.prepare_cached(sql).await.map_err(db)?;
    c.execute(&st, p).await.map_err(db)
}

pub(crate) async fn t_opt(t: &Transaction<'_>, sql: &str, p: Params<'_>) -> Result<Option<Row>> {
    let st = t.prepare_cached(sql).await.map_err(db)?;
    t.query_opt(&st, p).await.map_err(db)
}

pub(crate) async fn t_one(t: &Transaction<'_>, sql: &str, p: Params<'_>) -> Result<Row> {
    let st = t.prepare_cached(sql).await.map_err(db)?;
    t.query_one(&st, p).await.map_err(db)
}

pub(crate) async fn t_exec(t: &Transaction<'_>, sql: &str, p: Params<'_>) -> Result<u64> {
    let st = t.prepare_cached(sql).await.map_err(db)?;
    t.execute(&st, p).await.map_err(db)
}

pub(crate) async fn t_all(t: &Transaction<'_>, sql: &str, p: Params<'_>) -> Result<Vec<Row>> {
    let st = t.prepare_cached(sql).await.map_err(db)?;
    t.query(&st, p).await.map_err(db)
}
