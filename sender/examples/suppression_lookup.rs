//! The per-message cost of the suppression check and the memory of the in-memory list, at a
//! million entries: `cargo run --release -p jetmail-sender --example suppression_lookup`.

use std::time::Instant;

use jetmail_common::compliance::address_key_bits;
use jetmail_sender::suppressions::Suppressions;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let before = rss_mib();
    let set = Suppressions::new();
    let started = Instant::now();
    for i in 0..n {
        set.insert_for_bench(address_key_bits(&format!("gone{i}@suppressed.example")).unwrap());
    }
    println!(
        "{n} entries: built in {:.2}s, +{:.1} MiB RSS",
        started.elapsed().as_secs_f64(),
        rss_mib() - before
    );
    for (what, fmt) in [
        ("miss", "user{}@Example.com"),
        ("hit", "gone{}@SUPPRESSED.example"),
    ] {
        let m = 200_000;
        let started = Instant::now();
        let mut found = 0;
        for i in 0..m {
            found += set.contains(&fmt.replace("{}", &i.to_string())) as usize;
        }
        let per = started.elapsed().as_nanos() as f64 / m as f64;
        println!("contains ({what}): {per:.0} ns per message ({found} of {m} suppressed)");
    }
}
