//! Turns inputs into the rows [`crate::publish::submit`] reads: a CSV or address file read on
//! a blocking thread (bounded channel, so memory stays flat), or a JSON list.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use jetmail_common::api::JsonRecipient;
use jetmail_common::wire::Vars;
use tokio::sync::mpsc;

use crate::recipients::{FormatError, RecipientReader, Row, RowClassifier};

/// Rows passed from a reader to the publisher at once: the two wake each other once a batch,
/// not once a row (measured: a row at a time, waking the blocked reader thread cost more CPU
/// than reading the row).
const BATCH: usize = 256;
/// Batches queued between them (8,192 rows).
const CHANNEL: usize = 32;

/// The rows of one input, in input order.
pub struct Rows {
    rx: mpsc::Receiver<Vec<Row>>,
    batch: std::vec::IntoIter<Row>,
}

impl Rows {
    fn new(rx: mpsc::Receiver<Vec<Row>>) -> Self {
        Self {
            rx,
            batch: Vec::new().into_iter(),
        }
    }

    /// The next row; `None` once the input is exhausted.
    pub async fn next(&mut self) -> Option<Row> {
        loop {
            if let Some(row) = self.batch.next() {
                return Some(row);
            }
            self.batch = self.rx.recv().await?.into_iter();
        }
    }
}

impl From<Vec<Row>> for Rows {
    /// Rows already in memory.
    fn from(rows: Vec<Row>) -> Self {
        let (_, rx) = mpsc::channel(1);
        Self {
            rx,
            batch: rows.into_iter(),
        }
    }
}

/// Sends rows in batches of [`BATCH`].
struct Batcher {
    tx: mpsc::Sender<Vec<Row>>,
    batch: Vec<Row>,
}

impl Batcher {
    fn new(tx: mpsc::Sender<Vec<Row>>) -> Self {
        Self {
            tx,
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// Queues `row`; false once the receiver is gone.
    fn blocking_push(&mut self, row: Row) -> bool {
        self.batch.push(row);
        self.batch.len() < BATCH || self.blocking_flush()
    }

    fn blocking_flush(&mut self) -> bool {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        batch.is_empty() || self.tx.blocking_send(batch).is_ok()
    }

    async fn push(&mut self, row: Row) -> bool {
        self.batch.push(row);
        self.batch.len() < BATCH || self.flush().await
    }

    async fn flush(&mut self) -> bool {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        batch.is_empty() || self.tx.send(batch).await.is_ok()
    }
}

/// Reads `input` on a blocking thread, finding duplicates in memory. `bytes_read` follows the
/// reader for a progress bar.
pub fn rows_from_reader<R: Read + Send + 'static>(
    input: R,
) -> Result<(Rows, Arc<AtomicU64>), FormatError> {
    rows_from_reader_with(input, RowClassifier::default())
}

/// As [`rows_from_reader`], with the given classifier (e.g. duplicates found beforehand).
pub fn rows_from_reader_with<R: Read + Send + 'static>(
    input: R,
    classifier: RowClassifier,
) -> Result<(Rows, Arc<AtomicU64>), FormatError> {
    let mut reader = RecipientReader::with_classifier(input, classifier)?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let bytes = Arc::new(AtomicU64::new(0));
    let b = bytes.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Batcher::new(tx);
        while let Some(row) = reader.next() {
            if !out.blocking_push(row) {
                return; // the publisher stopped (an error it reports itself)
            }
            b.store(reader.byte_offset(), Ordering::Relaxed);
        }
        out.blocking_flush();
        b.store(reader.byte_offset(), Ordering::Relaxed);
    });
    Ok((Rows::new(rx), bytes))
}

/// Classifies a JSON list; `line` is the 1-based index in the list.
pub fn rows_from_json(list: Vec<JsonRecipient>) -> Rows {
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(async move {
        let mut out = Batcher::new(tx);
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
            if !out.push(classifier.classify(line, email, vars)).await {
                return;
            }
        }
        out.flush().await;
    });
    Rows::new(rx)
}
