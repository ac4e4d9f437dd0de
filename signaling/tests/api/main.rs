//! The signaling service's integration tests: real PostgreSQL, SQLite and Redis, a
//! real HTTP server and WebSocket, and a fake SFU node behind the `SfuClient` trait.

mod helpers;
mod meetings;
mod outbox;
mod real_sfu;
mod replicas;
mod room_store;
mod rtc;
mod session;
