//! The gateway's API tests: the real gateway in front of the real auth service
//! (in-process, SQLite, with or without Redis) and small stub services that echo
//! what reached them.

mod helpers;
mod hostile;
mod identity;
mod ratelimit;
mod resilience;
mod routing;
