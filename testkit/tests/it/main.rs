//! Checks on the repository's deployment files, and on the SMTP sink they run.

mod compose;
mod sink;
