//! The auth service's API tests: each scenario runs twice, on SQLite (embedded, no
//! Redis) and on the real PostgreSQL + Redis (`TEST_DATABASE_URL`, `TEST_REDIS_URL`).

mod helpers;

mod deletion;
mod hostile_input;
mod jwks;
mod lifecycle;
mod login;
mod oauth;
mod oidc_harness;
mod password;
mod register;
mod throttle;
mod tokens;
mod verification;
