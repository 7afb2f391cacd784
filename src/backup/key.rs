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
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What the MAC key is derived for; a new version of the scheme changes it.
const MAC_KEY_INFO: &[u8] = b"titan-dr snapshot manifest MAC v1";

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

    /// The MAC of `bytes` (a manifest without its MAC), hex: HMAC-SHA256 keyed by HKDF-SHA256
    /// from the identity. Only a holder of the secret key can make one; the recipient in a
    /// manifest, which is public, is not enough.
    pub fn mac(&self, bytes: &[u8]) -> String {
        hex::encode(self.hmac(bytes).finalize().into_bytes())
    }

    /// Whether `mac` (hex) is the MAC of `bytes` under this key; compared in constant time.
    pub fn verifies_mac(&self, bytes: &[u8], mac: &str) -> bool {
        let Ok(mac) = hex::decode(mac) else {
            return false;
        };
        self.hmac(bytes).verify_slice(&mac).is_ok()
    }

    fn hmac(&self, bytes: &[u8]) -> Hmac<Sha256> {
        let secret = self.identity.to_string();
        let derive = Hkdf::<Sha256>::new(None, secret.expose_secret().as_bytes());
        let mut key = [0u8; 32];
        derive
            .expand(MAC_KEY_INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut hmac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes a key of any length");
        hmac.update(bytes);
        hmac
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
    fn only_the_same_key_verifies_a_mac() {
        let key = BackupKey::generate();
        let mac = key.mac(b"manifest");
        assert_eq!(mac.len(), 64);
        assert!(key.verifies_mac(b"manifest", &mac));
        assert!(!key.verifies_mac(b"manifest!", &mac), "other bytes");
        assert!(
            !BackupKey::generate().verifies_mac(b"manifest", &mac),
            "another key"
        );
        assert!(!key.verifies_mac(b"manifest", "not hex"));
        let same = BackupKey::parse(&key.to_key_file(), "the key file").unwrap();
        assert_eq!(
            same.mac(b"manifest"),
            mac,
            "the MAC depends on the key alone"
        );
    }

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
