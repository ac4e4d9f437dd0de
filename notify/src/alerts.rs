//! Real-time in-app alerts: `GET /api/v1/notifications/stream` (Server-Sent Events,
//! bearer access token) streams the signed-in user's alerts as they happen.
//!
//! The hub is per process: an alert reaches the streams open on the replica that
//! consumed the event. With several notify replicas, a fan-out (Redis pub/sub) is
//! the next step; one replica (and the launcher) is exact.

use crate::AppState;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use proto::ids::UserId;
use serde::Serialize;
use servicekit::tokens::AuthUser;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// One alert as the stream sends it (`event:` is `kind`, `data:` this JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// The event that caused it (stable across redeliveries).
    pub id: String,
    pub kind: String,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meeting_id: Option<String>,
    pub at: String,
}

/// Open streams by user. Cheap to clone.
#[derive(Clone, Default)]
pub struct Alerts {
    users: Arc<Mutex<HashMap<UserId, broadcast::Sender<Alert>>>>,
}

impl Alerts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, broadcast::Sender<Alert>>> {
        // The map stays consistent even if a holder panicked: each step is one insert/remove.
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn subscribe(&self, user: UserId) -> broadcast::Receiver<Alert> {
        self.lock()
            .entry(user)
            .or_insert_with(|| broadcast::channel(64).0)
            .subscribe()
    }

    /// Send to the user's open streams, if any.
    pub fn send(&self, user: UserId, alert: Alert) {
        let mut users = self.lock();
        if let Some(tx) = users.get(&user)
            && tx.send(alert).is_err()
        {
            // Nobody listens any more.
            users.remove(&user);
        }
    }
}

pub async fn stream(
    State(state): State<AppState>,
    user: AuthUser,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let receiver = state.alerts.subscribe(user.user_id());
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(alert) => {
                    let event = Event::default()
                        .event(alert.kind.clone())
                        .id(alert.id.clone())
                        .json_data(&alert)
                        .unwrap_or_else(|_| Event::default().comment("unencodable alert"));
                    return Some((Ok(event), receiver));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
