//! The gossip keyring, on the model of Serf's: one primary key that seals every packet
//! this node sends, and accepted keys that open packets too. Rotating is three steps run
//! on every member — install the new key everywhere, use it everywhere, remove the old
//! one everywhere — and at no point does a member receive a packet it cannot open.
//!
//! A key is named by its [`KeyId`], a short hash of the key, so that operators and
//! packets can name a key without showing it. The keyring starts from the cluster key
//! ([`Keyring::from_cluster_key`]), so a cluster configured before keyrings existed
//! needs no new setting.

use std::fmt;
use std::str::FromStr;

use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::auth::ClusterKey;

/// Bytes of a gossip key (a ChaCha20-Poly1305 key).
pub const GOSSIP_KEY_LEN: usize = 32;

/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 8;

/// The most keys a keyring holds: rotation needs two; a few more allow overlapping
/// rotations, and the bound keeps a packet's key lookup and the keyring file small.
pub const MAX_KEYS: usize = 16;

/// The HKDF-SHA256 label (`info`) the initial gossip key is derived under from the
/// cluster key: its own label keeps it apart from the link cookie.
pub const INITIAL_KEY_LABEL: &[u8] = b"chorus/gossip-key/v1";

/// The domain separator of key ids.
const KEY_ID_DOMAIN: &[u8] = b"chorus/gossip-key-id/v1";

/// A gossip key. Its bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey([u8; GOSSIP_KEY_LEN]);

impl GossipKey {
    /// The key made of `bytes`.
    pub fn from_bytes(bytes: [u8; GOSSIP_KEY_LEN]) -> Self {
        GossipKey(bytes)
    }

    /// The key as hex (for the keyring file and `chorus ctl gossip-keys install`).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The id that names this key.
    pub fn id(&self) -> KeyId {
        let digest = Sha256::new()
            .chain_update(KEY_ID_DOMAIN)
            .chain_update(self.0)
            .finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        KeyId(id)
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&self.0.into())
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipKey({})", self.id())
    }
}

impl FromStr for GossipKey {
    type Err = KeyringError;

    /// Parses a key written as 64 hex digits.
    fn from_str(s: &str) -> Result<Self, KeyringError> {
        let mut bytes = [0u8; GOSSIP_KEY_LEN];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| KeyringError::BadKey)?;
        Ok(GossipKey(bytes))
    }
}

/// The name of a gossip key: the first [`KEY_ID_LEN`] bytes of a SHA-256 of it, shown as
/// hex. Carried in every sealed packet so the receiver tries one key, not all.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl FromStr for KeyId {
    type Err = KeyringError;

    /// Parses an id written as 16 hex digits.
    fn from_str(s: &str) -> Result<Self, KeyringError> {
        let mut bytes = [0u8; KEY_ID_LEN];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| KeyringError::BadKeyId)?;
        Ok(KeyId(bytes))
    }
}

/// Why a keyring operation was refused; the keyring is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// The text is not a key of [`GOSSIP_KEY_LEN`] bytes in hex.
    #[error("a gossip key is {GOSSIP_KEY_LEN} bytes written as 64 hex digits")]
    BadKey,
    /// The text is not a key id of [`KEY_ID_LEN`] bytes in hex.
    #[error("a key id is 16 hex digits (see `chorus ctl gossip-keys list`)")]
    BadKeyId,
    /// No installed key has this id.
    #[error("no key {0} is installed")]
    Unknown(KeyId),
    /// The primary key seals every packet sent; use another key first.
    #[error("key {0} is the primary key; use another key before removing it")]
    Primary(KeyId),
    /// The keyring holds [`MAX_KEYS`] keys already.
    #[error("the keyring holds {MAX_KEYS} keys already; remove one first")]
    Full,
    /// A keyring file names a primary key it does not hold, or holds none.
    #[error("the keyring names primary key {0}, which it does not hold")]
    MissingPrimary(KeyId),
}

/// One key of a keyring as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: String,
    /// Whether it seals the packets this node sends.
    pub primary: bool,
}

struct Entry {
    id: KeyId,
    key: GossipKey,
    cipher: ChaCha20Poly1305,
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Entry {
            id: self.id,
            key: self.key.clone(),
            cipher: self.key.cipher(),
        }
    }
}

/// The keys this node seals and opens gossip with.
#[derive(Clone)]
pub struct Keyring {
    primary: KeyId,
    /// Installed keys in the order they were installed (the primary among them).
    entries: Vec<Entry>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("primary", &self.primary)
            .field(
                "keys",
                &self.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Keyring {
    /// A keyring holding `primary` alone.
    pub fn new(primary: GossipKey) -> Self {
        let id = primary.id();
        Keyring {
            primary: id,
            entries: vec![Entry {
                id,
                cipher: primary.cipher(),
                key: primary,
            }],
        }
    }

    /// The keyring every member of a cluster starts with: one key, derived from the
    /// cluster key with HKDF-SHA256 under [`INITIAL_KEY_LABEL`].
    pub fn from_cluster_key(cluster_key: &ClusterKey) -> Self {
        let hkdf = hkdf::Hkdf::<Sha256>::new(None, &cluster_key.0);
        let mut key = [0u8; GOSSIP_KEY_LEN];
        hkdf.expand(INITIAL_KEY_LABEL, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Keyring::new(GossipKey(key))
    }

    /// The id of the key packets are sealed with.
    pub fn primary(&self) -> KeyId {
        self.primary
    }

    /// Every installed key, in the order installed.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.entries
            .iter()
            .map(|e| KeyInfo {
                id: e.id.to_string(),
                primary: e.id == self.primary,
            })
            .collect()
    }

    /// Installs `key` as an accepted key (installing a key already held changes
    /// nothing); returns its id.
    pub fn install(&mut self, key: GossipKey) -> Result<KeyId, KeyringError> {
        let id = key.id();
        if self.entries.iter().any(|e| e.id == id) {
            return Ok(id);
        }
        if self.entries.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.entries.push(Entry {
            id,
            cipher: key.cipher(),
            key,
        });
        Ok(id)
    }

    /// Makes the installed key `id` the primary key.
    pub fn use_key(&mut self, id: KeyId) -> Result<(), KeyringError> {
        if !self.entries.iter().any(|e| e.id == id) {
            return Err(KeyringError::Unknown(id));
        }
        self.primary = id;
        Ok(())
    }

    /// Removes the accepted key `id` (never the primary key).
    pub fn remove(&mut self, id: KeyId) -> Result<(), KeyringError> {
        if id == self.primary {
            return Err(KeyringError::Primary(id));
        }
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        if self.entries.len() == before {
            return Err(KeyringError::Unknown(id));
        }
        Ok(())
    }

    /// The cipher of the primary key.
    pub(super) fn primary_cipher(&self) -> &ChaCha20Poly1305 {
        self.cipher(self.primary)
            .expect("the primary key is always installed")
    }

    /// The cipher of key `id`, if installed.
    pub(super) fn cipher(&self, id: KeyId) -> Option<&ChaCha20Poly1305> {
        self.entries.iter().find(|e| e.id == id).map(|e| &e.cipher)
    }

    /// The keyring as written to its file.
    pub fn to_file(&self) -> KeyringFile {
        KeyringFile {
            primary: self.primary.to_string(),
            keys: self.entries.iter().map(|e| e.key.to_hex()).collect(),
        }
    }

    /// The keyring a file describes.
    pub fn from_file(file: &KeyringFile) -> Result<Self, KeyringError> {
        let primary: KeyId = file.primary.parse()?;
        let mut ring = Keyring {
            primary,
            entries: Vec::new(),
        };
        for key in &file.keys {
            ring.install(key.parse::<GossipKey>()?)?;
        }
        if ring.cipher(primary).is_none() {
            return Err(KeyringError::MissingPrimary(primary));
        }
        Ok(ring)
    }
}

/// A keyring as stored in the data dir (JSON, mode 0600): hex keys, the primary by id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyringFile {
    /// The primary key's id.
    pub primary: String,
    /// Every installed key, in hex.
    pub keys: Vec<String>,
}

impl fmt::Debug for KeyringFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringFile")
            .field("primary", &self.primary)
            .field("keys", &format_args!("<{} redacted>", self.keys.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> GossipKey {
        GossipKey([byte; GOSSIP_KEY_LEN])
    }

    #[test]
    fn install_use_remove_is_serfs_rotation() {
        let mut ring = Keyring::new(key(1));
        let old = key(1).id();
        let new = ring.install(key(2)).unwrap();
        assert_eq!(
            ring.primary(),
            old,
            "installing does not change the primary"
        );
        assert_eq!(
            ring.install(key(2)),
            Ok(new),
            "installing twice is harmless"
        );
        assert_eq!(ring.list().len(), 2);
        assert_eq!(ring.remove(old), Err(KeyringError::Primary(old)));
        ring.use_key(new).unwrap();
        ring.remove(old).unwrap();
        assert_eq!(
            ring.list(),
            vec![KeyInfo {
                id: new.to_string(),
                primary: true
            }]
        );
        assert_eq!(ring.remove(old), Err(KeyringError::Unknown(old)));
        assert_eq!(ring.use_key(old), Err(KeyringError::Unknown(old)));
    }

    #[test]
    fn the_keyring_is_bounded() {
        let mut ring = Keyring::new(key(0));
        for byte in 1..MAX_KEYS as u8 {
            ring.install(key(byte)).unwrap();
        }
        assert_eq!(ring.install(key(200)), Err(KeyringError::Full));
    }

    #[test]
    fn the_file_round_trips_and_names_its_primary() {
        let mut ring = Keyring::new(key(1));
        let second = ring.install(key(2)).unwrap();
        ring.use_key(second).unwrap();
        let file = ring.to_file();
        let back = Keyring::from_file(&file).unwrap();
        assert_eq!(back.primary(), second);
        assert_eq!(back.list(), ring.list());
        let mut broken = file.clone();
        broken.primary = key(3).id().to_string();
        assert!(matches!(
            Keyring::from_file(&broken),
            Err(KeyringError::MissingPrimary(_))
        ));
    }

    #[test]
    fn keys_and_ids_parse_from_hex_and_never_print() {
        let k: GossipKey = key(0xab).to_hex().parse().unwrap();
        assert_eq!(k, key(0xab));
        assert!("abc".parse::<GossipKey>().is_err());
        assert_eq!(k.id().to_string().parse::<KeyId>().unwrap(), k.id());
        let shown = format!(
            "{k:?} {:?} {:?}",
            Keyring::new(k.clone()),
            Keyring::new(k.clone()).to_file()
        );
        assert!(!shown.contains(&"ab".repeat(8)), "{shown}");
    }

    #[test]
    fn the_initial_key_is_derived_and_not_the_cluster_key() {
        let cluster = ClusterKey([7; 32]);
        let a = Keyring::from_cluster_key(&cluster);
        assert_eq!(a.primary(), Keyring::from_cluster_key(&cluster).primary());
        assert_ne!(a.primary(), GossipKey([7; 32]).id());
        assert_ne!(
            a.primary(),
            Keyring::from_cluster_key(&ClusterKey([8; 32])).primary()
        );
    }
}
