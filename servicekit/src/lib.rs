//! Service plumbing shared by every MeetEase service.
//!
//! A service is a library that builds an axum [`Router`](axum::Router) from typed
//! configuration, plus a thin binary. This crate gives each of them the same:
//!
//! - [`config`]: typed settings, [`config::Secret`] values that never print, and
//!   [`StartError`], the one-line error naming the setting that is wrong;
//! - [`error::ApiError`]: the one error type at the HTTP boundary, mapped to a status
//!   and a stable [`proto::ErrorCode`];
//! - [`http`]: the common middleware stack (request id, tracing, metrics, panic
//!   catching, JSON 404/405) and [`http::serve`], which takes its listener and
//!   shutdown signal;
//! - [`health`]: `/health`, `/ready` and `/metrics`;
//! - [`backends`]: connectors for the relational store (PostgreSQL or embedded
//!   SQLite), Redis and RabbitMQ, each with a readiness check;
//! - [`tokens`]: verifying access tokens against auth's JWKS, and the
//!   [`tokens::AuthUser`] extractor.
//!
//! ```no_run
//! # async fn demo() -> Result<(), servicekit::StartError> {
//! use servicekit::{health::Readiness, http, metrics::Metrics};
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! let listener = http::bind("127.0.0.1:0".parse().unwrap(), "--port").await?;
//! let router = http::service_router("demo", axum::Router::new(), Readiness::default(), Metrics::new("demo"));
//! http::serve(listener, router, shutdown).await
//! # }
//! ```

pub mod backends;
pub mod bus;
pub mod config;
pub mod error;
pub mod extract;
pub mod health;
pub mod http;
pub mod metrics;
pub mod net;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tokens;

pub use config::{Secret, StartError};
pub use error::ApiError;
