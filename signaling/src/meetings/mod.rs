//! Meetings: the domain rules (`domain`), their storage (`store`) and the REST routes (`routes`).

pub mod domain;
pub mod routes;
pub mod store;
