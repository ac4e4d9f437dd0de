//! Wire types shared by every MeetEase process.
//!
//! Nothing here performs I/O: these are the values that cross process boundaries
//! (HTTP bodies, signaling messages, events, token claims) and the registry of
//! error codes a client may see. Only serde and small value crates are allowed here.

pub mod auth;
pub mod error_code;
pub mod event;
pub mod ids;
pub mod media;
pub mod meeting;
pub mod room_token;
pub mod sfu;
pub mod signal;

pub use error_code::ErrorCode;
