//! A write-ahead log for the embedded key-value backends: the writes of a
//! batch ([`Write`]s: table, key, new value or deletion) appended to one file
//! and `fdatasync`ed, so that a durable write costs one append and one sync
//! of a small file, not a sync of the database's pages.
//!
//! The database is then written without syncing; it is made durable now and
//! then (a *checkpoint*: one synced commit of the database, after which the
//! log is emptied), and when the store is closed. Each batch's writes record
//! the batch's log sequence number (LSN) in the database as well, so after a
//! crash the store replays the records of the log whose LSN is above the one
//! the database holds, in order, onto the database's last durable state.
//! Replaying is idempotent: a record holds the new values, not differences.
//!
//! The file starts with a header, `WFWAL001 ++ base u64 ++ crc32 u32` and
//! padding to 32 bytes, then records. A record is `len u32 ++ crc32 u32 ++
//! body`, little-endian, where the body is `lsn u64 ++ count u32` and, per
//! write, `table name (u8 length, bytes) ++ key (u32 length, bytes) ++ 0 | 1
//! ++ value (u32 length, bytes, if 1)`. The records of the log are those
//! after the header whose LSNs run on from the header's base: `base + 1`,
//! `base + 2`, ... A record cut short by a crash, one whose checksum does not
//! match, or one out of that sequence ends the log: it and anything after it
//! were never acknowledged (each acknowledged write was synced whole before
//! its answer), or are left from before a checkpoint.
//!
//! The file is preallocated (zeros written ahead, 4 MiB at a time) and
//! records overwrite it in place, so a record's `fdatasync` writes the data
//! only, not the file's new size as an append would (measured here: 0.10 ms
//! against 0.13 ms for 128 bytes). Emptying the log after a checkpoint
//! rewrites the header with the last LSN as base, and the next records
//! overwrite the old ones from the start; closing the store also gives the
//! preallocated space back.
//!
//! Once a write to the log fails in a way that leaves its content unknown (a
//! failed `fdatasync`, or a failed cut-back after a failed append), the log
//! refuses every later write until the store is reopened: what is on disk is
//! then found out by the replay, not guessed.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::kv::{Table, Write};

/// The log's file name in the store's directory.
pub(crate) const WAL_FILE: &str = "wal";

/// Key in the `meta` table of the LSN of the last batch written to the
/// database (redb; sled replays every record since the last checkpoint).
#[cfg_attr(not(feature = "redb"), allow(dead_code))]
pub(crate) const WAL_LSN_KEY: &[u8] = b"wal_lsn";

/// Size of the log above which the writer makes a checkpoint.
pub(crate) const CHECKPOINT_BYTES: u64 = 32 << 20;

/// A record's header: body length and checksum.
const HEADER: usize = 8;

/// The smallest body: an LSN and a count.
const MIN_BODY: usize = 12;

/// The largest body the log accepts (and reads back).
const MAX_BODY: usize = 1 << 30;

/// The file's header: magic, base LSN, checksum, padding.
const FILE_HEADER: u64 = 32;

const MAGIC: &[u8; 8] = b"WFWAL001";

/// How much the file grows at a time, written with zeros.
const PREALLOCATE: u64 = 4 << 20;

/// One record read back: its LSN and writes.
pub(crate) type Record = (u64, Vec<Write>);

/// The open log (see the module docs).
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes of whole records after the file's header.
    len: u64,
    /// Bytes of the file (preallocated beyond the records).
    allocated: u64,
    /// The LSN the next record gets.
    next_lsn: u64,
    /// Why the log refuses writes, once it does.
    broken: Option<String>,
}

fn io_error(path: &Path, doing: &str, e: std::io::Error) -> StoreError {
    StoreError::backend(
        format!("{doing} the write-ahead log {} failed: {e}", path.display()),
        e,
    )
}

fn damaged(path: &Path, detail: String) -> StoreError {
    StoreError::Damaged {
        location: format!("the write-ahead log {}", path.display()),
        detail,
    }
}

fn file_header(base: u64) -> [u8; FILE_HEADER as usize] {
    let mut h = [0u8; FILE_HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The base LSN of a file header; `None` if it is not one.
fn read_header(bytes: &[u8]) -> Option<u64> {
    let h = bytes.get(..FILE_HEADER as usize)?;
    if &h[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(h[16..20].try_into().ok()?);
    if crc32fast::hash(&h[..16]) != crc {
        return None;
    }
    Some(u64::from_le_bytes(h[8..16].try_into().ok()?))
}

impl Wal {
    /// Opens (or creates) the log in `dir`. Returns it, positioned after its
    /// last record, with the records whose LSN is above `applied` (the
    /// database's), in order, for the caller to replay.
    pub(crate) fn open(dir: &Path, applied: u64) -> Result<(Wal, Vec<Record>), StoreError> {
        let path = dir.join(WAL_FILE);
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_error(&path, "opening", e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(&path, "reading", e))?;
        if bytes.is_empty() {
            // New: a header with base `applied`, durable with its name.
            file.write_all(&file_header(applied))
                .and_then(|()| file.sync_all())
                .map_err(|e| io_error(&path, "creating", e))?;
            if !existed {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io_error(&path, "syncing the directory of", e))?;
            }
            bytes = file_header(applied).to_vec();
        }
        let base = read_header(&bytes).ok_or_else(|| {
            damaged(
                &path,
                "its header is not a write-ahead log header (or is damaged)".into(),
            )
        })?;
        let mut records = Vec::new();
        let mut pos = FILE_HEADER as usize;
        let mut last_lsn = base;
        while let Some((body, next)) = whole_record(&bytes, pos) {
            let (lsn, writes) = decode_body(body).map_err(|detail| {
                damaged(
                    &path,
                    format!(
                        "record at byte {pos} passes its checksum but does not decode: {detail}"
                    ),
                )
            })?;
            if lsn != last_lsn + 1 {
                // Left from before the last checkpoint: the log ends here.
                break;
            }
            if lsn > applied {
                records.push((lsn, writes));
            }
            last_lsn = lsn;
            pos = next;
        }
        file.seek(SeekFrom::Start(pos as u64))
            .map_err(|e| io_error(&path, "seeking in", e))?;
        let wal = Wal {
            file,
            path,
            len: pos as u64 - FILE_HEADER,
            allocated: bytes.len() as u64,
            next_lsn: last_lsn.max(applied) + 1,
            broken: None,
        };
        Ok((wal, records))
    }

    /// The LSN the next appended record gets.
    #[cfg_attr(not(feature = "redb"), allow(dead_code))]
    pub(crate) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    fn refused(&self) -> Result<(), StoreError> {
        match &self.broken {
            Some(why) => Err(StoreError::Backend {
                message: format!(
                    "the write-ahead log {} failed earlier ({why}): reopen the store",
                    self.path.display()
                ),
                source: None,
            }),
            None => Ok(()),
        }
    }

    /// Appends a record of `writes` with LSN [`Wal::next_lsn`], and with
    /// `sync` waits until it is on disk. On an error the record is not in
    /// the log (or the log refuses all further writes, see the module docs).
    pub(crate) fn append(&mut self, writes: &[Write], sync: bool) -> Result<u64, StoreError> {
        self.refused()?;
        let lsn = self.next_lsn;
        let record = encode_record(lsn, writes).map_err(|detail| StoreError::Backend {
            message: format!("a batch could not be logged: {detail}"),
            source: None,
        })?;
        let end = FILE_HEADER + self.len + record.len() as u64;
        if end > self.allocated {
            self.grow(end)?;
        }
        if let Err(e) = self.file.write_all(&record) {
            // Whatever part of it was written is not a whole record: the log
            // still ends where it did. Write from there next time.
            let at = FILE_HEADER + self.len;
            if let Err(seek) = self.file.seek(SeekFrom::Start(at)) {
                self.broken = Some(format!(
                    "an append failed ({e}) and the log could not be rewound: {seek}"
                ));
            }
            return Err(io_error(&self.path, "appending to", e));
        }
        self.len += record.len() as u64;
        self.next_lsn += 1;
        if sync {
            self.sync()?;
        }
        Ok(lsn)
    }

    /// Writes zeros from the end of the file up past `end` (4 MiB steps),
    /// synced, so records then overwrite allocated space.
    fn grow(&mut self, end: u64) -> Result<(), StoreError> {
        let target = end.div_ceil(PREALLOCATE) * PREALLOCATE;
        let zeros = vec![0u8; (target - self.allocated) as usize];
        let at = FILE_HEADER + self.len;
        let grown = self
            .file
            .seek(SeekFrom::Start(self.allocated))
            .and_then(|_| self.file.write_all(&zeros))
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.file.seek(SeekFrom::Start(at)).map(drop));
        match grown {
            Ok(()) => {
                self.allocated = target;
                Ok(())
            }
            Err(e) => {
                // Where the file position is now is unknown.
                self.broken = Some(format!("growing it failed: {e}"));
                Err(io_error(&self.path, "growing", e))
            }
        }
    }

    /// Waits until every record appended so far is on disk.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|e| {
            // After a failed fsync the kernel may have dropped the pages:
            // what is durable is unknown until the log is read again.
            self.broken = Some(format!("fdatasync failed: {e}"));
            io_error(&self.path, "syncing", e)
        })
    }

    /// Takes back the records after `len` (their batch could not be
    /// committed to the database): the log ends where it did before them.
    /// Their bytes stay, but out of the LSN sequence once overwritten or
    /// after a reopen, they are ignored: the next record reuses their LSN
    /// and place.
    #[cfg_attr(not(feature = "redb"), allow(dead_code))]
    pub(crate) fn take_back(&mut self, len: u64) -> Result<(), StoreError> {
        let taken = self.len.saturating_sub(len);
        if taken == 0 {
            return Ok(());
        }
        // Zero the taken record's header, durably, so a reopen stops there.
        let at = FILE_HEADER + len;
        let cut = self
            .file
            .seek(SeekFrom::Start(at))
            .and_then(|_| self.file.write_all(&[0u8; HEADER]))
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.file.seek(SeekFrom::Start(at)).map(drop));
        match cut {
            Ok(()) => {
                self.len = len;
                self.next_lsn -= 1;
                Ok(())
            }
            Err(e) => {
                self.broken = Some(format!("a record could not be taken back: {e}"));
                Err(io_error(&self.path, "cutting back", e))
            }
        }
    }

    /// Refuses every later write (until the store is reopened): the
    /// database went ahead of the log.
    #[cfg_attr(not(feature = "sled"), allow(dead_code))]
    pub(crate) fn refuse(&mut self, why: String) {
        self.broken.get_or_insert(why);
    }

    /// Bytes of records in the log.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Empties the log, once the database holds every record durably: the
    /// header's base becomes the last LSN, and records are written from the
    /// start again.
    pub(crate) fn reset(&mut self) -> Result<(), StoreError> {
        self.refused()?;
        let header = file_header(self.next_lsn - 1);
        let done = self
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&header))
            .and_then(|()| self.file.sync_data());
        match done {
            Ok(()) => {
                self.len = 0;
                Ok(())
            }
            Err(e) => {
                self.broken = Some(format!("emptying it failed: {e}"));
                Err(io_error(&self.path, "emptying", e))
            }
        }
    }

    /// [`Wal::reset`], and gives the preallocated space back: for closing.
    pub(crate) fn close(&mut self) -> Result<(), StoreError> {
        self.reset()?;
        self.file
            .set_len(FILE_HEADER)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| io_error(&self.path, "shrinking", e))?;
        self.allocated = FILE_HEADER;
        Ok(())
    }
}

/// The body of the whole, intact record at `pos`, and where the next one
/// starts; `None` at the end of the log or at a torn or damaged record.
fn whole_record(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(pos..pos.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if !(MIN_BODY..=MAX_BODY).contains(&len) {
        // Zeros (preallocated space) or garbage: the end.
        return None;
    }
    let start = pos + HEADER;
    let body = bytes.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(body) == crc).then_some((body, start + len))
}

fn encode_record(lsn: u64, writes: &[Write]) -> Result<Vec<u8>, String> {
    // One buffer: the header's length and checksum are filled in last.
    let mut record = Vec::with_capacity(
        HEADER
            + MIN_BODY
            + writes
                .iter()
                .map(|(_, k, v)| 16 + k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>(),
    );
    record.extend_from_slice(&[0u8; HEADER]);
    record.extend_from_slice(&lsn.to_le_bytes());
    let count = u32::try_from(writes.len()).map_err(|_| "too many writes in one batch")?;
    record.extend_from_slice(&count.to_le_bytes());
    for (table, key, value) in writes {
        let name = table.name().as_bytes();
        record.push(u8::try_from(name.len()).map_err(|_| "table name too long")?);
        record.extend_from_slice(name);
        let klen = u32::try_from(key.len()).map_err(|_| "key too long")?;
        record.extend_from_slice(&klen.to_le_bytes());
        record.extend_from_slice(key);
        match value {
            Some(v) => {
                record.push(1);
                let vlen = u32::try_from(v.len()).map_err(|_| "value too long")?;
                record.extend_from_slice(&vlen.to_le_bytes());
                record.extend_from_slice(v);
            }
            None => record.push(0),
        }
    }
    let body_len = record.len() - HEADER;
    if body_len > MAX_BODY {
        return Err(format!("a batch of {body_len} bytes is too large to log"));
    }
    let crc = crc32fast::hash(&record[HEADER..]);
    record[0..4].copy_from_slice(&(body_len as u32).to_le_bytes());
    record[4..8].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}

/// Reads a record's body; the error says what does not fit.
fn decode_body(body: &[u8]) -> Result<Record, String> {
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    let lsn = u64::from_le_bytes(r.take(8)?.try_into().map_err(|_| "lsn")?);
    let count = r.u32()? as usize;
    let mut writes = Vec::with_capacity(count.min(1 << 16));
    for _ in 0..count {
        let name_len = r.take(1)?[0] as usize;
        let name = r.take(name_len)?;
        let table = Table::ALL
            .into_iter()
            .find(|t| t.name().as_bytes() == name)
            .ok_or_else(|| format!("unknown table {:?}", String::from_utf8_lossy(name)))?;
        let klen = r.u32()? as usize;
        let key = r.take(klen)?.to_vec();
        let value = match r.take(1)?[0] {
            0 => None,
            1 => {
                let vlen = r.u32()? as usize;
                Some(r.take(vlen)?.to_vec())
            }
            other => return Err(format!("bad value marker {other}")),
        };
        writes.push((table, key, value));
    }
    if r.pos != body.len() {
        return Err(format!("{} bytes after the last write", body.len() - r.pos));
    }
    Ok((lsn, writes))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflows")?;
        let out = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| format!("cut short at byte {}", self.pos))?;
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().map_err(|_| "u32")?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn writes() -> impl Strategy<Value = Vec<Write>> {
        prop::collection::vec(
            (
                prop::sample::select(Table::ALL.to_vec()),
                prop::collection::vec(any::<u8>(), 0..40),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
            ),
            0..8,
        )
    }

    /// Damages the log's bytes from `at` on (a crash while writing leaves
    /// whatever was there), keeping the file's size.
    fn tear(path: &Path, at: u64) {
        let mut bytes = std::fs::read(path).unwrap();
        for b in bytes.iter_mut().skip(at as usize) {
            *b = 0xAA;
        }
        std::fs::write(path, &bytes).unwrap();
    }

    proptest! {
        /// What is appended is read back in order, above the applied LSN;
        /// a log torn anywhere keeps exactly the whole records before the
        /// tear, and goes on after them.
        #[test]
        fn records_round_trip_and_a_tear_keeps_whole_records(
            batches in prop::collection::vec(writes(), 1..6),
            applied in 0u64..4,
            tear_back in 0usize..300,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut ends = Vec::new();
            {
                let (mut wal, old) = Wal::open(dir.path(), 0).unwrap();
                prop_assert!(old.is_empty());
                for b in &batches {
                    wal.append(b, true).unwrap();
                    ends.push(wal.len());
                }
            }
            let (wal, back) = Wal::open(dir.path(), applied).unwrap();
            let want: Vec<Record> = batches
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, w)| (i as u64 + 1, w))
                .filter(|(lsn, _)| *lsn > applied)
                .collect();
            prop_assert_eq!(back, want);
            // Above both the log's records and the database's position.
            prop_assert_eq!(wal.next_lsn(), (batches.len() as u64).max(applied) + 1);
            let total = wal.len();
            drop(wal);

            let path = dir.path().join(WAL_FILE);
            let cut = total.saturating_sub(tear_back as u64);
            tear(&path, FILE_HEADER + cut);
            let (mut wal, back) = Wal::open(dir.path(), 0).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(back.len(), whole);
            prop_assert_eq!(wal.len(), if whole == 0 { 0 } else { ends[whole - 1] });
            // The log goes on after the tear.
            let lsn = wal.append(&batches[0], true).unwrap();
            prop_assert_eq!(lsn, whole as u64 + 1);
            drop(wal);
            let (_, back) = Wal::open(dir.path(), 0).unwrap();
            prop_assert_eq!(back.len(), whole + 1);
        }
    }

    #[test]
    fn a_damaged_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let w: Vec<Write> = vec![(Table::Runs, b"k".to_vec(), Some(b"v".to_vec()))];
        let end = {
            let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
            wal.append(&w, true).unwrap();
            wal.append(&w, true).unwrap();
            wal.len()
        };
        let path = dir.path().join(WAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = (FILE_HEADER + end - 1) as usize;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (wal, back) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(wal.next_lsn(), 2);
    }

    #[test]
    fn reset_empties_and_take_back_removes_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let w: Vec<Write> = vec![(Table::Queue, b"q".to_vec(), None)];
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(&w, true).unwrap();
        let start = wal.len();
        wal.append(&w, false).unwrap();
        wal.take_back(start).unwrap();
        assert_eq!(wal.next_lsn(), 2);
        drop(wal);
        let (mut wal, back) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(back.len(), 1);
        wal.reset().unwrap();
        assert_eq!(wal.len(), 0);
        // LSNs keep growing after a reset; the old records are not read back.
        assert_eq!(wal.append(&w, true).unwrap(), 2);
        drop(wal);
        let (mut wal, back) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(back.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2]);
        // Closing empties it and gives the space back.
        wal.close().unwrap();
        drop(wal);
        assert_eq!(
            std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len(),
            FILE_HEADER
        );
        let (wal, back) = Wal::open(dir.path(), 0).unwrap();
        assert!(back.is_empty());
        assert_eq!(wal.next_lsn(), 3);
    }

    /// After a reset, records from before it that are longer than the new
    /// ones are still in the file: the LSN sequence keeps them out.
    #[test]
    fn records_from_before_a_reset_are_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let long: Vec<Write> = vec![(Table::Events, vec![1; 64], Some(vec![2; 500]))];
        let short: Vec<Write> = vec![(Table::Runs, b"r".to_vec(), None)];
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        for _ in 0..5 {
            wal.append(&long, true).unwrap();
        }
        wal.reset().unwrap();
        wal.append(&short, true).unwrap();
        drop(wal);
        let (wal, back) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(back, vec![(6, short)]);
        assert_eq!(wal.next_lsn(), 7);
    }

    #[test]
    fn the_file_is_preallocated_and_overwritten_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let w: Vec<Write> = vec![(Table::Runs, b"k".to_vec(), Some(vec![0; 100]))];
        let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
        wal.append(&w, true).unwrap();
        let size = std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len();
        assert_eq!(size, PREALLOCATE);
        for _ in 0..100 {
            wal.append(&w, true).unwrap();
        }
        assert_eq!(
            std::fs::metadata(dir.path().join(WAL_FILE)).unwrap().len(),
            size,
            "appends within the allocation do not grow the file"
        );
    }

    #[test]
    fn a_file_that_is_not_a_log_is_damaged_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(WAL_FILE),
            b"not a write-ahead log at all, sorry",
        )
        .unwrap();
        assert!(matches!(
            Wal::open(dir.path(), 0),
            Err(StoreError::Damaged { .. })
        ));
    }
}
