//! Point-in-time snapshots of a Redis server over the network, as a replica would get them.
//!
//! [`snapshot_to`] connects, authenticates, asks for a full sync (see [`replication`]) and
//! streams the RDB the server sends into any writer (in the backup store: the age encryptor
//! writing a temporary file), while computing its SHA-256, checking its CRC64 trailer and
//! counting keys per database (see [`rdb`]). Memory use is a few fixed buffers, whatever
//! the size of the dataset. The work is blocking I/O: from async code, run it in
//! `tokio::task::spawn_blocking`.

pub mod primary;
pub mod rdb;
pub mod replication;

use std::io::{self, BufReader, Read, Write};

use sha2::{Digest, Sha256};

pub use rdb::{CrcCheck, DbKeys, KeyCount, RdbError, RdbInfo};
pub use replication::{Payload, RedisTarget, SnapshotOptions};

/// Why a snapshot failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("Redis at {address} is unreachable: {source}")]
    Unreachable {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("Redis at {address} refused the credentials: {message}")]
    AuthFailed { address: String, message: String },
    #[error("Redis at {address} refused the sync: {message}")]
    Refused { address: String, message: String },
    #[error(
        "lost the connection to Redis at {address} after {received} bytes of the RDB: {source}"
    )]
    ConnectionLost {
        address: String,
        received: u64,
        #[source]
        source: io::Error,
    },
    #[error("Redis at {address} went silent for longer than the timeout after {received} bytes")]
    Timeout { address: String, received: u64 },
    #[error(
        "the snapshot of Redis at {address} took longer than its deadline of {deadline:?} ({received} bytes of the RDB received)"
    )]
    PastDeadline {
        address: String,
        received: u64,
        deadline: std::time::Duration,
    },
    #[error("the RDB from {address} is bad: {problem}")]
    BadRdb { address: String, problem: String },
    /// Writing to the destination failed; [`SnapshotError::is_disk_full`] tells ENOSPC apart.
    #[error("writing the snapshot failed: {0}")]
    Destination(#[source] io::Error),
}

impl SnapshotError {
    /// Whether the destination ran out of space (ENOSPC or a quota).
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::Destination(err) if is_disk_full(err))
    }

    fn from_transfer_error(address: &str, received: u64, source: io::Error) -> Self {
        let past = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<replication::PastDeadline>());
        if let Some(past) = past {
            return Self::PastDeadline {
                address: address.to_owned(),
                received,
                deadline: past.0,
            };
        }
        match source.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout {
                address: address.to_owned(),
                received,
            },
            _ => Self::ConnectionLost {
                address: address.to_owned(),
                received,
                source,
            },
        }
    }
}

/// Whether an I/O error means that the disk (or the quota) is full.
pub fn is_disk_full(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// What a successful snapshot produced.
#[derive(Debug, Clone)]
pub struct RdbSnapshot {
    /// Size of the RDB. (Its SHA-256 is left to the sink, which sees every byte: hashing
    /// twice would cost a second pass of the CPU over the data.)
    pub rdb_bytes: u64,
    /// The trailer's CRC64; `None` when the server runs with `rdbchecksum no`.
    pub crc64: Option<u64>,
    pub info: RdbInfo,
    /// Replication ID and offset the snapshot corresponds to.
    pub replication: Option<(String, u64)>,
    /// How the server delimited the payload (disk-based or diskless sync).
    pub diskless: bool,
}

/// Takes a snapshot of `target` and writes the RDB into `sink`.
///
/// The RDB is checked before this returns: it must be complete (announced length or end
/// mark), well-formed up to its `EOF` opcode, end right after its trailer, and the trailer's
/// CRC64 must match. `sink` is not flushed or finished here, and on error it holds a partial
/// RDB that the caller must discard.
///
/// # Errors
///
/// [`SnapshotError`], naming what failed.
pub fn snapshot_to(
    target: &RedisTarget,
    options: &SnapshotOptions,
    sink: &mut dyn Write,
) -> Result<RdbSnapshot, SnapshotError> {
    let address = target.address.as_str();
    let handshake = replication::start(target, options)?;
    let diskless = matches!(handshake.payload, Payload::EofMark(_));
    let stream = replication::RdbStream::new(handshake.reader, handshake.payload);
    let expected = stream.expected();
    let mut tee = Tee::new(stream, sink, false);

    let scanned = scan_through(&mut tee);
    // A failure of the sink or of the connection explains a scan error; report it first.
    if let Some(err) = tee.sink_error.take() {
        return Err(SnapshotError::Destination(err));
    }
    let received = tee.inner.received;
    if let Some(err) = tee.source_error.take() {
        return Err(SnapshotError::from_transfer_error(address, received, err));
    }
    let bad = |problem: String| SnapshotError::BadRdb {
        address: address.to_owned(),
        problem,
    };
    let (info, trailing) = scanned.map_err(|err| bad(err.to_string()))?;
    if trailing > 0 && info.key_count == KeyCount::Exact {
        return Err(bad(format!("{trailing} bytes follow the RDB's trailer")));
    }
    if let Some(expected) = expected.filter(|&expected| expected != received) {
        return Err(bad(format!("received {received} of {expected} bytes")));
    }
    let crc64 = match tee.crc.finish() {
        CrcCheck::Valid(crc) => Some(crc),
        CrcCheck::Disabled => None,
        CrcCheck::Mismatch { stored, computed } => {
            return Err(bad(format!(
                "CRC64 mismatch: trailer {stored:016x}, content {computed:016x}"
            )));
        }
        CrcCheck::Missing => return Err(bad("no CRC64 trailer".into())),
    };
    Ok(RdbSnapshot {
        rdb_bytes: received,
        crc64,
        info,
        replication: handshake.replication,
        diskless,
    })
}

/// Scans the RDB read through `tee`, then reads the rest of the input (there should be
/// none) so that the sink and the checksums cover all of it. Returns what the scan found and
/// how many bytes followed the trailer.
///
/// # Errors
///
/// [`RdbError`] from the scan; check the tee's own errors first, they explain it.
pub fn scan_through<R: Read>(tee: &mut Tee<'_, R>) -> Result<(RdbInfo, u64), RdbError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, tee);
    let info = rdb::scan(&mut buffered)?;
    let rest = io::copy(&mut buffered, &mut io::sink()).map_err(RdbError::Io)?;
    Ok((info, rest))
}

/// Passes everything read from `inner` on to `sink`, checking the CRC64 trailer (and,
/// when asked, the SHA-256) on the way. Errors of either side are kept, so that the caller
/// can say which side failed.
pub struct Tee<'a, R> {
    pub inner: R,
    sink: &'a mut dyn Write,
    pub crc: rdb::TrailerCrc,
    pub sha: Option<Sha256>,
    pub bytes: u64,
    pub sink_error: Option<io::Error>,
    pub source_error: Option<io::Error>,
}

impl<'a, R: Read> Tee<'a, R> {
    pub fn new(inner: R, sink: &'a mut dyn Write, sha256: bool) -> Self {
        Self {
            inner,
            sink,
            crc: rdb::TrailerCrc::default(),
            sha: sha256.then(Sha256::new),
            bytes: 0,
            sink_error: None,
            source_error: None,
        }
    }
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            // Interrupted is retried by every reader; it is no failure of the source.
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Err(err),
            Err(err) => {
                let kind = err.kind();
                let message = err.to_string();
                self.source_error = Some(err);
                return Err(io::Error::new(kind, message));
            }
        };
        if let Err(err) = self.sink.write_all(&buf[..n]) {
            let message = err.to_string();
            self.sink_error = Some(err);
            return Err(io::Error::other(message));
        }
        self.crc.update(&buf[..n]);
        if let Some(sha) = &mut self.sha {
            sha.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}
