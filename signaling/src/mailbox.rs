//! What the SFU has to say to one connected participant (its subscriber
//! offers, layer changes, the layers it should publish), waiting for that
//! participant's session task to send it on.
//!
//! Every message here is a statement of current state, so a newer one of the
//! same kind for the same track replaces the queued one instead of queueing
//! behind it. The box therefore stays small however slow the session is, and
//! nothing that still matters is ever dropped: a bounded channel that drops
//! when full could lose the "publish layer h again" that follows a burst of
//! layer changes and leave that layer paused for good.

use proto::ids::TrackId;
use proto::sfu::SfuEvent;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::Notify;

/// A message for one local session.
#[derive(Debug, Clone)]
pub enum Direct {
    Sfu(SfuEvent),
}

/// Which queued message a new one supersedes.
#[derive(Debug, PartialEq, Eq)]
enum Slot {
    /// The SFU's latest subscriber offer: it holds one offer open per
    /// participant, so only the latest can be answered.
    Offer,
    LayerChanged(TrackId),
    PublisherLayers(TrackId),
    Disconnected,
    /// Anything else is queued as it comes.
    Other,
}

fn slot(message: &Direct) -> Slot {
    match message {
        Direct::Sfu(SfuEvent::SubscriberOffer { .. }) => Slot::Offer,
        Direct::Sfu(SfuEvent::LayerChanged { track_id, .. }) => Slot::LayerChanged(*track_id),
        Direct::Sfu(SfuEvent::PublisherLayers { track_id, .. }) => Slot::PublisherLayers(*track_id),
        Direct::Sfu(SfuEvent::Disconnected { .. }) => Slot::Disconnected,
        Direct::Sfu(_) => Slot::Other,
    }
}

/// Messages of kinds that are not coalesced are kept up to this many; past
/// it the oldest goes (none of today's kinds lands here).
const MAX_OTHER: usize = 256;

#[derive(Default)]
struct State {
    queue: VecDeque<Direct>,
    closed: bool,
}

/// One session's mailbox: posted to by the replica's SFU-event consumer,
/// read by the session task.
#[derive(Default)]
pub struct Mailbox {
    state: Mutex<State>,
    notify: Notify,
}

impl Mailbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue `message`, replacing a queued one it supersedes (in its place).
    pub fn post(&self, message: Direct) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return;
        }
        let kind = slot(&message);
        if kind != Slot::Other {
            if let Some(queued) = state.queue.iter_mut().find(|m| slot(m) == kind) {
                *queued = message;
                return;
            }
        } else if state
            .queue
            .iter()
            .filter(|m| slot(m) == Slot::Other)
            .count()
            >= MAX_OTHER
            && let Some(oldest) = state.queue.iter().position(|m| slot(m) == Slot::Other)
        {
            state.queue.remove(oldest);
        }
        state.queue.push_back(message);
        drop(state);
        // Stores a permit when the reader is not waiting yet, so a post
        // between its check and its wait is not missed.
        self.notify.notify_one();
    }

    /// The session was taken over or ended: its reader gets `None` once the
    /// queue is empty, and later posts are ignored.
    pub fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.notify.notify_one();
    }

    /// Take what `previous` (a session this one replaces) still holds, in
    /// order, as if it had been posted here.
    pub fn take_over(&self, previous: &Mailbox) {
        let queued = std::mem::take(
            &mut previous
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .queue,
        );
        for message in queued {
            self.post(message);
        }
    }

    /// The next message, waiting for one; `None` once closed and empty.
    pub async fn recv(&self) -> Option<Direct> {
        loop {
            {
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(message) = state.queue.pop_front() {
                    return Some(message);
                }
                if state.closed {
                    return None;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Messages waiting (for tests and metrics).
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ids::ParticipantId;
    use proto::media::{Layer, RoomId};
    use std::sync::Arc;
    use std::time::Duration;

    fn room() -> RoomId {
        RoomId::parse("room-1").unwrap()
    }

    fn layers(track: TrackId, active: Vec<Layer>) -> Direct {
        Direct::Sfu(SfuEvent::PublisherLayers {
            room: room(),
            participant_id: ParticipantId::new(),
            track_id: track,
            mid: "0".into(),
            active,
        })
    }

    fn layer_changed(track: TrackId, layer: Option<Layer>) -> Direct {
        Direct::Sfu(SfuEvent::LayerChanged {
            room: room(),
            participant_id: ParticipantId::new(),
            track_id: track,
            layer,
        })
    }

    fn offer(sdp: &str) -> Direct {
        Direct::Sfu(SfuEvent::SubscriberOffer {
            room: room(),
            participant_id: ParticipantId::new(),
            offer: proto::sfu::SubscriberOffer {
                sdp: sdp.into(),
                tracks: Vec::new(),
            },
        })
    }

    #[tokio::test]
    async fn a_slow_reader_still_gets_the_latest_state_of_everything() {
        let mailbox = Mailbox::new();
        let (camera, screen) = (TrackId::new(), TrackId::new());
        // Far more than any bounded queue would hold, with nobody reading.
        for i in 0..10_000 {
            let active = if i % 2 == 0 {
                vec![Layer::Low]
            } else {
                vec![Layer::Low, Layer::Medium, Layer::High]
            };
            mailbox.post(layers(camera, active));
            mailbox.post(layer_changed(screen, Some(Layer::Low)));
        }
        mailbox.post(offer("v=0 first"));
        mailbox.post(layer_changed(screen, Some(Layer::High)));
        mailbox.post(offer("v=0 second"));
        assert_eq!(mailbox.len(), 3);

        let mut got = Vec::new();
        while !mailbox.is_empty() {
            got.push(mailbox.recv().await.unwrap());
        }
        match &got[0] {
            Direct::Sfu(SfuEvent::PublisherLayers {
                track_id, active, ..
            }) => {
                assert_eq!(*track_id, camera);
                assert_eq!(active, &vec![Layer::Low, Layer::Medium, Layer::High]);
            }
            other => panic!("expected the camera's layers first, got {other:?}"),
        }
        match &got[1] {
            Direct::Sfu(SfuEvent::LayerChanged {
                track_id, layer, ..
            }) => {
                assert_eq!(*track_id, screen);
                assert_eq!(*layer, Some(Layer::High));
            }
            other => panic!("expected the screen's layer next, got {other:?}"),
        }
        match &got[2] {
            Direct::Sfu(SfuEvent::SubscriberOffer { offer, .. }) => {
                assert_eq!(offer.sdp, "v=0 second")
            }
            other => panic!("expected the latest offer last, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_resumed_session_takes_over_what_was_not_sent() {
        let old = Mailbox::new();
        old.post(offer("v=0 pending"));
        let new = Mailbox::new();
        new.post(layer_changed(TrackId::new(), Some(Layer::Low)));
        // As `Live::register` does on a resume.
        new.take_over(&old);
        old.close();
        assert_eq!(new.len(), 2);
        assert!(old.recv().await.is_none(), "the old reader ends");
        let _ = new.recv().await;
        match new.recv().await {
            Some(Direct::Sfu(SfuEvent::SubscriberOffer { offer, .. })) => {
                assert_eq!(offer.sdp, "v=0 pending")
            }
            other => panic!("expected the pending offer, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn different_tracks_are_kept_apart() {
        let mailbox = Mailbox::new();
        let (a, b) = (TrackId::new(), TrackId::new());
        mailbox.post(layers(a, vec![Layer::Low]));
        mailbox.post(layers(b, vec![Layer::High]));
        mailbox.post(layer_changed(a, None));
        assert_eq!(mailbox.len(), 3);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_a_post_and_ends_on_close() {
        let mailbox = Arc::new(Mailbox::new());
        let reader = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move {
                let mut seen = 0;
                while mailbox.recv().await.is_some() {
                    seen += 1;
                }
                seen
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailbox.post(offer("v=0"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        mailbox.post(layers(TrackId::new(), vec![Layer::Low]));
        mailbox.close();
        // Posts after close are ignored.
        mailbox.post(offer("v=0 late"));
        let seen = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the reader ends once closed")
            .unwrap();
        assert_eq!(seen, 2);
    }
}
