//! The sample of rejected rows a submit keeps (in the campaign record and in its answer),
//! bounded by count and by bytes: a record must stay well below the broker's max payload
//! (1 MiB by default), or every later write of it fails and the campaign stays `publishing`.
//! Every rejected row is still counted; only the sample is bounded.

use jetmail_common::wire::RejectedRow;

/// Rows kept at most.
pub const MAX_ROWS: usize = 1000;
/// Bytes of address and reason kept at most, over the whole sample.
pub const MAX_BYTES: usize = 64 * 1024;
/// Bytes kept of one row's address or reason; a longer one is cut and ends in `…`.
pub const MAX_FIELD_BYTES: usize = 256;

/// Rejected rows, as many as fit.
#[derive(Debug, Default)]
pub struct RejectedSample {
    rows: Vec<RejectedRow>,
    bytes: usize,
}

impl RejectedSample {
    /// Keeps `row` (its fields cut to [`MAX_FIELD_BYTES`]) while the sample has room.
    pub fn push(&mut self, mut row: RejectedRow) {
        if self.rows.len() >= MAX_ROWS {
            return;
        }
        cut(&mut row.email);
        cut(&mut row.reason);
        let size = row.email.len() + row.reason.len();
        if self.bytes + size > MAX_BYTES {
            return;
        }
        self.bytes += size;
        self.rows.push(row);
    }

    pub fn first(&self) -> Option<&RejectedRow> {
        self.rows.first()
    }

    pub fn into_rows(self) -> Vec<RejectedRow> {
        self.rows
    }
}

/// Cuts `s` to at most [`MAX_FIELD_BYTES`] on a character boundary, marking the cut.
fn cut(s: &mut String) {
    if s.len() <= MAX_FIELD_BYTES {
        return;
    }
    let mut end = MAX_FIELD_BYTES - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: u64, email: &str) -> RejectedRow {
        RejectedRow {
            line,
            email: email.into(),
            reason: format!("invalid address: {email}"),
        }
    }

    #[test]
    fn long_rows_are_cut_and_the_sample_is_bounded_by_bytes() {
        let mut sample = RejectedSample::default();
        let long = "é".repeat(1_000_000);
        for line in 2..10_000 {
            sample.push(row(line, &long));
        }
        let rows = sample.into_rows();
        let bytes: usize = rows.iter().map(|r| r.email.len() + r.reason.len()).sum();
        assert!(bytes <= MAX_BYTES, "{bytes}");
        assert_eq!(rows.len(), MAX_BYTES / (2 * MAX_FIELD_BYTES));
        assert!(rows[0].email.ends_with('…') && rows[0].email.len() <= MAX_FIELD_BYTES);
        assert_eq!(rows[0].line, 2);
    }

    #[test]
    fn short_rows_are_kept_whole_up_to_the_count() {
        let mut sample = RejectedSample::default();
        for line in 0..5000 {
            sample.push(row(line, "not-an-address"));
        }
        let rows = sample.into_rows();
        assert_eq!(rows.len(), MAX_ROWS);
        assert_eq!(rows[999].email, "not-an-address");
    }
}
