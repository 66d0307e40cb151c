//! Integration tests of the web UI: handlers driven with `tower::ServiceExt::oneshot` against
//! a real nats-server and a real ingest API (`handlers`, `limits`, `compliance`), and the
//! whole stack driven from a real headless Chromium (`browser`).

mod access;
mod browser;
mod compliance;
mod handlers;
mod helpers;
mod limits;
