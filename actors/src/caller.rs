//! Who makes a request, as the pipeline's limits and logs see it.

use std::sync::Arc;

use chorus_protocol::{KEY_ID_HEX_LEN, Role};
use sha2::{Digest, Sha256};

/// The role of the API key a request comes with, and a stable, non-secret id of that
/// key (a prefix of its SHA-256, the same hash the store keeps): per-key rate limits
/// and logs use the id, never the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// What the key may do.
    pub role: Role,
    /// The key's id.
    pub key_id: Arc<str>,
}

impl Caller {
    /// The caller presenting `api_key`, whose role the store confirmed.
    pub fn for_key(api_key: &str, role: Role) -> Self {
        let hash = hex::encode(Sha256::digest(api_key.as_bytes()));
        Caller {
            role,
            key_id: Arc::from(&hash[..KEY_ID_HEX_LEN]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_stable_and_does_not_reveal_the_key() {
        let a = Caller::for_key("chorus_secret", Role::Submit);
        assert_eq!(a, Caller::for_key("chorus_secret", Role::Submit));
        assert_ne!(
            a.key_id,
            Caller::for_key("chorus_other", Role::Submit).key_id
        );
        assert!(!a.key_id.contains("secret"));
        assert_eq!(a.key_id.len(), KEY_ID_HEX_LEN);
    }
}
