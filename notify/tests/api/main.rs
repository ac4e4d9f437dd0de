//! notify's API tests: real databases (SQLite, PostgreSQL), the in-process bus and
//! real RabbitMQ, a real SMTP server (aiosmtpd) where mail must go over the wire.

mod alerts;
mod delivery;
mod email;
mod helpers;
mod push;
