//! Integration tests of the web UI: handlers driven with `tower::ServiceExt::oneshot` against
//! a real nats-server and a real ingest API (`handlers`), and the whole stack driven from a
//! real headless Chromium (`browser`).

mod browser;
mod handlers;
mod helpers;
mod limits;
