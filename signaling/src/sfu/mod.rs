//! Talking to SFU nodes: the control API client ([`client`]), the event streams
//! ([`events`]) and choosing a node for a new room ([`nodes`]).

pub mod client;
pub mod nodes;

pub use client::{HttpSfu, SfuClient, SfuError};
