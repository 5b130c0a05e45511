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
//! A record is `len u32 ++ crc32 u32 ++ body`, little-endian, where the body
//! is `lsn u64 ++ count u32` and, per write, `table name (u8 length, bytes)
//! ++ key (u32 length, bytes) ++ 0 | 1 ++ value (u32 length, bytes, if 1)`.
//! A record cut short by a crash, or whose checksum does not match, ends the
//! log: it and anything after it were never acknowledged (each acknowledged
//! write was synced whole before its answer), and are cut off when the log is
//! opened.
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

/// The largest body the log accepts (and reads back).
const MAX_BODY: usize = 1 << 30;

/// One record read back: its LSN and writes.
pub(crate) type Record = (u64, Vec<Write>);

/// The open log (see the module docs).
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes of whole records in the file.
    len: u64,
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

impl Wal {
    /// Opens (or creates) the log in `dir`. Returns it, positioned after its
    /// last whole record, with the records whose LSN is above `applied` (the
    /// database's), in order, for the caller to replay. A torn or corrupt
    /// tail is cut off.
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
        if !existed {
            // The new file's name must survive a crash as well.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(&path, "syncing the directory of", e))?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| io_error(&path, "reading", e))?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        let mut last_lsn = applied;
        while let Some((body, next)) = whole_record(&bytes, pos) {
            let (lsn, writes) = decode_body(body).map_err(|detail| {
                damaged(
                    &path,
                    format!(
                        "record at byte {pos} passes its checksum but does not decode: {detail}"
                    ),
                )
            })?;
            if lsn > applied {
                records.push((lsn, writes));
            }
            last_lsn = last_lsn.max(lsn);
            pos = next;
        }
        if pos < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                kept = pos,
                cut = bytes.len() - pos,
                "the write-ahead log ends with a partial or damaged record (a crash while it was \
                 written, before it was acknowledged): cutting it off"
            );
            file.set_len(pos as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_error(&path, "cutting the torn tail of", e))?;
        }
        file.seek(SeekFrom::Start(pos as u64))
            .map_err(|e| io_error(&path, "seeking in", e))?;
        let wal = Wal {
            file,
            path,
            len: pos as u64,
            next_lsn: last_lsn + 1,
            broken: None,
        };
        Ok((wal, records))
    }

    /// The LSN the next appended record gets.
    #[cfg_attr(not(feature = "redb"), allow(dead_code))]
    pub(crate) fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Appends a record of `writes` with LSN [`Wal::next_lsn`], and with
    /// `sync` waits until it is on disk. On an error the record is not in
    /// the log (or the log refuses all further writes, see the module docs).
    pub(crate) fn append(&mut self, writes: &[Write], sync: bool) -> Result<u64, StoreError> {
        if let Some(why) = &self.broken {
            return Err(StoreError::Backend {
                message: format!(
                    "the write-ahead log {} failed earlier ({why}): reopen the store",
                    self.path.display()
                ),
                source: None,
            });
        }
        let lsn = self.next_lsn;
        let record = encode_record(lsn, writes).map_err(|detail| StoreError::Backend {
            message: format!("a batch could not be logged: {detail}"),
            source: None,
        })?;
        if let Err(e) = self.file.write_all(&record) {
            // Take the partial record back, or stop: a torn record in the
            // middle of the log would hide every record after it.
            let back = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(drop));
            if let Err(cut) = back {
                self.broken = Some(format!(
                    "an append failed ({e}) and could not be taken back: {cut}"
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

    /// Waits until every record appended so far is on disk.
    pub(crate) fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|e| {
            // After a failed fsync the kernel may have dropped the pages:
            // what is durable is unknown until the log is read again.
            self.broken = Some(format!("fdatasync failed: {e}"));
            io_error(&self.path, "syncing", e)
        })
    }

    /// Takes back the last record (its batch could not be committed to the
    /// database): the log ends where it did before it.
    #[cfg_attr(not(feature = "redb"), allow(dead_code))]
    pub(crate) fn take_back(&mut self, record_start: u64) -> Result<(), StoreError> {
        let cut = self
            .file
            .set_len(record_start)
            .and_then(|()| self.file.seek(SeekFrom::Start(record_start)).map(drop))
            .and_then(|()| self.file.sync_data());
        match cut {
            Ok(()) => {
                self.len = record_start;
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

    /// Empties the log, once the database holds every record durably.
    pub(crate) fn reset(&mut self) -> Result<(), StoreError> {
        let cut = self
            .file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| self.file.sync_data());
        match cut {
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
}

/// The body of the whole, intact record at `pos`, and where the next one
/// starts; `None` at the end of the log or at a torn or damaged record.
fn whole_record(bytes: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(pos..pos.checked_add(HEADER)?)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > MAX_BODY {
        return None;
    }
    let start = pos + HEADER;
    let body = bytes.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(body) == crc).then_some((body, start + len))
}

fn encode_record(lsn: u64, writes: &[Write]) -> Result<Vec<u8>, String> {
    let mut body = Vec::with_capacity(
        12 + writes
            .iter()
            .map(|(_, k, v)| 16 + k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>(),
    );
    body.extend_from_slice(&lsn.to_le_bytes());
    let count = u32::try_from(writes.len()).map_err(|_| "too many writes in one batch")?;
    body.extend_from_slice(&count.to_le_bytes());
    for (table, key, value) in writes {
        let name = table.name().as_bytes();
        body.push(u8::try_from(name.len()).map_err(|_| "table name too long")?);
        body.extend_from_slice(name);
        let klen = u32::try_from(key.len()).map_err(|_| "key too long")?;
        body.extend_from_slice(&klen.to_le_bytes());
        body.extend_from_slice(key);
        match value {
            Some(v) => {
                body.push(1);
                let vlen = u32::try_from(v.len()).map_err(|_| "value too long")?;
                body.extend_from_slice(&vlen.to_le_bytes());
                body.extend_from_slice(v);
            }
            None => body.push(0),
        }
    }
    if body.len() > MAX_BODY {
        return Err(format!(
            "a batch of {} bytes is too large to log",
            body.len()
        ));
    }
    let mut record = Vec::with_capacity(HEADER + body.len());
    record.extend_from_slice(&(body.len() as u32).to_le_bytes());
    record.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    record.extend_from_slice(&body);
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

    proptest! {
        /// What is appended is read back in order, above the applied LSN;
        /// a log cut anywhere keeps exactly the whole records before the cut.
        #[test]
        fn records_round_trip_and_a_cut_keeps_whole_records(
            batches in prop::collection::vec(writes(), 1..6),
            applied in 0u64..4,
            cut_back in 0usize..300,
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
            drop(wal);

            let path = dir.path().join(WAL_FILE);
            let full = std::fs::metadata(&path).unwrap().len();
            let cut = full.saturating_sub(cut_back as u64);
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
            let (mut wal, back) = Wal::open(dir.path(), 0).unwrap();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            prop_assert_eq!(back.len(), whole);
            prop_assert_eq!(wal.len(), if whole == 0 { 0 } else { ends[whole - 1] });
            // The log goes on after the cut.
            let lsn = wal.append(&batches[0], true).unwrap();
            prop_assert_eq!(lsn, whole as u64 + 1);
        }
    }

    #[test]
    fn a_damaged_record_ends_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let w: Vec<Write> = vec![(Table::Runs, b"k".to_vec(), Some(b"v".to_vec()))];
        {
            let (mut wal, _) = Wal::open(dir.path(), 0).unwrap();
            wal.append(&w, true).unwrap();
            wal.append(&w, true).unwrap();
        }
        let path = dir.path().join(WAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (wal, back) = Wal::open(dir.path(), 0).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(wal.next_lsn(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), wal.len());
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
        // LSNs keep growing after a reset: the database remembers the last.
        assert_eq!(wal.append(&w, true).unwrap(), 2);
    }
}
