//! Times `fdatasync` on a disk while something else runs there: appends a small record to a
//! scratch file in DIR and syncs it, every 5 ms for SECONDS, then prints one line with the
//! p50, p99 and largest sync time (the fsync figures of the latency run in `benches/run.sh`).
//!
//! Usage: `fsync_probe DIR [SECONDS]`. The scratch file is removed at the end.

use std::io::Write;
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: fsync_probe DIR [SECONDS]"));
    let seconds: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10.0);
    let path = dir.join(format!("fsync-probe-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("the scratch file opens");
    let record = [0x5au8; 128];
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut times = Vec::new();
    while Instant::now() < deadline {
        let at = Instant::now();
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
        times.push(at.elapsed().as_secs_f64() * 1e6);
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    times.sort_by(f64::total_cmp);
    if times.is_empty() {
        println!("fsync: no sample");
        return;
    }
    let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "fsync (fdatasync of a 128-byte append, every 5 ms) p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} syncs)",
        at(0.5),
        at(0.99),
        times[times.len() - 1],
        times.len()
    );
}
