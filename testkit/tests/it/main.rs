//! Checks on the repository's deployment files.

mod compose;
