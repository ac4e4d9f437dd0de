//! What the users service takes from the event bus: auth's `user.registered`
//! creates the profile (so others can look a new member up before their first
//! visit), `user.deleted` removes the profile and avatar.
//!
//! Queue `users`, bound to `user.registered` and `user.deleted` on
//! [`proto::event::USER_EVENTS`]. Delivery is at least once; each event is applied
//! once ([`servicekit::bus::claim_event`] in the same transaction as its effect).
//! A payload that does not parse is rejected (dead-lettered at once); a database
//! failure is retried.

use crate::domain::DisplayName;
use crate::now_ms;
use crate::store::Store;
use proto::event::{EventEnvelope, USER_EVENTS};
use proto::ids::UserId;
use serde::Deserialize;
use servicekit::bus::{BusError, EventBus, Handler, HandlerError, Subscription};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The queue's name.
pub const QUEUE: &str = "users";

/// `user.registered` as auth writes it (other fields are ignored).
#[derive(Debug, Deserialize)]
struct Registered {
    user_id: UserId,
    display_name: String,
}

/// `user.deleted`.
#[derive(Debug, Deserialize)]
struct Deleted {
    user_id: UserId,
}

/// Declare the queue and start consuming until `shutdown`.
pub async fn subscribe(
    bus: Arc<dyn EventBus>,
    store: Store,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let subscription = Subscription::new(QUEUE)
        .bind(USER_EVENTS, "user.registered")
        .bind(USER_EVENTS, "user.deleted");
    let handler: Handler = Arc::new(move |event| {
        let store = store.clone();
        Box::pin(async move { handle(&store, event).await })
    });
    bus.subscribe(subscription, handler, shutdown).await
}

/// Apply one event.
pub async fn handle(store: &Store, event: EventEnvelope) -> Result<(), HandlerError> {
    let reject = |err: serde_json::Error| {
        tracing::warn!(event = %event.id, kind = %event.kind, error = %err, "unreadable event");
        HandlerError::Reject(format!("{}: {err}", event.kind))
    };
    let retry = |err: crate::store::StoreError| {
        tracing::warn!(event = %event.id, kind = %event.kind, error = %err, "cannot apply event");
        HandlerError::Retry(err.to_string())
    };
    match event.kind.as_str() {
        "user.registered" => {
            let body: Registered = serde_json::from_value(event.payload.clone()).map_err(reject)?;
            let name = DisplayName::from_claim(&body.display_name);
            store
                .apply_registered(event.id, body.user_id, &name, now_ms())
                .await
                .map_err(retry)?;
        }
        "user.deleted" => {
            let body: Deleted = serde_json::from_value(event.payload.clone()).map_err(reject)?;
            store
                .apply_deleted(event.id, body.user_id, now_ms())
                .await
                .map_err(retry)?;
        }
        // Bound only to the two above; anything else is acknowledged and ignored.
        _ => {}
    }
    Ok(())
}
