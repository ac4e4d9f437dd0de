//! Live rooms: the pure state machine ([`state`]), where rooms are kept ([`store`]:
//! in memory or in Redis) and the SFU node registry that goes with them.

pub mod redis_store;
pub mod state;
pub mod store;

pub use state::{Audience, Entrant, Entry, EventBody, Room, RoomError, RoomEvent};
pub use store::{MemoryStore, NodeStatus, RoomStore, StoreError, UpdateError, Updated};
