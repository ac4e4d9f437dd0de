//! What signaling puts on the bus: quality samples beside meeting changes, and the
//! per-meeting sequence numbers of the changes.

use crate::helpers::*;
use proto::event::EventEnvelope;
use proto::ids::{MeetingId, ParticipantId};
use proto::meeting::MeetingEventBody;
use proto::sfu::{Quality, QualitySample};
use servicekit::bus::{EventBus, Handler, MemoryBus, RelayConfig, Subscription, relay_once};
use sqlx::Row;
use std::sync::{Arc, Mutex};

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

/// One committed meeting change for `meeting`.
async fn change(db: &servicekit::backends::Db, meeting: MeetingId) -> i64 {
    let mut tx = db.begin().await.unwrap();
    let seq = signaling::outbox::write(
        &mut tx,
        &signaling::outbox::event(meeting, MeetingEventBody::Started {}),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    seq
}

async fn meeting_changes_are_numbered_per_meeting_without_gaps_and_the_relay_sends_the_number(
    backend: Backend,
) {
    let (db, _) = fresh_db(backend).await;
    signaling::migrate(&db).await.unwrap();
    let (a, b) = (MeetingId::new(), MeetingId::new());
    let mut seqs = Vec::new();
    for m in [a, b, a, a, b] {
        seqs.push(change(&db, m).await);
    }
    assert_eq!(seqs, [1, 1, 2, 3, 2]);
    // A change rolled back takes its number with it: no hole.
    let mut tx = db.begin().await.unwrap();
    signaling::outbox::write(
        &mut tx,
        &signaling::outbox::event(a, MeetingEventBody::Ended {}),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    // A quality sample is no change: it takes none.
    let sample = QualitySample {
        participant_id: ParticipantId::new(),
        quality: Quality::Good,
        egress_estimate_bps: None,
        ingress_loss: 0.0,
        rtt_ms: None,
    };
    signaling::outbox::write_quality(&db, a, &sample)
        .await
        .unwrap();
    assert_eq!(change(&db, a).await, 4);

    // Changes made at once take distinct numbers, in commit order.
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let db = db.clone();
            tokio::spawn(async move { change(&db, b).await })
        })
        .collect();
    let mut numbers = Vec::new();
    for w in writers {
        numbers.push(w.await.unwrap());
    }
    numbers.sort();
    assert_eq!(numbers, (3..=10).collect::<Vec<i64>>());

    // The relay puts the number in the envelope.
    let bus = MemoryBus::new();
    let got: Arc<Mutex<Vec<EventEnvelope>>> = Arc::default();
    let sink = got.clone();
    let handler: Handler = Arc::new(move |event: EventEnvelope| {
        sink.lock().unwrap().push(event);
        Box::pin(async { Ok(()) })
    });
    let stop = tokio_util::sync::CancellationToken::new();
    bus.subscribe(
        Subscription::new("seq-test").bind("meetings", "meeting.#"),
        handler,
        stop.clone(),
    )
    .await
    .unwrap();
    let relay = RelayConfig::new("meetings").with_room_seq();
    while relay_once(&db, &bus, &relay).await.unwrap() > 0 {}
    for _ in 0..100 {
        if got.lock().unwrap().len() == 15 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let got = got.lock().unwrap().clone();
    // Four changes of a, ten of b, one sample.
    assert_eq!(got.len(), 15);
    let numbered = |m: MeetingId| {
        let mut s: Vec<u64> = got
            .iter()
            .filter(|e| {
                e.room.as_deref() == Some(&m.to_string()) && e.kind != "meeting.quality_sample"
            })
            .map(|e| e.seq.expect("meeting changes carry a seq"))
            .collect();
        s.sort();
        s
    };
    assert_eq!(numbered(a), [1, 2, 3, 4]);
    assert_eq!(numbered(b), (1..=10).collect::<Vec<u64>>());
    let sample = got
        .iter()
        .find(|e| e.kind == "meeting.quality_sample")
        .unwrap();
    assert_eq!(sample.seq, None);
    stop.cancel();
}

#[tokio::test]
async fn meeting_changes_are_numbered_per_meeting_on_sqlite() {
    meeting_changes_are_numbered_per_meeting_without_gaps_and_the_relay_sends_the_number(
        Backend::Sqlite,
    )
    .await;
}

#[tokio::test]
async fn meeting_changes_are_numbered_per_meeting_on_postgres() {
    meeting_changes_are_numbered_per_meeting_without_gaps_and_the_relay_sends_the_number(
        Backend::Postgres,
    )
    .await;
}
