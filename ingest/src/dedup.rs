//! Duplicate detection for files with memory that does not grow with the file: a first pass
//! writes (address hash, line) pairs in sorted runs of fixed size to temporary files, a k-way
//! merge finds every line that repeats an earlier address, and the publishing pass skips
//! exactly those. Only the duplicates' line numbers stay in memory.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::recipients::{FormatError, KeyHasher, RecipientReader, RowClassifier};

/// Pairs sorted in memory before a run is written: 24 bytes each, 3 MiB a run.
const RUN_LEN: usize = 128 * 1024;
const RECORD: usize = 24;

/// Writes a sorted run to an anonymous temporary file in `dir` and returns it, rewound.
/// `tempfile` opens it unnamed (or unlinked at once, under a random name opened exclusively):
/// no other user of a shared `/tmp` can guess, pre-create or read it, and nothing is left
/// behind when the process dies.
fn spill(run: &mut Vec<(u128, u64)>, dir: &Path) -> Result<File, FormatError> {
    run.sort_unstable();
    let file = tempfile::tempfile_in(dir)?;
    let mut w = BufWriter::with_capacity(64 * 1024, file);
    for (hash, line) in run.drain(..) {
        w.write_all(&hash.to_le_bytes())?;
        w.write_all(&line.to_le_bytes())?;
    }
    let mut file = w.into_inner().map_err(|e| e.into_error())?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    Ok(file)
}

fn next_record(r: &mut BufReader<File>) -> Result<Option<(u128, u64)>, FormatError> {
    let mut buf = [0u8; RECORD];
    match r.read_exact(&mut buf) {
        Ok(()) => {
            let hash = u128::from_le_bytes(buf[..16].try_into().expect("16 bytes"));
            let line = u64::from_le_bytes(buf[16..].try_into().expect("8 bytes"));
            Ok(Some((hash, line)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Lines of `input` whose address appeared on an earlier line. `bytes_read` follows the scan
/// for a progress bar; runs go to `spill_dir` when the input is large.
pub fn duplicate_lines<R: Read>(
    input: R,
    spill_dir: &Path,
    bytes_read: &AtomicU64,
) -> Result<HashSet<u64>, FormatError> {
    let mut reader = RecipientReader::with_classifier(input, RowClassifier::without_dedup())?;
    let hasher = KeyHasher::new();
    let mut run: Vec<(u128, u64)> = Vec::with_capacity(RUN_LEN);
    let mut runs: Vec<File> = Vec::new();
    while let Some((line, key)) = reader.next_key(&hasher) {
        if let Some(hash) = key {
            run.push((hash, line));
            if run.len() == RUN_LEN {
                runs.push(spill(&mut run, spill_dir)?);
                bytes_read.store(reader.byte_offset(), Ordering::Relaxed);
            }
        }
    }
    bytes_read.store(reader.byte_offset(), Ordering::Relaxed);
    let mut dups = HashSet::new();
    let mut previous: Option<u128> = None;
    let mut note = |hash: u128, line: u64| {
        // Sorted by (hash, line): the first of equal hashes is the earliest line, kept.
        if previous == Some(hash) {
            dups.insert(line);
        } else {
            previous = Some(hash);
        }
    };
    if runs.is_empty() {
        run.sort_unstable();
        for (hash, line) in run {
            note(hash, line);
        }
        return Ok(dups);
    }
    if !run.is_empty() {
        runs.push(spill(&mut run, spill_dir)?);
    }
    let mut readers: Vec<BufReader<File>> = runs
        .into_iter()
        .map(|f| BufReader::with_capacity(64 * 1024, f))
        .collect();
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some((h, l)) = next_record(r)? {
            heap.push(Reverse((h, l, i)));
        }
    }
    while let Some(Reverse((hash, line, i))) = heap.pop() {
        note(hash, line);
        if let Some((h, l)) = next_record(&mut readers[i])? {
            heap.push(Reverse((h, l, i)));
        }
    }
    Ok(dups)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &str) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let mut v: Vec<u64> = duplicate_lines(input.as_bytes(), dir.path(), &AtomicU64::new(0))
            .unwrap()
            .into_iter()
            .collect();
        // Spilled runs leave nothing behind, even while they are in use.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        v.sort_unstable();
        v
    }

    #[test]
    fn finds_later_repeats_only() {
        let input = "email\na@example.com\nb@example.com\nA@EXAMPLE.COM\na@Example.com\nbad\nb@example.com\n";
        // Line 4 differs in the local part's case (a different mailbox); 5 and 7 repeat 2 and 3.
        assert_eq!(lines(input), vec![5, 7]);
    }

    #[test]
    fn a_rejected_row_hides_no_later_address() {
        // Line 2 is refused (a column that is not UTF-8, one field too many on line 3): the
        // same address on line 4 is its first valid occurrence, published, not a duplicate.
        let input = b"email,name\na@example.com,\xff\na@example.com,Ann,extra\na@example.com,Ann\na@example.com,Bo\n";
        let dir = tempfile::tempdir().unwrap();
        let d = duplicate_lines(&input[..], dir.path(), &AtomicU64::new(0)).unwrap();
        assert_eq!(d, HashSet::from([5]));
    }

    #[test]
    fn spills_and_merges_large_inputs() {
        let n = RUN_LEN * 2 + 1000;
        let mut input = String::from("email\n");
        for i in 0..n {
            input.push_str(&format!("u{}@example.com\n", i % (n - 500)));
        }
        let d = lines(&input);
        // The last 500 rows repeat the first 500 addresses.
        assert_eq!(d.len(), 500);
        assert_eq!(d[0], (n - 500) as u64 + 2);
    }
}
