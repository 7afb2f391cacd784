//! Streaming inspection of an RDB file: the trailer CRC64 and the keys per database.
//!
//! Both work on a stream with fixed memory, whatever the size of the dataset: the CRC is
//! computed as bytes pass, and the scanner walks the file's structure reading lengths and
//! skipping values without ever holding one (a value is skipped through a small buffer).
//!
//! What the scanner counts: every key entry it walks, per database, and among them those that
//! carry an expiry. That is exactly what Redis loads, less the keys whose TTL has passed by
//! the time the file is loaded. Values of a type this scanner does not know (modules of the
//! pre-GA format, the hash-field-expiry types of Redis 7.4+, anything newer) cannot be
//! skipped without understanding them; the scanner then stops and falls back on the
//! `RESIZEDB` hints Redis writes at the start of each database (exact sizes at fork time),
//! and says so in [`KeyCount::Hints`]. The CRC check does not depend on the scanner.

use std::collections::BTreeMap;
use std::io::{self, Read};

use crc::{CRC_64_REDIS, Crc, Table};

/// Redis's CRC64 (Jones polynomial, reflected), with a slice-by-16 table for speed.
static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&CRC_64_REDIS);

/// Length of the CRC64 trailer that ends an RDB file (version 5 and later).
const TRAILER_LEN: usize = 8;

/// CRC64 of everything but the last 8 bytes seen, and those last 8 bytes: the RDB trailer
/// is the little-endian CRC64 of all bytes before it, and where the file ends is only known
/// once it has ended.
pub struct TrailerCrc {
    digest: crc::Digest<'static, u64, Table<16>>,
    tail: [u8; TRAILER_LEN],
    tail_len: usize,
}

impl Default for TrailerCrc {
    fn default() -> Self {
        Self {
            digest: CRC64.digest(),
            tail: [0; TRAILER_LEN],
            tail_len: 0,
        }
    }
}

/// The outcome of checking an RDB trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcCheck {
    /// The trailer matches the content; the value is the CRC64.
    Valid(u64),
    /// The trailer is zero: the server runs with `rdbchecksum no`, nothing to check.
    Disabled,
    /// The trailer does not match the content.
    Mismatch { stored: u64, computed: u64 },
    /// Fewer than 8 bytes: there is no trailer.
    Missing,
}

impl TrailerCrc {
    pub fn update(&mut self, data: &[u8]) {
        if self.tail_len + data.len() <= TRAILER_LEN {
            self.tail[self.tail_len..self.tail_len + data.len()].copy_from_slice(data);
            self.tail_len += data.len();
        } else if data.len() >= TRAILER_LEN {
            let (body, last) = data.split_at(data.len() - TRAILER_LEN);
            self.digest.update(&self.tail[..self.tail_len]);
            self.digest.update(body);
            self.tail.copy_from_slice(last);
            self.tail_len = TRAILER_LEN;
        } else {
            // Held bytes plus a short chunk: release the oldest, keep the newest 8.
            let mut joined = [0u8; 2 * TRAILER_LEN];
            let n = self.tail_len + data.len();
            joined[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            joined[self.tail_len..n].copy_from_slice(data);
            self.digest.update(&joined[..n - TRAILER_LEN]);
            self.tail.copy_from_slice(&joined[n - TRAILER_LEN..n]);
            self.tail_len = TRAILER_LEN;
        }
    }

    pub fn finish(self) -> CrcCheck {
        if self.tail_len < TRAILER_LEN {
            return CrcCheck::Missing;
        }
        let stored = u64::from_le_bytes(self.tail);
        let computed = self.digest.finalize();
        match stored {
            0 => CrcCheck::Disabled,
            _ if stored == computed => CrcCheck::Valid(computed),
            _ => CrcCheck::Mismatch { stored, computed },
        }
    }
}

/// Keys of one database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbKeys {
    /// Keys in the database.
    pub keys: u64,
    /// Keys among them with a TTL.
    pub expires: u64,
}

/// How the key counts were obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCount {
    /// Every key entry of the file was walked and counted.
    Exact,
    /// The scan stopped at a value it cannot skip; the counts are the `RESIZEDB` hints of the
    /// databases seen up to there.
    Hints { reason: String },
}

/// What a scan of an RDB found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbInfo {
    /// The RDB format version (`REDIS0010` is 10).
    pub version: u32,
    /// Small auxiliary fields (`redis-ver`, `ctime`, `repl-id`, ...), as text.
    pub aux: BTreeMap<String, String>,
    /// Keys per database number.
    pub databases: BTreeMap<u32, DbKeys>,
    pub key_count: KeyCount,
    /// Function libraries stored in the file.
    pub functions: u64,
}

impl RdbInfo {
    /// Keys in all databases.
    pub fn total_keys(&self) -> u64 {
        self.databases.values().map(|db| db.keys).sum()
    }
}

/// A structural problem in an RDB file.
#[derive(Debug, thiserror::Error)]
pub enum RdbError {
    #[error("not an RDB file (bad magic {0:?})")]
    BadMagic(String),
    #[error("the RDB ends early: {0}")]
    Truncated(String),
    #[error("malformed RDB at byte {offset}: {reason}")]
    Malformed { offset: u64, reason: String },
    #[error("reading the RDB: {0}")]
    Io(#[source] io::Error),
}

/// The longest auxiliary value kept in [`RdbInfo::aux`]; longer ones are skipped.
const MAX_AUX_LEN: u64 = 256;

/// Auxiliary fields kept in [`RdbInfo::aux`]; Redis writes about ten, and any beyond this
/// are skipped, so an endless aux section costs time, not memory.
const MAX_AUX_FIELDS: usize = 64;

/// Databases an RDB may hold: the per-database counts are kept, so a stream of ever new
/// database numbers would otherwise grow them without bound. (Redis's default is 16.)
const MAX_DATABASES: usize = 4096;

// Opcodes (rdb.h).
const OP_SLOT_INFO: u8 = 244;
const OP_FUNCTION2: u8 = 245;
const OP_FUNCTION_PRE_GA: u8 = 246;
const OP_MODULE_AUX: u8 = 247;
const OP_IDLE: u8 = 248;
const OP_FREQ: u8 = 249;
const OP_AUX: u8 = 250;
const OP_RESIZEDB: u8 = 251;
const OP_EXPIRETIME_MS: u8 = 252;
const OP_EXPIRETIME: u8 = 253;
const OP_SELECTDB: u8 = 254;
const OP_EOF: u8 = 255;

/// A length field: a plain number, or the marker of a specially encoded string.
enum Len {
    Plain(u64),
    Encoded(u8),
}

/// Walks an RDB from `input` up to and including its trailer, and no further.
///
/// # Errors
///
/// [`RdbError`] when the input is not a well-formed RDB or ends early.
pub fn scan<R: Read>(input: R) -> Result<RdbInfo, RdbError> {
    Ok(scan_with(input, None)?.0)
}

/// Walks an RDB like [`scan`] and also returns the expiry time of every key that has one
/// (Unix milliseconds, unsorted): what a restore needs to tell keys that expired since the
/// snapshot from keys that were lost.
///
/// # Errors
///
/// [`RdbError`] when the input is not a well-formed RDB or ends early.
pub fn scan_expiries<R: Read>(input: R) -> Result<(RdbInfo, Vec<u64>), RdbError> {
    let (info, expiries) = scan_with(input, Some(Vec::new()))?;
    Ok((info, expiries.unwrap_or_default()))
}

fn scan_with<R: Read>(
    input: R,
    expiries: Option<Vec<u64>>,
) -> Result<(RdbInfo, Option<Vec<u64>>), RdbError> {
    let mut scanner = Scanner {
        input,
        offset: 0,
        db: 0,
        expiries,
        hints: BTreeMap::new(),
        info: RdbInfo {
            version: 0,
            aux: BTreeMap::new(),
            databases: BTreeMap::new(),
            key_count: KeyCount::Exact,
            functions: 0,
        },
    };
    scanner.run()?;
    Ok((scanner.info, scanner.expiries))
}

struct Scanner<R> {
    input: R,
    /// Bytes consumed, for error messages.
    offset: u64,
    /// The database of the entries being read.
    db: u32,
    /// Expiry times of the keys seen, when asked for.
    expiries: Option<Vec<u64>>,
    /// `RESIZEDB` hints per database, the fallback when the scan cannot finish.
    hints: BTreeMap<u32, DbKeys>,
    info: RdbInfo,
}

impl<R: Read> Scanner<R> {
    fn run(&mut self) -> Result<(), RdbError> {
        let mut magic = [0u8; 9];
        self.read_exact(&mut magic)?;
        let version = std::str::from_utf8(&magic[5..])
            .ok()
            .filter(|_| &magic[..5] == b"REDIS")
            .and_then(|digits| digits.parse::<u32>().ok())
            .ok_or_else(|| RdbError::BadMagic(String::from_utf8_lossy(&magic).into_owned()))?;
        self.info.version = version;

        // The expiry (Unix ms) of the key entry that follows, if it has one.
        let mut expires: Option<u64> = None;
        loop {
            let opcode = self.read_u8()?;
            match opcode {
                OP_EOF => {
                    if version >= 5 {
                        self.skip(TRAILER_LEN as u64)?;
                    }
                    return Ok(());
                }
                OP_SELECTDB => self.select_db()?,
                OP_RESIZEDB => {
                    let keys = self.plain_len()?;
                    let expires = self.plain_len()?;
                    self.hints.insert(self.db, DbKeys { keys, expires });
                }
                OP_EXPIRETIME_MS => {
                    let mut ms = [0u8; 8];
                    self.read_exact(&mut ms)?;
                    expires = Some(u64::from_le_bytes(ms));
                }
                OP_EXPIRETIME => {
                    let mut seconds = [0u8; 4];
                    self.read_exact(&mut seconds)?;
                    expires = Some(u64::from(u32::from_le_bytes(seconds)) * 1000);
                }
                OP_AUX => self.aux()?,
                OP_FREQ => self.skip(1)?,
                OP_IDLE => {
                    self.plain_len()?;
                }
                OP_MODULE_AUX => {
                    self.plain_len()?; // module id
                    self.plain_len()?; // "when" opcode
                    self.plain_len()?; // "when"
                    self.skip_module_value()?;
                }
                OP_FUNCTION2 => {
                    self.skip_string()?;
                    self.info.functions += 1;
                }
                OP_SLOT_INFO => {
                    for _ in 0..3 {
                        self.plain_len()?;
                    }
                }
                OP_FUNCTION_PRE_GA => return self.give_up("functions of a 7.0 release candidate"),
                value_type => {
                    self.skip_string()?; // the key
                    if !self.skip_value(value_type)? {
                        return self.give_up(&format!("value type {value_type}"));
                    }
                    self.count_key(expires.take());
                }
            }
        }
    }

    /// `SELECTDB`: the database of the entries that follow, refused past [`MAX_DATABASES`].
    fn select_db(&mut self) -> Result<(), RdbError> {
        let db = self.plain_len()?;
        self.db = u32::try_from(db).map_err(|_| self.malformed("database number"))?;
        let known = self.hints.contains_key(&self.db) || self.info.databases.contains_key(&self.db);
        if !known && self.hints.len().max(self.info.databases.len()) >= MAX_DATABASES {
            return Err(self.malformed(&format!("more than {MAX_DATABASES} databases")));
        }
        Ok(())
    }

    /// `AUX`: a key and a value, kept when both are small and fewer than
    /// [`MAX_AUX_FIELDS`] are kept already.
    fn aux(&mut self) -> Result<(), RdbError> {
        let key = self.small_string()?;
        let value = self.small_string()?;
        if let (Some(key), Some(value)) = (key, value) {
            let aux = &mut self.info.aux;
            if aux.len() < MAX_AUX_FIELDS || aux.contains_key(&key) {
                aux.insert(key, value);
            }
        }
        Ok(())
    }

    /// Counts a key entry of the current database, with its expiry if it has one.
    fn count_key(&mut self, expires: Option<u64>) {
        let db = self.info.databases.entry(self.db).or_default();
        db.keys += 1;
        if let Some(at) = expires {
            db.expires += 1;
            if let Some(expiries) = &mut self.expiries {
                expiries.push(at);
            }
        }
    }

    /// Stops the scan at something it cannot skip, keeping the hints as counts.
    fn give_up(&mut self, what: &str) -> Result<(), RdbError> {
        self.info.databases = self.hints.clone();
        self.info.key_count = KeyCount::Hints {
            reason: format!("{what} at byte {} cannot be skipped", self.offset),
        };
        Ok(())
    }

    /// Skips one value; `false` when its type is not one this scanner can skip.
    fn skip_value(&mut self, value_type: u8) -> Result<bool, RdbError> {
        match value_type {
            // String, and every single-blob encoding: zipmap, ziplist, intset, listpack.
            0 | 9..=13 | 16 | 17 | 20 => self.skip_string()?,
            // List and set as plain elements; quicklist of ziplists.
            1 | 2 | 14 => {
                for _ in 0..self.plain_len()? {
                    self.skip_string()?;
                }
            }
            // Sorted set with scores as text: a length byte, or 253..=255 for nan/+inf/-inf.
            3 => {
                for _ in 0..self.plain_len()? {
                    self.skip_string()?;
                    let score_len = self.read_u8()?;
                    if score_len < 253 {
                        self.skip(u64::from(score_len))?;
                    }
                }
            }
            4 => {
                for _ in 0..self.plain_len()? {
                    self.skip_string()?;
                    self.skip_string()?;
                }
            }
            // Sorted set with binary double scores.
            5 => {
                for _ in 0..self.plain_len()? {
                    self.skip_string()?;
                    self.skip(8)?;
                }
            }
            7 => {
                self.plain_len()?; // module id
                self.skip_module_value()?;
            }
            // Quicklist of listpacks: a container kind before each node.
            18 => {
                for _ in 0..self.plain_len()? {
                    self.plain_len()?;
                    self.skip_string()?;
                }
            }
            15 | 19 | 21 => self.skip_stream(value_type)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Streams: listpacks, metadata, then consumer groups with their pending entries.
    fn skip_stream(&mut self, value_type: u8) -> Result<(), RdbError> {
        let v2 = value_type >= 19;
        let v3 = value_type >= 21;
        for _ in 0..self.plain_len()? {
            self.skip_string()?; // master ID
            self.skip_string()?; // listpack
        }
        // Length and last ID; v2 adds first ID, max deleted ID and entries added.
        let fields = if v2 { 8 } else { 3 };
        for _ in 0..fields {
            self.plain_len()?;
        }
        for _ in 0..self.plain_len()? {
            self.skip_string()?; // group name
            self.plain_len()?; // last ID ms
            self.plain_len()?; // last ID seq
            if v2 {
                self.plain_len()?; // entries read
            }
            for _ in 0..self.plain_len()? {
                self.skip(16 + 8)?; // raw ID, delivery time
                self.plain_len()?; // delivery count
            }
            for _ in 0..self.plain_len()? {
                self.skip_string()?; // consumer name
                self.skip(if v3 { 16 } else { 8 })?; // seen time (and active time)
                let pending = self.plain_len()?;
                self.skip(pending.saturating_mul(16))?;
            }
        }
        Ok(())
    }

    /// Module values annotated for parsing without the module: typed fields up to an EOF.
    fn skip_module_value(&mut self) -> Result<(), RdbError> {
        loop {
            match self.plain_len()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.plain_len()?;
                }
                3 => self.skip(4)?,
                4 => self.skip(8)?,
                5 => self.skip_string()?,
                other => return Err(self.malformed(&format!("module field opcode {other}"))),
            }
        }
    }

    fn len(&mut self) -> Result<Len, RdbError> {
        let first = self.read_u8()?;
        Ok(match first >> 6 {
            0 => Len::Plain(u64::from(first & 0x3f)),
            1 => Len::Plain(u64::from(first & 0x3f) << 8 | u64::from(self.read_u8()?)),
            2 => match first {
                0x80 => {
                    let mut buf = [0u8; 4];
                    self.read_exact(&mut buf)?;
                    Len::Plain(u64::from(u32::from_be_bytes(buf)))
                }
                0x81 => {
                    let mut buf = [0u8; 8];
                    self.read_exact(&mut buf)?;
                    Len::Plain(u64::from_be_bytes(buf))
                }
                _ => return Err(self.malformed(&format!("length prefix {first:#04x}"))),
            },
            _ => Len::Encoded(first & 0x3f),
        })
    }

    fn plain_len(&mut self) -> Result<u64, RdbError> {
        match self.len()? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(_) => Err(self.malformed("encoded value where a length belongs")),
        }
    }

    fn skip_string(&mut self) -> Result<(), RdbError> {
        match self.len()? {
            Len::Plain(n) => self.skip(n),
            Len::Encoded(0) => self.skip(1),
            Len::Encoded(1) => self.skip(2),
            Len::Encoded(2) => self.skip(4),
            Len::Encoded(3) => {
                let compressed = self.plain_len()?;
                self.plain_len()?; // uncompressed length
                self.skip(compressed)
            }
            Len::Encoded(other) => Err(self.malformed(&format!("string encoding {other}"))),
        }
    }

    /// A string short enough to keep, as text; `None` (and skipped) when it is long or
    /// compressed.
    fn small_string(&mut self) -> Result<Option<String>, RdbError> {
        let integer = |scanner: &mut Self, width: usize| -> Result<Option<String>, RdbError> {
            let mut buf = [0u8; 8];
            scanner.read_exact(&mut buf[..width])?;
            let value = match width {
                1 => i64::from(buf[0] as i8),
                2 => i64::from(i16::from_le_bytes([buf[0], buf[1]])),
                _ => i64::from(i32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]])),
            };
            Ok(Some(value.to_string()))
        };
        match self.len()? {
            Len::Plain(n) if n <= MAX_AUX_LEN => {
                let mut buf = vec![0u8; n as usize];
                self.read_exact(&mut buf)?;
                Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
            Len::Plain(n) => self.skip(n).map(|()| None),
            Len::Encoded(0) => integer(self, 1),
            Len::Encoded(1) => integer(self, 2),
            Len::Encoded(2) => integer(self, 4),
            Len::Encoded(3) => {
                let compressed = self.plain_len()?;
                self.plain_len()?;
                self.skip(compressed).map(|()| None)
            }
            Len::Encoded(other) => Err(self.malformed(&format!("string encoding {other}"))),
        }
    }

    fn read_u8(&mut self) -> Result<u8, RdbError> {
        let mut byte = [0u8; 1];
        self.read_exact(&mut byte)?;
        Ok(byte[0])
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), RdbError> {
        self.input
            .read_exact(buf)
            .map_err(|err| self.io_error(err))?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// Skips `n` bytes through a small buffer, so a large value never sits in memory.
    fn skip(&mut self, n: u64) -> Result<(), RdbError> {
        let copied = io::copy(&mut (&mut self.input).take(n), &mut io::sink())
            .map_err(|err| self.io_error(err))?;
        self.offset += copied;
        if copied < n {
            return Err(RdbError::Truncated(format!(
                "a {n}-byte field at byte {} is cut short",
                self.offset - copied
            )));
        }
        Ok(())
    }

    fn io_error(&self, err: io::Error) -> RdbError {
        if err.kind() == io::ErrorKind::UnexpectedEof {
            RdbError::Truncated(format!("no more data after byte {}", self.offset))
        } else {
            RdbError::Io(err)
        }
    }

    fn malformed(&self, reason: &str) -> RdbError {
        RdbError::Malformed {
            offset: self.offset,
            reason: reason.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
