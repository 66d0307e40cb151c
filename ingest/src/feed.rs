//! Turns inputs into the row channel [`crate::publish::submit`] reads: a CSV or address file
//! read on a blocking thread (bounded channel, so memory stays flat), or a JSON list.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jetmail_common::api::JsonRecipient;
use jetmail_common::wire::Vars;
use tokio::sync::mpsc;

use crate::recipients::{FormatError, RecipientReader, Row, RowClassifier};

const CHANNEL: usize = 8192;

/// Reads `input` on a blocking thread, finding duplicates in memory. `bytes_read` follows the
/// reader for a progress bar.
pub fn rows_from_reader<R: Read + Send + 'static>(
    input: R,
) -> Result<(mpsc::Receiver<Row>, Arc<AtomicU64>), FormatError> {
    rows_from_reader_with(input, RowClassifier::default())
}

/// As [`rows_from_reader`], with the given classifier (e.g. duplicates found beforehand).
pub fn rows_from_reader_with<R: Read + Send + 'static>(
    input: R,
    classifier: RowClassifier,
) -> Result<(mpsc::Receiver<Row>, Arc<AtomicU64>), FormatError> {
    let mut reader = RecipientReader::with_classifier(input, classifier)?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let bytes = Arc::new(AtomicU64::new(0));
    let b = bytes.clone();
    tokio::task::spawn_blocking(move || {
        while let Some(row) = reader.next() {
            b.store(reader.byte_offset(), Ordering::Relaxed);
            if tx.blocking_send(row).is_err() {
                return; // the publisher stopped (an error it reports itself)
            }
        }
        b.store(reader.byte_offset(), Ordering::Relaxed);
    });
    Ok((rx, bytes))
}

/// Classifies a JSON list; `line` is the 1-based index in the list.
pub fn rows_from_json(list: Vec<JsonRecipient>) -> mpsc::Receiver<Row> {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut classifier = RowClassifier::default();
        for (i, r) in list.into_iter().enumerate() {
            let line = i as u64 + 1;
            let (email, vars) = match r {
                JsonRecipient::Address(a) => (a, Vars::new()),
                JsonRecipient::Object(mut map) => {
                    let email = match map.remove("email") {
                        Some(serde_json::Value::String(s)) => s,
                        _ => String::new(),
                    };
                    let vars = map
                        .into_iter()
                        .map(|(k, v)| {
                            let v = match v {
                                serde_json::Value::String(s) => s,
                                serde_json::Value::Null => String::new(),
                                other => other.to_string(),
                            };
                            (k, v)
                        })
                        .collect();
                    (email, vars)
                }
            };
            if tx
                .send(classifier.classify(line, email, vars))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    rx
}
