//! The sender's integration tests: the sender against real relays. Whole-system tests (every
//! service, ingest included) live in the `jetmail-e2e` crate (`e2e/tests/it`).
mod relays;
mod servers;
