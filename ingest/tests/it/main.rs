//! Ingest against a real nats-server: the CSV reader's edge cases, the HTTP API (driven
//! in-process with tower's `oneshot`), resumable and idempotent submits.

mod api;
mod csv_rows;
