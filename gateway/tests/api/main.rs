//! The gateway's API tests: the real gateway in front of the real auth service
//! (in-process, SQLite, with or without Redis) and small stub services that echo
//! what reached them.

mod balancing;
mod helpers;
mod hostile;
mod identity;
mod observability;
mod openapi;
mod ratelimit;
mod resilience;
mod routing;
