//! jetmail ingest: takes a campaign from a CSV file (`submit`) or over HTTP (`serve`) and
//! publishes one message per recipient to MAIL_OUTBOX. Ingest never talks SMTP.

pub mod api_tokens;
pub mod bounces;
pub mod bounded;
pub mod citizen;
pub mod cli;
pub mod control;
pub mod dead;
pub mod dedup;
pub mod feed;
pub mod from_domains;
pub mod http;
pub mod limits;
pub mod publish;
pub mod recipients;
pub mod rejected;
pub mod schedule;
pub mod suppressions;
pub mod telemetry;
pub mod test_send;
pub mod unsubscribe;
pub mod view;
pub mod window;

pub use http::{serve, ServeConfig};
