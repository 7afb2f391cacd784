//! Verifying a snapshot, and restoring one (which verifies it on the way). Each check is a
//! function of its own, run in order of what it needs: the manifest; the stored file's size
//! and SHA-256 (no key needed, and they name damage precisely); the recipient; then, while
//! decrypting, the content's size and SHA-256 and, for Redis, the RDB's CRC64 trailer and key
//! counts.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{Cleanup, FILE_BUFFER, PARTIAL, Store, database_keys, format_databases, sync_dir};
use crate::backup::error::VerifyError;
use crate::backup::key::BackupKey;
use crate::backup::manifest::{Manifest, SnapshotKind};
use crate::redis::{self, CrcCheck, RdbInfo, Tee};

impl Store {
    /// Checks snapshot `id` completely: manifest present and readable, data file present
    /// with the manifest's size and SHA-256, encrypted to `key`, decrypting without error to
    /// content with the manifest's size and SHA-256; for Redis, a well-formed RDB whose
    /// CRC64 trailer matches and whose key counts are the manifest's.
    ///
    /// # Errors
    ///
    /// [`VerifyError`], naming the snapshot and the problem.
    pub fn verify(&self, id: &str, key: &BackupKey) -> Result<Manifest, VerifyError> {
        self.verify_into(id, key, &mut io::sink())
    }

    /// Restores snapshot `id` to the file `to` (for Redis, the server's `dump.rdb`, with
    /// the server stopped). The snapshot is decrypted into a temporary file beside `to` and
    /// verified as by [`Store::verify`]; only then is it renamed over `to`. On any problem
    /// `to` is untouched.
    ///
    /// # Errors
    ///
    /// [`VerifyError`], naming the snapshot and the problem.
    pub fn restore(&self, id: &str, key: &BackupKey, to: &Path) -> Result<Manifest, VerifyError> {
        let io_error = |context: String, source: io::Error| VerifyError::Io {
            id: id.to_owned(),
            context,
            source,
        };
        let name = to
            .file_name()
            .ok_or_else(|| {
                let err = io::Error::new(io::ErrorKind::InvalidInput, "not a file path");
                io_error(format!("restoring to {}", to.display()), err)
            })?
            .to_string_lossy()
            .into_owned();
        if to.is_dir() {
            let err = io::Error::new(io::ErrorKind::IsADirectory, "give the file to write");
            return Err(io_error(format!("restoring to {}", to.display()), err));
        }
        let parent = match to.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        };
        let temp = parent.join(format!(".{name}.titan-dr-restore-{id}{PARTIAL}"));
        let output = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(|err| io_error(format!("creating {}", temp.display()), err))?;
        let cleanup = Cleanup(vec![temp.clone()]);
        let mut writer = BufWriter::with_capacity(FILE_BUFFER, output);
        let manifest = self.verify_into(id, key, &mut writer)?;
        let output = writer
            .into_inner()
            .map_err(|err| io_error(format!("writing {}", temp.display()), err.into_error()))?;
        output
            .sync_all()
            .map_err(|err| io_error(format!("syncing {}", temp.display()), err))?;
        fs::rename(&temp, to).map_err(|err| {
            io_error(
                format!("renaming {} to {}", temp.display(), to.display()),
                err,
            )
        })?;
        cleanup.disarm();
        sync_dir(&parent).map_err(|err| io_error(format!("syncing {}", parent.display()), err))?;
        Ok(manifest)
    }

    /// Verifies `id` while writing its plaintext into `sink`: each check in turn, the first
    /// that fails is the error.
    fn verify_into(
        &self,
        id: &str,
        key: &BackupKey,
        sink: &mut dyn Write,
    ) -> Result<Manifest, VerifyError> {
        let manifest = self.read_manifest(id)?;
        let check = Check {
            id,
            manifest: &manifest,
            path: self.dir.join(&manifest.file),
        };
        check.size()?;
        // The stored file's checksum first: it names damage precisely, without the key.
        check.stored_checksum()?;
        check.recipient(key)?;
        check.authentic(key)?;
        let mut tee = Tee::new(check.decrypt(key)?, sink, true);
        let scanned = check.read_content(&mut tee)?;
        check.content_checksum(&mut tee)?;
        if let Some(scanned) = scanned {
            let (info, _) = scanned.map_err(|err| check.bad_rdb(err.to_string()))?;
            check.rdb(&info, tee.crc.finish())?;
        }
        Ok(manifest)
    }
}

/// The plaintext of a snapshot, as it comes out of age.
type Plaintext = age::stream::StreamReader<BufReader<File>>;

/// The checks of one snapshot against its manifest, and the errors they report.
struct Check<'a> {
    id: &'a str,
    manifest: &'a Manifest,
    /// The data file.
    path: PathBuf,
}

impl Check<'_> {
    /// The manifest's MAC is the key's: only a holder of the key wrote it, and through the
    /// checksums it names, the data file too.
    fn authentic(&self, key: &BackupKey) -> Result<(), VerifyError> {
        let bytes = self.manifest.authenticated_bytes();
        if key.verifies_mac(&bytes, &self.manifest.mac) {
            return Ok(());
        }
        Err(VerifyError::NotAuthentic {
            id: self.id.to_owned(),
        })
    }

    /// The data file has the manifest's size: shorter is [`VerifyError::Truncated`].
    fn size(&self) -> Result<(), VerifyError> {
        let actual = fs::metadata(&self.path)
            .map_err(|err| self.io_error("reading", err))?
            .len();
        let expected = self.manifest.size_bytes;
        if actual == expected {
            return Ok(());
        }
        let (id, file) = (self.id.to_owned(), self.manifest.file.clone());
        Err(if actual < expected {
            VerifyError::Truncated {
                id,
                file,
                actual,
                expected,
            }
        } else {
            VerifyError::SizeMismatch {
                id,
                file,
                actual,
                expected,
            }
        })
    }

    /// The data file as stored (encrypted) has the manifest's SHA-256.
    fn stored_checksum(&self) -> Result<(), VerifyError> {
        let actual = sha256_file(&self.path).map_err(|err| self.io_error("reading", err))?;
        if actual != self.manifest.sha256 {
            return Err(VerifyError::ChecksumMismatch {
                id: self.id.to_owned(),
                file: self.manifest.file.clone(),
                expected: self.manifest.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// The snapshot was encrypted to `key`, as its manifest says.
    fn recipient(&self, key: &BackupKey) -> Result<(), VerifyError> {
        if self.manifest.encryption.recipient != key.recipient() {
            return Err(self.wrong_key(key));
        }
        Ok(())
    }

    /// Opens the data file for decryption with `key` (the age header is checked here, the
    /// chunks as they are read).
    fn decrypt(&self, key: &BackupKey) -> Result<Plaintext, VerifyError> {
        let input = File::open(&self.path).map_err(|err| self.io_error("opening", err))?;
        let decryptor = age::Decryptor::new_buffered(BufReader::with_capacity(FILE_BUFFER, input))
            .map_err(|err| self.undecryptable(err.to_string()))?;
        let identity = key.identity() as &dyn age::Identity;
        decryptor
            .decrypt(std::iter::once(identity))
            .map_err(|err| match err {
                age::DecryptError::NoMatchingKeys => self.wrong_key(key),
                other => self.undecryptable(other.to_string()),
            })
    }

    /// Reads the whole plaintext through `tee` (into the sink): a Redis RDB is scanned on
    /// the way, and what the scan found is returned to be checked after the checksums.
    fn read_content(&self, tee: &mut Tee<'_, Plaintext>) -> Result<Option<Scanned>, VerifyError> {
        let scanned = match self.manifest.kind {
            SnapshotKind::Redis => Some(redis::scan_through(tee)),
            SnapshotKind::Configuration => {
                let copied = io::copy(tee, &mut io::sink());
                copied.map_err(|err| self.undecryptable(err.to_string()))?;
                None
            }
        };
        if let Some(err) = tee.sink_error.take() {
            return Err(self.io_error("writing the plaintext of", err));
        }
        if let Some(err) = tee.source_error.take() {
            return Err(self.undecryptable(err.to_string()));
        }
        Ok(scanned)
    }

    /// The decrypted content has the manifest's size and SHA-256.
    fn content_checksum(&self, tee: &mut Tee<'_, Plaintext>) -> Result<(), VerifyError> {
        let expected = &self.manifest.plaintext;
        let plaintext_sha = tee.sha.take().map(|sha| hex::encode(sha.finalize()));
        if tee.bytes != expected.size_bytes {
            return Err(self.mismatch(format!(
                "{} bytes, the manifest says {}",
                tee.bytes, expected.size_bytes
            )));
        }
        if plaintext_sha.as_deref() != Some(expected.sha256.as_str()) {
            return Err(self.mismatch("the SHA-256 differs".into()));
        }
        Ok(())
    }

    /// A Redis RDB: its CRC64 trailer matches its content and the manifest, and its key
    /// counts per database are the manifest's.
    fn rdb(&self, info: &RdbInfo, crc: CrcCheck) -> Result<(), VerifyError> {
        let crc = match crc {
            CrcCheck::Valid(crc) => Some(format!("{crc:016x}")),
            CrcCheck::Disabled => None,
            CrcCheck::Mismatch { stored, computed } => {
                return Err(self.bad_rdb(format!(
                    "CRC64 mismatch: trailer {stored:016x}, content {computed:016x}"
                )));
            }
            CrcCheck::Missing => return Err(self.bad_rdb("no CRC64 trailer".into())),
        };
        let details = self.manifest.redis.as_ref();
        if crc != details.and_then(|d| d.crc64.clone()) {
            return Err(self.mismatch("the RDB's CRC64 is not the manifest's".into()));
        }
        let keys = database_keys(info);
        if Some(&keys) != details.map(|d| &d.databases) {
            return Err(self.mismatch(format!(
                "keys per database {} differ from the manifest's",
                format_databases(&keys)
            )));
        }
        Ok(())
    }

    fn io_error(&self, context: &str, source: io::Error) -> VerifyError {
        VerifyError::Io {
            id: self.id.to_owned(),
            context: format!("{context} {}", self.manifest.file),
            source,
        }
    }

    fn wrong_key(&self, key: &BackupKey) -> VerifyError {
        VerifyError::WrongKey {
            id: self.id.to_owned(),
            snapshot_recipient: self.manifest.encryption.recipient.clone(),
            key_recipient: key.recipient(),
        }
    }

    fn undecryptable(&self, reason: String) -> VerifyError {
        VerifyError::Undecryptable {
            id: self.id.to_owned(),
            file: self.manifest.file.clone(),
            reason,
        }
    }

    fn mismatch(&self, reason: String) -> VerifyError {
        VerifyError::ContentMismatch {
            id: self.id.to_owned(),
            reason,
        }
    }

    fn bad_rdb(&self, reason: String) -> VerifyError {
        VerifyError::BadRdb {
            id: self.id.to_owned(),
            reason,
        }
    }
}

/// What scanning an RDB found: its key counts, or why it is no RDB.
type Scanned = Result<(RdbInfo, u64), redis::RdbError>;

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; FILE_BUFFER];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(sha.finalize()));
        }
        sha.update(&buf[..n]);
    }
}
