//! End-to-end tests of the pipeline with real processes: nats-server, an SMTP server,
//! `jetmail-sender`s, `jetmail-monitor`, `jetmail-ingest submit`. The SMTP server's count is
//! the ground truth.

mod faults;
mod pipeline;
