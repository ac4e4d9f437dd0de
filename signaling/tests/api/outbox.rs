//! What signaling puts on the bus besides meeting changes.

use crate::helpers::*;
use proto::ids::{MeetingId, ParticipantId};
use proto::sfu::{Quality, QualitySample};
use sqlx::Row;

async fn quality_samples_go_to_the_outbox_in_the_shape_analytics_reads(backend: Backend) {
    let (db, _) = fresh_db(backend).await;
    signaling::migrate(&db).await.unwrap();
    let meeting = MeetingId::new();
    let sample = QualitySample {
        participant_id: ParticipantId::new(),
        quality: Quality::Good,
        egress_estimate_bps: Some(1_500_000),
        ingress_loss: 0.01,
        rtt_ms: Some(42.0),
    };
    signaling::outbox::write_quality(&db, meeting, &sample)
        .await
        .unwrap();
    let row = sqlx::query("SELECT type, payload, published_at FROM outbox")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("type"), "meeting.quality_sample");
    assert!(
        row.get::<Option<i64>, _>("published_at").is_none(),
        "left for the relay"
    );
    let payload: serde_json::Value =
        serde_json::from_str(&row.get::<String, _>("payload")).unwrap();
    assert_eq!(payload["meeting_id"], meeting.to_string());
    assert!(payload["occurred_at_ms"].as_i64().unwrap() > 0);
    let back: QualitySample = serde_json::from_value(payload["sample"].clone()).unwrap();
    assert_eq!(back, sample);
}

#[tokio::test]
async fn quality_samples_go_to_the_outbox_on_sqlite() {
    quality_samples_go_to_the_outbox_in_the_shape_analytics_reads(Backend::Sqlite).await;
}

#[tokio::test]
async fn quality_samples_go_to_the_outbox_on_postgres() {
    quality_samples_go_to_the_outbox_in_the_shape_analytics_reads(Backend::Postgres).await;
}
