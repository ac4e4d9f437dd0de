//! analytics' API tests: a simulated meeting's events through the real bus (in
//! process with SQLite, RabbitMQ with PostgreSQL) and the summaries they give.

mod helpers;
mod summaries;
