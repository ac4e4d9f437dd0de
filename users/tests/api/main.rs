//! The users service's API tests: each scenario runs twice, on SQLite (embedded) and
//! on the real PostgreSQL (`TEST_DATABASE_URL`, a fresh schema per test), with a real
//! auth service in-process handing out the tokens.

mod helpers;

mod auth;
mod avatar;
mod events;
mod profile;
