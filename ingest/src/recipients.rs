//! Reads recipients as a stream of rows, never the whole input in memory: CSV with a header
//! row holding an `email` column (every other column is a template variable), or bare
//! addresses one a line. Each row is accepted, rejected with its line number and reason, or
//! counted as a duplicate; none of those stops the rows after it.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Read};

use jetmail_common::address::{parse_recipient, Recipient};
use jetmail_common::wire::{RejectedRow, Vars};

/// A recipient that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub line: u64,
    pub email: String,
    pub domain: String,
    pub vars: Vars,
}

impl Accepted {
    /// The key duplicates are found by: local part as given, domain in ASCII.
    pub fn dedup_key(&self) -> String {
        let local = self.email.rsplit_once('@').map(|(l, _)| l).unwrap_or("");
        format!("{local}@{}", self.domain)
    }
}

/// One input row's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    Accepted(Accepted),
    Rejected(RejectedRow),
    /// The same address appeared earlier in this campaign (at `first_line`).
    Duplicate {
        line: u64,
        email: String,
    },
}

/// Input that cannot be read as recipients at all.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("line 1: the header row has no `email` column (found: {0})")]
    NoEmailColumn(String),
    #[error("the input is empty")]
    Empty,
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    #[error("reading input: {0}")]
    Csv(#[from] csv::Error),
}

/// A field whose bytes are not UTF-8: the row is rejected, the rows after it are read.
#[derive(Debug, thiserror::Error)]
#[error("row is not valid UTF-8")]
struct NotUtf8;

enum Mode {
    Csv {
        email_col: usize,
        names: Vec<String>,
    },
    Bare,
}

/// A 128-bit hash of an address's duplicate key. Two keyed hashes make a false "duplicate"
/// (which would skip a real recipient) vanishingly unlikely (~1e-26 for a million addresses).
pub(crate) struct KeyHasher {
    k1: std::hash::RandomState,
    k2: std::hash::RandomState,
}

impl KeyHasher {
    pub(crate) fn new() -> Self {
        Self {
            k1: std::hash::RandomState::new(),
            k2: std::hash::RandomState::new(),
        }
    }

    /// The hash of an address's duplicate key ([`Accepted::dedup_key`]), from its parts.
    pub(crate) fn hash(&self, r: &Recipient) -> u128 {
        let local = r.address.rsplit_once('@').map(|(l, _)| l).unwrap_or("");
        let mut a = self.k1.build_hasher();
        let mut b = self.k2.build_hasher();
        for part in [local.as_bytes(), b"@", r.ascii_domain.as_bytes()] {
            a.write(part);
            b.write(part);
        }
        ((a.finish() as u128) << 64) | b.finish() as u128
    }
}

/// How a classifier finds duplicates.
enum Dedup {
    /// A 16-byte hash per address seen so far, in memory (inputs already in memory).
    InMemory(KeyHasher, HashSet<u128>),
    /// The lines known to repeat an earlier address, found beforehand by
    /// [`crate::dedup::duplicate_lines`] with flat memory (files).
    Known(HashSet<u64>),
    /// Not at all (the first pass of [`crate::dedup::duplicate_lines`]).
    Off,
}

/// Validates addresses and detects duplicates within one campaign, whatever the input format.
pub struct RowClassifier {
    dedup: Dedup,
}

impl Default for RowClassifier {
    fn default() -> Self {
        Self {
            dedup: Dedup::InMemory(KeyHasher::new(), HashSet::new()),
        }
    }
}

impl RowClassifier {
    /// A classifier that marks exactly `lines` as duplicates.
    pub fn with_known_duplicates(lines: HashSet<u64>) -> Self {
        Self {
            dedup: Dedup::Known(lines),
        }
    }

    /// A classifier that validates only.
    pub fn without_dedup() -> Self {
        Self { dedup: Dedup::Off }
    }

    /// Accepts, rejects or marks as duplicate one recipient found at `line`.
    pub fn classify(&mut self, line: u64, email: String, vars: Vars) -> Row {
        match parse_recipient(&email) {
            Err(e) => Row::Rejected(RejectedRow {
                line,
                email,
                reason: e.to_string(),
            }),
            Ok(r) => {
                let first = match &mut self.dedup {
                    Dedup::InMemory(hasher, seen) => seen.insert(hasher.hash(&r)),
                    Dedup::Known(lines) => !lines.contains(&line),
                    Dedup::Off => true,
                };
                if first {
                    Row::Accepted(Accepted {
                        line,
                        email: r.address,
                        domain: r.ascii_domain,
                        vars,
                    })
                } else {
                    Row::Duplicate {
                        line,
                        email: r.address,
                    }
                }
            }
        }
    }
}

/// Iterator over the rows of one input.
pub struct RecipientReader<R: Read> {
    csv: csv::Reader<LineIndex<BufReader<R>>>,
    mode: Mode,
    seen: RowClassifier,
    pending_first: Option<(csv::ByteRecord, u64)>,
    record: csv::ByteRecord,
}

/// Passes bytes through to the csv parser and remembers where the line breaks are, so a
/// record's line number can be told exactly. (The csv crate's own line count depends on
/// whether a record ended in LF or CRLF and skips blank lines.) Only the line breaks the parser
/// may still ask about are kept, so memory stays flat.
struct LineIndex<R> {
    inner: R,
    offset: u64,
    /// Offsets of the line breaks not yet counted in `dropped`.
    newlines: std::collections::VecDeque<u64>,
    /// Line breaks before the last offset asked about.
    dropped: u64,
}

impl<R: Read> Read for LineIndex<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                self.newlines.push_back(self.offset + i as u64);
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

impl<R> LineIndex<R> {
    /// 1-based line of the byte at `offset`. Offsets must not decrease between calls: the
    /// line breaks before `offset` are counted once and forgotten, so each costs O(1) (the
    /// parser reads ahead by a buffer of about a thousand lines).
    fn line_of(&mut self, offset: u64) -> u64 {
        while self.newlines.front().is_some_and(|&o| o < offset) {
            self.newlines.pop_front();
            self.dropped += 1;
        }
        1 + self.dropped
    }
}

/// The line a record starts on: the line of its last byte, less the line breaks inside it.
fn start_line<R: Read>(csv: &mut csv::Reader<LineIndex<R>>, rec: &csv::ByteRecord) -> u64 {
    let end = csv.position().byte();
    let end_line = csv.get_mut().line_of(end.saturating_sub(1));
    let inner: usize = rec
        .iter()
        .map(|f| f.iter().filter(|&&b| b == b'\n').count())
        .sum();
    end_line.saturating_sub(inner as u64).max(1)
}

fn field(rec: &csv::ByteRecord, i: usize) -> Result<&str, NotUtf8> {
    let raw = rec.get(i).unwrap_or_default();
    std::str::from_utf8(raw).map(str::trim).map_err(|_| NotUtf8)
}

/// What reading the next record found.
enum Next {
    /// A non-blank record, starting on this line.
    Record(u64),
    Unreadable(Row),
    End,
}

impl<R: Read> RecipientReader<R> {
    /// Reads the first row to tell a CSV with a header from a list of bare addresses.
    pub fn new(input: R) -> Result<Self, FormatError> {
        Self::with_classifier(input, RowClassifier::default())
    }

    /// As [`RecipientReader::new`], finding duplicates with `classifier`.
    pub fn with_classifier(input: R, classifier: RowClassifier) -> Result<Self, FormatError> {
        let mut buffered = BufReader::with_capacity(64 * 1024, input);
        // A UTF-8 byte-order mark (Excel writes one) is not part of the first column's name.
        let head = buffered.fill_buf()?;
        if head.starts_with(b"\xEF\xBB\xBF") {
            buffered.consume(3);
        }
        let mut csv = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(LineIndex {
                inner: buffered,
                offset: 0,
                newlines: Default::default(),
                dropped: 0,
            });
        let mut first = csv::ByteRecord::new();
        // The csv crate skips blank lines, so the first record is the first non-blank line.
        let got = csv.read_byte_record(&mut first)?;
        if !got {
            return Err(FormatError::Empty);
        }
        let first_line = start_line(&mut csv, &first);
        let names: Vec<String> = first
            .iter()
            .map(|f| String::from_utf8_lossy(f).trim().to_string())
            .collect();
        let email_col = names.iter().position(|n| n.eq_ignore_ascii_case("email"));
        let (mode, pending_first) = match email_col {
            Some(email_col) => (Mode::Csv { email_col, names }, None),
            None if names.len() == 1 => (Mode::Bare, Some((first, first_line))),
            None => return Err(FormatError::NoEmailColumn(names.join(","))),
        };
        Ok(Self {
            csv,
            mode,
            seen: classifier,
            pending_first,
            record: csv::ByteRecord::new(),
        })
    }

    /// Bytes consumed so far, for a progress bar.
    pub fn byte_offset(&self) -> u64 {
        self.csv.position().byte()
    }

    /// The row's address (trimmed) once the row's shape is checked: the field count, and every
    /// field the row is made of in UTF-8. A row that fails is rejected with its reason.
    fn email_of<'r>(&self, rec: &'r csv::ByteRecord, line: u64) -> Result<&'r str, Row> {
        let reject = |email: &str, reason: String| {
            Row::Rejected(RejectedRow {
                line,
                email: email.to_string(),
                reason,
            })
        };
        match &self.mode {
            Mode::Bare => {
                let email = field(rec, 0).map_err(|r| reject("", r.to_string()))?;
                if rec.len() > 1 {
                    return Err(reject(
                        email,
                        format!("expected one address per line, found {} fields", rec.len()),
                    ));
                }
                Ok(email)
            }
            Mode::Csv { email_col, names } => {
                if rec.len() != names.len() {
                    let email = field(rec, *email_col).unwrap_or_default();
                    return Err(reject(
                        email,
                        format!(
                            "expected {} fields as in the header, found {}",
                            names.len(),
                            rec.len()
                        ),
                    ));
                }
                let email = field(rec, *email_col).map_err(|r| reject("", r.to_string()))?;
                for (i, name) in names.iter().enumerate() {
                    if i == *email_col || name.is_empty() {
                        continue;
                    }
                    if std::str::from_utf8(rec.get(i).unwrap_or_default()).is_err() {
                        return Err(reject(email, format!("column {name:?} is not valid UTF-8")));
                    }
                }
                Ok(email)
            }
        }
    }

    fn classify(&mut self, rec: &csv::ByteRecord, line: u64) -> Row {
        let email = match self.email_of(rec, line) {
            Ok(email) => email.to_string(),
            Err(rejected) => return rejected,
        };
        let mut vars = Vars::new();
        if let Mode::Csv { email_col, names } = &self.mode {
            for (i, name) in names.iter().enumerate() {
                if i == *email_col || name.is_empty() {
                    continue;
                }
                // Checked by `email_of`.
                let value = std::str::from_utf8(rec.get(i).unwrap_or_default()).unwrap_or_default();
                vars.insert(name.clone(), value.to_string());
            }
        }
        self.seen.classify(line, email, vars)
    }

    /// Reads the next non-blank record into `rec`.
    fn read_next(&mut self, rec: &mut csv::ByteRecord) -> Next {
        if let Some((first, line)) = self.pending_first.take() {
            *rec = first;
            return Next::Record(line);
        }
        loop {
            match self.csv.read_byte_record(rec) {
                Ok(false) => return Next::End,
                Ok(true) => {
                    let line = start_line(&mut self.csv, rec);
                    // A line holding only separators/whitespace is blank, not a bad row.
                    if rec.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
                        continue;
                    }
                    return Next::Record(line);
                }
                Err(e) => {
                    let end = self.csv.position().byte();
                    let line = self.csv.get_mut().line_of(end.saturating_sub(1));
                    return Next::Unreadable(Row::Rejected(RejectedRow {
                        line,
                        email: String::new(),
                        reason: format!("unreadable row: {e}"),
                    }));
                }
            }
        }
    }

    /// The next row's line and, when it would be accepted, its duplicate key's hash: what
    /// [`crate::dedup::duplicate_lines`] needs, without building the row (its variables,
    /// its strings). `None` at the end of the input.
    pub(crate) fn next_key(&mut self, hasher: &KeyHasher) -> Option<(u64, Option<u128>)> {
        let mut rec = std::mem::take(&mut self.record);
        let found = match self.read_next(&mut rec) {
            Next::End => None,
            Next::Unreadable(_) => Some((0, None)),
            Next::Record(line) => {
                let key = self
                    .email_of(&rec, line)
                    .ok()
                    .and_then(|email| parse_recipient(email).ok())
                    .map(|r| hasher.hash(&r));
                Some((line, key))
            }
        };
        self.record = rec;
        found
    }
}

impl<R: Read> Iterator for RecipientReader<R> {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        let mut rec = std::mem::take(&mut self.record);
        let row = match self.read_next(&mut rec) {
            Next::End => None,
            Next::Unreadable(row) => Some(row),
            Next::Record(line) => Some(self.classify(&rec, line)),
        };
        self.record = rec;
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(input: &str) -> Vec<Row> {
        RecipientReader::new(input.as_bytes()).unwrap().collect()
    }

    #[test]
    fn csv_with_bom_crlf_quotes_and_blank_lines() {
        let input = "\u{feff}email,name\r\nann@example.com,\"Lee, Ann\"\r\n\r\nbo@example.com,\"multi\nline\"\r\n";
        let r = rows(input);
        assert_eq!(r.len(), 2);
        match &r[0] {
            Row::Accepted(a) => {
                assert_eq!(a.line, 2);
                assert_eq!(a.vars["name"], "Lee, Ann");
            }
            other => panic!("{other:?}"),
        }
        match &r[1] {
            Row::Accepted(a) => {
                assert_eq!(a.line, 4);
                assert_eq!(a.vars["name"], "multi\nline");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_addresses_and_duplicates() {
        let r = rows("a@example.com\nb@example.com\nA@EXAMPLE.COM\na@example.com\n");
        assert!(
            matches!(&r[2], Row::Accepted(_)),
            "local part is case-sensitive"
        );
        assert!(matches!(&r[3], Row::Duplicate { line: 4, .. }), "{r:?}");
    }

    #[test]
    fn the_key_scan_accepts_exactly_the_rows_the_reader_accepts() {
        let input: &[u8] = b"email,name\nann@example.com,Ann\nbad,Bo\nc@example.com,\xff\n\nd@example.com\ne@Example.COM,\"multi\nline\"\n\"unterminated,x\n";
        let accepted: Vec<u64> = RecipientReader::new(input)
            .unwrap()
            .filter_map(|r| match r {
                Row::Accepted(a) => Some(a.line),
                _ => None,
            })
            .collect();
        let mut reader =
            RecipientReader::with_classifier(input, RowClassifier::without_dedup()).unwrap();
        let hasher = KeyHasher::new();
        let mut keyed = Vec::new();
        while let Some((line, key)) = reader.next_key(&hasher) {
            if key.is_some() {
                keyed.push(line);
            }
        }
        assert_eq!(accepted, vec![2, 7]);
        assert_eq!(keyed, accepted);
    }

    #[test]
    fn header_without_email_column_is_an_error() {
        assert!(matches!(
            RecipientReader::new("name,city\nAnn,Oslo\n".as_bytes()),
            Err(FormatError::NoEmailColumn(_))
        ));
    }
}
