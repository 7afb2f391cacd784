//! The key that encrypts and decrypts snapshots: an age X25519 identity.
//!
//! Why an identity rather than a passphrase: it is what `age-keygen` makes and `age -d -i`
//! reads, so an operator can decrypt a snapshot with Debian's `age` alone; it needs no
//! work factor (scrypt passphrases cost a second per file by design); and its public half,
//! the recipient `age1...`, can be written into each manifest, so a wrong key is named as
//! such before any decryption is tried. The same text goes into the Secret: the file that
//! `age-keygen` writes (comments allowed) or just the `AGE-SECRET-KEY-1...` line.

use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

/// An age X25519 identity; its recipient is what snapshots are encrypted to.
#[derive(Clone)]
pub struct BackupKey {
    identity: age::x25519::Identity,
}

/// Key material that could not be used. Messages never include the material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no AGE-SECRET-KEY-1... line in {0}")]
    Missing(String),
    #[error("the key in {source_name} is not a valid age X25519 identity: {reason}")]
    Invalid {
        source_name: String,
        reason: &'static str,
    },
    #[error("{source_name} holds more than one key; use a file with exactly one")]
    Several { source_name: String },
    #[error("reading the key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl BackupKey {
    /// A new random identity.
    pub fn generate() -> Self {
        Self {
            identity: age::x25519::Identity::generate(),
        }
    }

    /// Reads an identity from text in `age-keygen`'s format: `#` comments, blank lines and
    /// one `AGE-SECRET-KEY-1...` line. `source_name` says in errors where the text came from
    /// (a file, a Secret's key).
    ///
    /// # Errors
    ///
    /// [`KeyError`] when there is not exactly one valid identity.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, KeyError> {
        let mut keys = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'));
        let line = keys
            .next()
            .ok_or_else(|| KeyError::Missing(source_name.to_owned()))?;
        if keys.next().is_some() {
            return Err(KeyError::Several {
                source_name: source_name.to_owned(),
            });
        }
        let identity =
            age::x25519::Identity::from_str(line).map_err(|reason| KeyError::Invalid {
                source_name: source_name.to_owned(),
                reason,
            })?;
        Ok(Self { identity })
    }

    /// Reads an identity from a file (see [`BackupKey::parse`]).
    ///
    /// # Errors
    ///
    /// [`KeyError`] when the file cannot be read or holds no single valid identity.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// The public half, `age1...`: what snapshots are encrypted to, recorded in manifests.
    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    /// The identity in `age-keygen`'s file format, for a key file or a Secret.
    pub fn to_key_file(&self) -> String {
        format!(
            "# public key: {}\n{}\n",
            self.recipient(),
            self.identity.to_string().expose_secret()
        )
    }

    pub(crate) fn identity(&self) -> &age::x25519::Identity {
        &self.identity
    }

    pub(crate) fn encryptor(&self) -> age::Encryptor {
        let recipient = self.identity.to_public();
        age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
            .expect("one X25519 recipient is always a valid recipient set")
    }
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupKey")
            .field("recipient", &self.recipient())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_file_parses_back() {
        let key = BackupKey::generate();
        let again = BackupKey::parse(&key.to_key_file(), "test").unwrap();
        assert_eq!(again.recipient(), key.recipient());
        assert!(key.recipient().starts_with("age1"));
    }

    #[test]
    fn bad_key_material_is_named_without_leaking_it() {
        let err = BackupKey::parse("# only a comment\n\n", "secret backup-key").unwrap_err();
        assert!(err.to_string().contains("secret backup-key"), "{err}");
        let err = BackupKey::parse("AGE-SECRET-KEY-1NOTAKEY", "f").unwrap_err();
        assert!(!err.to_string().contains("NOTAKEY"), "{err}");
        let two = format!(
            "{}{}",
            BackupKey::generate().to_key_file(),
            BackupKey::generate().to_key_file()
        );
        assert!(matches!(
            BackupKey::parse(&two, "f"),
            Err(KeyError::Several { .. })
        ));
    }

    #[test]
    fn debug_shows_only_the_recipient() {
        let key = BackupKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.recipient()));
        assert!(!shown.contains("AGE-SECRET-KEY"));
    }
}
