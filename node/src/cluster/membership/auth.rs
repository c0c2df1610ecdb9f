//! Packet authentication: every gossip datagram is `tag || body`, the tag an HMAC-SHA256
//! of the body under the cluster key, truncated to [`TAG_LEN`] bytes.
//!
//! The tag proves the sender holds the cluster key; it does not hide the body (membership
//! is not secret) and does not stop a replay of a captured packet, whose worst effect is
//! repeating stale gossip that SWIM's incarnations already tolerate.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the truncated HMAC-SHA256 tag in front of every packet (128 bits).
pub const TAG_LEN: usize = 16;

/// Bytes of a cluster key.
pub const KEY_LEN: usize = 32;

/// The cluster's shared gossip key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub [u8; KEY_LEN]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// Why a packet was refused; the packet is dropped and nothing else changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The packet is shorter than a tag, so it carries no body to check.
    #[error("packet of {len} bytes is shorter than its {TAG_LEN}-byte tag")]
    Truncated {
        /// The packet's length.
        len: usize,
    },
    /// The tag does not match the body under this cluster's key (wrong key, tampering or
    /// corruption).
    #[error("bad authentication tag")]
    BadTag,
}

/// Signs and verifies packets under one cluster key.
#[derive(Clone)]
pub struct Authenticator {
    /// The MAC already keyed, cloned per packet so the key schedule runs once.
    keyed: Hmac<Sha256>,
}

impl Authenticator {
    /// An authenticator for `key`.
    pub fn new(key: &ClusterKey) -> Self {
        let keyed =
            <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC accepts any key length");
        Authenticator { keyed }
    }

    /// `tag || body` as a new packet, where the body is `parts` concatenated (so that an
    /// envelope header and a payload need not be copied together first).
    pub fn seal_parts(&self, parts: &[&[u8]]) -> Vec<u8> {
        let mut mac = self.keyed.clone();
        let mut len = TAG_LEN;
        for part in parts {
            mac.update(part);
            len += part.len();
        }
        let tag = mac.finalize().into_bytes();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&tag[..TAG_LEN]);
        for part in parts {
            out.extend_from_slice(part);
        }
        out
    }

    /// `tag || body` as a new packet.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        self.seal_parts(&[body])
    }

    /// The body of `packet` if its tag is right (checked in constant time).
    pub fn open<'a>(&self, packet: &'a [u8]) -> Result<&'a [u8], AuthError> {
        if packet.len() < TAG_LEN {
            return Err(AuthError::Truncated { len: packet.len() });
        }
        let (tag, body) = packet.split_at(TAG_LEN);
        let mut mac = self.keyed.clone();
        mac.update(body);
        mac.verify_truncated_left(tag)
            .map_err(|_| AuthError::BadTag)?;
        Ok(body)
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(byte: u8) -> Authenticator {
        Authenticator::new(&ClusterKey([byte; KEY_LEN]))
    }

    #[test]
    fn a_sealed_packet_opens_to_its_body() {
        let a = auth(1);
        let packet = a.seal(b"hello");
        assert_eq!(packet.len(), TAG_LEN + 5);
        assert_eq!(a.open(&packet), Ok(&b"hello"[..]));
        assert_eq!(a.open(&a.seal(b"")), Ok(&b""[..]));
        assert_eq!(a.seal_parts(&[b"he", b"", b"llo"]), packet);
    }

    #[test]
    fn a_flipped_bit_is_a_bad_tag() {
        let a = auth(1);
        for i in 0..TAG_LEN + 5 {
            let mut packet = a.seal(b"hello");
            packet[i] ^= 0x01;
            assert_eq!(a.open(&packet), Err(AuthError::BadTag), "byte {i}");
        }
    }

    #[test]
    fn another_clusters_key_is_rejected() {
        let packet = auth(1).seal(b"hello");
        assert_eq!(auth(2).open(&packet), Err(AuthError::BadTag));
    }

    #[test]
    fn truncated_packets_are_rejected() {
        let a = auth(1);
        let packet = a.seal(b"hello");
        for len in 0..TAG_LEN {
            assert_eq!(a.open(&packet[..len]), Err(AuthError::Truncated { len }));
        }
        assert_eq!(a.open(&packet[..TAG_LEN + 2]), Err(AuthError::BadTag));
    }
}
