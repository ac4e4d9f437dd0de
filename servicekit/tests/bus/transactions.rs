//! `Db::begin`: transactions that read before they write must not fail when another
//! writer is at work. Every service's store relies on it (a push subscription, a
//! meeting update, an outbox write read something first, then write).

use crate::helpers::fresh_db;
use servicekit::backends::Db;
use std::time::Duration;

async fn count(db: &Db) -> i64 {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM notes")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

/// One writer holds its transaction open; a second one reads, then writes. On SQLite a
/// deferred `BEGIN` let the second read a snapshot that the first writer's commit made
/// stale, and its write failed at once with `SQLITE_BUSY` instead of waiting.
async fn a_transaction_that_reads_then_writes_waits_for_another_writer(postgres: bool) {
    let db = fresh_db(postgres).await;
    sqlx::query("CREATE TABLE notes (body TEXT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();

    let mut first = db.begin().await.unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ('first')")
        .execute(&mut *first)
        .await
        .unwrap();

    let second = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await?;
            let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notes")
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO notes (body) VALUES ($1)")
                .bind(format!("second, after {seen}"))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
    });
    // Let the second transaction start (and, before the fix, read) while the first
    // still holds its write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.commit().await.unwrap();

    second
        .await
        .unwrap()
        .expect("the second writer waits for the first instead of failing");
    assert_eq!(count(&db).await, 2);
}

mod sqlite {
    #[tokio::test]
    async fn a_transaction_that_reads_then_writes_waits_for_another_writer() {
        super::a_transaction_that_reads_then_writes_waits_for_another_writer(false).await
    }
}

mod postgres {
    #[tokio::test]
    async fn a_transaction_that_reads_then_writes_waits_for_another_writer() {
        super::a_transaction_that_reads_then_writes_waits_for_another_writer(true).await
    }
}
