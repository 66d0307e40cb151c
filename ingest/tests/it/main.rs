//! Ingest against a real nats-server: the CSV reader's edge cases, the HTTP API (driven
//! in-process with tower's `oneshot`, and on a real socket for shutdown), resumable and
//! idempotent submits, and the topology commands.

mod api;
mod bounded;
mod compliance;
mod csv_rows;
mod http_access;
mod limits;
mod schedule;
mod serve;
mod topology;
