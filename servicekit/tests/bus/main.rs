//! One suite for both event-bus backends: the in-process bus and real RabbitMQ
//! (`TEST_AMQP_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`). Every test
//! uses its own exchange and queue names. The relay scenarios run on SQLite with the
//! in-process bus and on PostgreSQL (`TEST_DATABASE_URL`, fresh schema) with RabbitMQ.
//! `transactions` checks the write transactions the outbox (and every store) rests on,
//! on both databases.

mod helpers;
mod relay;
mod suite;
mod transactions;
