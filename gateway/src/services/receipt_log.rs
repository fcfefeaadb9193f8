//! The receipt log: this gateway's receipts, appended to a file in group commits and synced
//! (`fdatasync`) before any of their responses is released. The store's receipt tables are
//! filled from it off the request path (`receipts.rs`), and at start every record the tables
//! do not hold yet is copied into them before the gateway serves.
//!
//! On disk: a directory of segments `{first sequence, 20 digits}.rlog`, each a header (a magic
//! string and the gateway id) and then records `[payload length: u32 LE][CRC-32 of the
//! payload: u32 LE][payload]`. The payload is the receipt's sequence, hash and canonical bytes
//! and its clear subjects (the columns audit queries read), length-prefixed. A `lock` file,
//! locked while the log is open, keeps a second gateway process out.
//!
//! A crash can leave a torn tail in the newest segment (a group written in part): the first
//! record there whose length runs past the end or whose checksum fails, and everything after
//! it, is cut off at start. Its responses were never released (their sync had not returned).
//! A bad record in an older segment is damage, not a torn write: the gateway refuses to start.
//!
//! Segments roll over at [`SEGMENT_BYTES`], and at every start. A segment is deleted only once
//! every receipt in it is in a *synced* commit of the store's tables (the writer passes that
//! sequence): the tables are committed without a sync, so until then the segment is what
//! restores them after an operating-system crash.
//!
//! **Invariant:** [`ReceiptLog::append`] returns `Ok` only after the bytes and the file's
//! length are on disk; on an error the segment is cut back to its length before the call, so
//! a record never acknowledged never reappears after a later one with the same sequence.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use assent_receipts::{Digest, ReceiptSubjects};

/// A segment is closed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// A record longer than this is not a record (a receipt is well under a kilobyte).
const MAX_RECORD: usize = 16 << 20;
const MAGIC: &[u8; 16] = b"assent-rlog-v1\n\0";
const SUFFIX: &str = ".rlog";
/// How long a gateway starting waits for another holder of its log (the same gateway still
/// stopping, its indexer finishing) to let go.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("receipt log {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("receipt log {0} is in use by another gateway process")]
    Locked(PathBuf),
    #[error("receipt log {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |error| LogError::Io {
        path: path.to_owned(),
        error,
    }
}

/// One receipt as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub sequence: u64,
    pub hash: Digest,
    /// [`assent_receipts::Receipt::canonical_bytes`].
    pub body: Vec<u8>,
    pub subjects: ReceiptSubjects,
}

/// Appends one record for a receipt to `out`.
pub fn encode(out: &mut Vec<u8>, sequence: u64, hash: &Digest, body: &[u8], s: &ReceiptSubjects) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(hash.as_bytes());
    put_bytes(out, body);
    put_bytes(out, s.actor.as_bytes());
    out.extend_from_slice(&(s.patients.len() as u32).to_le_bytes());
    for p in &s.patients {
        put_bytes(out, p.as_bytes());
    }
    for opt in [&s.query, &s.client_id, &s.client_address] {
        match opt {
            Some(v) => {
                out.push(1);
                put_bytes(out, v.as_bytes());
            }
            None => out.push(0),
        }
    }
    let payload = &out[start + 8..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a payload whose checksum held. `None`: it does not decode (damage).
fn decode(payload: &[u8]) -> Option<LogRecord> {
    let mut r = payload;
    let sequence = u64::from_le_bytes(take(&mut r, 8)?.try_into().ok()?);
    let hash = Digest(take(&mut r, 32)?.try_into().ok()?);
    let body = bytes(&mut r)?.to_vec();
    let actor = text(&mut r)?;
    let n = u32::from_le_bytes(take(&mut r, 4)?.try_into().ok()?) as usize;
    let mut patients = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        patients.push(text(&mut r)?);
    }
    let mut opt = || -> Option<Option<String>> {
        match take(&mut r, 1)?[0] {
            0 => Some(None),
            1 => Some(Some(text(&mut r)?)),
            _ => None,
        }
    };
    let (query, client_id, client_address) = (opt()?, opt()?, opt()?);
    r.is_empty().then_some(LogRecord {
        sequence,
        hash,
        body,
        subjects: ReceiptSubjects {
            actor,
            patients,
            query,
            client_id,
            client_address,
        },
    })
}

fn take<'a>(r: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if r.len() < n {
        return None;
    }
    let (head, rest) = r.split_at(n);
    *r = rest;
    Some(head)
}

fn bytes<'a>(r: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = u32::from_le_bytes(take(r, 4)?.try_into().ok()?) as usize;
    take(r, n)
}

fn text(r: &mut &[u8]) -> Option<String> {
    String::from_utf8(bytes(r)?.to_vec()).ok()
}

/// What a segment's scan found.
struct Scan {
    records: Vec<LogRecord>,
    /// The length of the good part: header and whole, checked records.
    good_len: u64,
    /// Bytes after the good part (a torn tail, or damage).
    bad_bytes: u64,
}

fn header(gateway_id: &str) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    put_bytes(&mut h, gateway_id.as_bytes());
    h
}

fn scan(path: &Path, gateway_id: &str, after: u64) -> Result<Scan, LogError> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_error(path))?;
    let expected = header(gateway_id);
    if !data.starts_with(MAGIC) {
        return Err(LogError::Damaged {
            path: path.to_owned(),
            reason: "not a receipt log segment".into(),
        });
    }
    if !data.starts_with(&expected) {
        return Err(LogError::Damaged {
            path: path.to_owned(),
            reason: format!("the segment is not of gateway `{gateway_id}`"),
        });
    }
    let mut at = expected.len();
    let mut records = Vec::new();
    while data.len() - at >= 8 {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or_default());
        if len == 0 || len > MAX_RECORD || data.len() - at - 8 < len {
            break;
        }
        let payload = &data[at + 8..at + 8 + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        let record = decode(payload).ok_or_else(|| LogError::Damaged {
            path: path.to_owned(),
            reason: format!("record at byte {at} passes its checksum but does not decode"),
        })?;
        if record.sequence > after {
            records.push(record);
        }
        at += 8 + len;
    }
    Ok(Scan {
        records,
        good_len: at as u64,
        bad_bytes: (data.len() - at) as u64,
    })
}

/// The log directory, locked (created if need be): one gateway process at a time.
pub struct LogLock {
    dir: PathBuf,
    file: File,
}

impl LogLock {
    /// Locks `dir`, waiting up to `wait` for another holder to let go.
    pub fn acquire(dir: &Path, wait: std::time::Duration) -> Result<LogLock, LogError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        let deadline = std::time::Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(LogError::Locked(dir.into()));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
            }
        }
        Ok(LogLock {
            dir: dir.to_owned(),
            file,
        })
    }

    /// A second handle on the same lock: the lock holds until every handle is dropped.
    pub fn share(&self) -> Result<File, LogError> {
        self.file.try_clone().map_err(io_error(&self.dir))
    }
}

/// The open log: the newest segment, appended to by the receipt writer alone.
pub struct ReceiptLog {
    dir: PathBuf,
    gateway_id: String,
    /// Older segments still on disk: (first sequence, path).
    older: Vec<(u64, PathBuf)>,
    first_sequence: u64,
    path: PathBuf,
    file: File,
    /// Bytes in the segment that are on disk (everything appended and synced).
    len: u64,
    /// An append failed and the segment could not be cut back yet.
    broken: bool,
    _lock: File,
}

impl ReceiptLog {
    /// Opens the log in `dir` (locked by `lock`) for `gateway_id`, cuts off a torn tail, and
    /// returns the records with a sequence above `after`, in order. Call
    /// [`ReceiptLog::restart`] once they are safely elsewhere.
    pub fn open(
        lock: LogLock,
        gateway_id: &str,
        after: u64,
    ) -> Result<(ReceiptLog, Vec<LogRecord>), LogError> {
        let dir = lock.dir.clone();
        let dir = dir.as_path();
        let segments = segments(dir)?;
        let mut records: Vec<LogRecord> = Vec::new();
        for (i, (_, path)) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let scan = scan(path, gateway_id, after)?;
            if scan.bad_bytes > 0 {
                if !last {
                    return Err(LogError::Damaged {
                        path: path.clone(),
                        reason: format!(
                            "{} bytes after byte {} do not read as records",
                            scan.bad_bytes, scan.good_len
                        ),
                    });
                }
                tracing::warn!(
                    segment = %path.display(),
                    bytes = scan.bad_bytes,
                    "the receipt log ends in a torn write (never acknowledged): cut off"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_error(path))?;
                f.set_len(scan.good_len).map_err(io_error(path))?;
                f.sync_all().map_err(io_error(path))?;
            }
            for record in scan.records {
                if let Some(prev) = records.last()
                    && record.sequence != prev.sequence + 1
                {
                    return Err(LogError::Damaged {
                        path: path.clone(),
                        reason: format!(
                            "receipt {} follows receipt {}",
                            record.sequence, prev.sequence
                        ),
                    });
                }
                records.push(record);
            }
        }
        if let Some(first) = records.first()
            && first.sequence != after + 1
        {
            return Err(LogError::Damaged {
                path: dir.to_owned(),
                reason: format!(
                    "the store ends at receipt {after} but the log goes on at receipt {}",
                    first.sequence
                ),
            });
        }
        let next = records.last().map_or(after, |r| r.sequence) + 1;
        let log = ReceiptLog::create_segment(dir, gateway_id, next, segments, lock.file)?;
        Ok((log, records))
    }

    fn create_segment(
        dir: &Path,
        gateway_id: &str,
        first_sequence: u64,
        mut older: Vec<(u64, PathBuf)>,
        lock: File,
    ) -> Result<ReceiptLog, LogError> {
        let path = dir.join(format!("{first_sequence:020}{SUFFIX}"));
        // A segment of the same name holds nothing at or after `first_sequence` that is
        // wanted (the caller has every record): it is started afresh.
        older.retain(|(_, p)| *p != path);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        set_private(&file);
        let h = header(gateway_id);
        file.write_all(&h).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error(dir))?;
        Ok(ReceiptLog {
            dir: dir.to_owned(),
            gateway_id: gateway_id.to_owned(),
            older,
            first_sequence,
            path,
            file,
            len: h.len() as u64,
            broken: false,
            _lock: lock,
        })
    }

    /// Continues in a new segment starting at `next_sequence` (at start, once the records
    /// [`ReceiptLog::open`] returned are in the store) and deletes the older segments whose
    /// receipts are all at or below `synced` (in a synced commit of the store).
    pub fn restart(self, next_sequence: u64, synced: u64) -> Result<ReceiptLog, LogError> {
        let mut older = self.older;
        older.push((self.first_sequence, self.path));
        let mut log = ReceiptLog::create_segment(
            &self.dir,
            &self.gateway_id,
            next_sequence,
            older,
            self._lock,
        )?;
        log.prune(synced);
        Ok(log)
    }

    /// Appends whole records (from [`encode`]) and syncs them.
    pub fn append(&mut self, records: &[u8]) -> Result<(), LogError> {
        if self.broken {
            self.cut_back()?;
        }
        let written = self
            .file
            .write_all_at(records, self.len)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += records.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                let _ = self.cut_back();
                Err(io_error(&self.path)(e))
            }
        }
    }

    /// Cuts the segment back to its last synced length (after a failed append).
    fn cut_back(&mut self) -> Result<(), LogError> {
        self.file
            .set_len(self.len)
            .and_then(|()| self.file.sync_all())
            .map_err(io_error(&self.path))?;
        self.broken = false;
        Ok(())
    }

    /// Rolls over to a new segment when this one is full, starting at `next_sequence`, and
    /// deletes the older segments whose receipts are all in a synced commit of the store
    /// (at or below `synced`).
    pub fn roll_over_if_full(&mut self, next_sequence: u64, synced: u64) -> Result<(), LogError> {
        if self.len >= SEGMENT_BYTES {
            let dir = self.dir.clone();
            let lock = self._lock.try_clone().map_err(io_error(&dir))?;
            let mut older = std::mem::take(&mut self.older);
            older.push((self.first_sequence, self.path.clone()));
            *self = ReceiptLog::create_segment(&dir, &self.gateway_id, next_sequence, older, lock)?;
        }
        if !self.older.is_empty() {
            self.prune(synced);
        }
        Ok(())
    }

    /// The newest receipt in an older segment, when there is one: the store's tables must be
    /// synced up to it before the older segments can go.
    pub fn awaiting_sync(&self) -> Option<u64> {
        (!self.older.is_empty()).then(|| self.first_sequence.saturating_sub(1))
    }

    /// Deletes older segments whose every receipt is at or below `synced`.
    fn prune(&mut self, synced: u64) {
        let mut firsts: Vec<u64> = self.older.iter().map(|(f, _)| *f).collect();
        firsts.push(self.first_sequence);
        let mut kept = Vec::new();
        for (i, (first, path)) in std::mem::take(&mut self.older).into_iter().enumerate() {
            // The next segment starts right after this one's last receipt.
            let last = firsts[i + 1].saturating_sub(1);
            if last <= synced {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(segment = %path.display(), error = %e, "an old receipt log segment could not be deleted");
                }
            } else {
                kept.push((first, path));
            }
        }
        self.older = kept;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The segments in `dir`, oldest first.
fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(first) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((first, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// The log holds who read whose records: readable by the gateway's user only.
fn set_private(file: &File) {
    use std::os::unix::fs::PermissionsExt;
    let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(n: usize) -> ReceiptSubjects {
        ReceiptSubjects {
            actor: "dr-alice@https://idp".into(),
            patients: (0..n).map(|i| format!("st-mary/Patient/p{i}")).collect(),
            query: Some("patient=p1".into()),
            client_id: None,
            client_address: Some("127.0.0.1".into()),
        }
    }

    fn record(sequence: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let body = format!("receipt {sequence}").into_bytes();
        encode(
            &mut out,
            sequence,
            &Digest::of(&body),
            &body,
            &subjects(sequence as usize % 3),
        );
        out
    }

    fn open_log(
        dir: &Path,
        gateway_id: &str,
        after: u64,
    ) -> Result<(ReceiptLog, Vec<LogRecord>), LogError> {
        let lock = LogLock::acquire(dir, std::time::Duration::from_millis(100))?;
        ReceiptLog::open(lock, gateway_id, after)
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn records_read_back_in_order_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, none) = open_log(dir.path(), "gw", 0).unwrap();
        assert!(none.is_empty());
        log.append(&[record(1), record(2)].concat()).unwrap();
        log.append(&record(3)).unwrap();
        drop(log);
        let (_log, records) = open_log(dir.path(), "gw", 1).unwrap();
        let seqs: Vec<u64> = records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, [2, 3], "only what is after the store's head");
        assert_eq!(records[1].subjects, subjects(0));
        assert_eq!(records[0].subjects, subjects(2));
        assert_eq!(records[1].body, b"receipt 3");
        assert_eq!(records[1].hash, Digest::of(b"receipt 3"));
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_log_goes_on_after_it() {
        for cut in [1usize, 7, 8, 20] {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = open_log(dir.path(), "gw", 0).unwrap();
            log.append(&record(1)).unwrap();
            let path = log.path.clone();
            drop(log);
            // A group of two written in part: record 2 whole, record 3 torn.
            let three = record(3);
            let mut f = OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&record(2)).unwrap();
            f.write_all(&three[..three.len() - cut]).unwrap();
            drop(f);
            let (log, records) = open_log(dir.path(), "gw", 0).unwrap();
            let seqs: Vec<u64> = records.iter().map(|r| r.sequence).collect();
            assert_eq!(seqs, [1, 2], "cut {cut}");
            // Replayed elsewhere: the log restarts after them, and receipt 3 is written anew.
            let mut log = log.restart(3, 2).unwrap();
            log.append(&record(3)).unwrap();
            drop(log);
            let (_log, records) = open_log(dir.path(), "gw", 2).unwrap();
            let seqs: Vec<u64> = records.iter().map(|r| r.sequence).collect();
            assert_eq!(seqs, [3], "cut {cut}");
            assert_eq!(
                segment_files(dir.path()).len(),
                2,
                "the replayed segment is gone"
            );
        }
    }

    #[test]
    fn a_tail_record_failing_its_checksum_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open_log(dir.path(), "gw", 0).unwrap();
        log.append(&[record(1), record(2)].concat()).unwrap();
        let path = log.path.clone();
        drop(log);
        let mut data = std::fs::read(&path).unwrap();
        let last = data.len() - 3;
        data[last] ^= 0x01;
        std::fs::write(&path, &data).unwrap();
        let (_log, records) = open_log(dir.path(), "gw", 0).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].sequence, 1);
        assert!(std::fs::metadata(&path).unwrap().len() < data.len() as u64);
    }

    #[test]
    fn damage_before_the_newest_segment_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open_log(dir.path(), "gw", 0).unwrap();
        log.append(&[record(1), record(2)].concat()).unwrap();
        let first = log.path.clone();
        drop(log);
        // Not replayed: the next start writes a new segment beside the old one.
        let (mut log, records) = open_log(dir.path(), "gw", 0).unwrap();
        assert_eq!(records.len(), 2);
        log.append(&record(3)).unwrap();
        drop(log);
        let mut data = std::fs::read(&first).unwrap();
        let at = data.len() - 3;
        data[at] ^= 0x01;
        std::fs::write(&first, &data).unwrap();
        let refused = open_log(dir.path(), "gw", 0).err().unwrap();
        assert!(matches!(refused, LogError::Damaged { .. }), "{refused}");
    }

    #[test]
    fn a_gap_between_the_store_and_the_log_refuses_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open_log(dir.path(), "gw", 4).unwrap();
        log.append(&[record(7), record(8)].concat()).unwrap();
        drop(log);
        let refused = open_log(dir.path(), "gw", 4).err().unwrap();
        assert!(refused.to_string().contains("receipt 7"), "{refused}");
    }

    #[test]
    fn another_gateways_log_and_a_second_process_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) = open_log(dir.path(), "gw", 0).unwrap();
        let locked = open_log(dir.path(), "gw", 0).err().unwrap();
        assert!(matches!(locked, LogError::Locked(_)), "{locked}");
        drop(log);
        let other = open_log(dir.path(), "other-gw", 0).err().unwrap();
        assert!(other.to_string().contains("not of gateway"), "{other}");
    }

    /// ADV: whatever synced mark a restart or a roll-over is given, no segment holding a
    /// receipt above it is deleted: a start whose store lost every commit after the mark
    /// (an operating-system crash under `synchronous = NORMAL`) still finds every receipt
    /// after it in the log, without a gap.
    #[test]
    fn a_segment_holding_a_receipt_above_the_synced_mark_is_never_deleted() {
        for synced in 0..=3u64 {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = open_log(dir.path(), "gw", 0).unwrap();
            log.append(&[record(1), record(2)].concat()).unwrap();
            drop(log);
            // A start whose store holds receipts 1 and 2 (not necessarily synced).
            let (log, records) = open_log(dir.path(), "gw", 2).unwrap();
            assert!(records.is_empty());
            let mut log = log.restart(3, synced).unwrap();
            log.append(&record(3)).unwrap();
            log.len = SEGMENT_BYTES; // as if full
            log.roll_over_if_full(4, synced).unwrap();
            log.append(&record(4)).unwrap();
            assert_eq!(
                log.awaiting_sync().is_some(),
                synced < 3,
                "synced {synced}: an older segment waits for a synced commit"
            );
            drop(log);
            let (_log, records) = open_log(dir.path(), "gw", synced)
                .unwrap_or_else(|e| panic!("synced {synced}: {e}"));
            let seqs: Vec<u64> = records.iter().map(|r| r.sequence).collect();
            assert_eq!(
                seqs,
                (synced + 1..=4).collect::<Vec<_>>(),
                "synced {synced}"
            );
        }
    }

    #[test]
    fn old_segments_go_once_their_receipts_are_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open_log(dir.path(), "gw", 0).unwrap();
        log.append(&[record(1), record(2)].concat()).unwrap();
        log.len = SEGMENT_BYTES; // as if full
        log.roll_over_if_full(3, 1).unwrap();
        log.append(&record(3)).unwrap();
        assert_eq!(
            segment_files(dir.path()).len(),
            2,
            "receipt 2 is not indexed yet"
        );
        log.roll_over_if_full(4, 2).unwrap();
        assert_eq!(segment_files(dir.path()).len(), 1);
        drop(log);
        let (_log, records) = open_log(dir.path(), "gw", 2).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].sequence, 3);
    }
}
