//! Sealed gossip packets: every datagram is encrypted and authenticated with
//! ChaCha20-Poly1305 under a key of the [`Keyring`], and carries what the
//! [`ReplayGuard`](super::replay::ReplayGuard) needs to accept it once.
//!
//! ```text
//! packet    = version (1) ‖ key id (8) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
//! nonce     = run (8, big-endian) ‖ counter (4, big-endian)
//! plaintext = sent at (8, ms since the Unix epoch, big-endian) ‖ envelope body
//! AAD       = version ‖ key id
//! ```
//!
//! The nonce is the sender's run and a per-packet counter: unique per key as long as no
//! two senders draw the same run (64 random bits each), with no randomness needed per
//! packet. Everything the replay guard reads (run, counter, time) is authenticated, the
//! run and counter as the nonce. A receiver looks the key up by its id and makes one
//! decryption attempt per packet, so a flood of forgeries costs one AEAD each.

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Nonce, Tag};

use super::keyring::{KEY_ID_LEN, KeyId, Keyring};

/// The sealed-packet format this build speaks.
pub const SEAL_VERSION: u8 = 1;

/// Bytes of the nonce.
const NONCE_LEN: usize = 12;

/// Bytes of the Poly1305 tag.
const TAG_LEN: usize = 16;

/// Bytes of the send time inside the ciphertext.
const TIME_LEN: usize = 8;

/// Bytes before the ciphertext.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// Bytes a sealed packet adds to its body.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + TIME_LEN + TAG_LEN;

/// Why a packet could not be opened; it is dropped and nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than the smallest sealed packet.
    #[error("packet of {len} bytes is shorter than the {SEAL_OVERHEAD}-byte seal")]
    Truncated {
        /// The packet's length.
        len: usize,
    },
    /// Sealed in a format this build does not speak.
    #[error("unknown seal version {0}")]
    Version(u8),
    /// Sealed under a key this node does not hold (another cluster, or a key removed
    /// here or not yet installed).
    #[error("sealed under key {0}, not in the keyring")]
    UnknownKey(KeyId),
    /// The tag does not match: forged, tampered with or corrupted.
    #[error("bad authentication tag")]
    Forged,
}

/// An opened packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's run.
    pub run: u64,
    /// The packet's counter in that run.
    pub counter: u32,
    /// When it was sealed, by the sender's clock (ms since the Unix epoch).
    pub sent_ms: u64,
    /// The envelope body.
    pub body: Vec<u8>,
}

/// Seals this node's packets: its run and the next counter.
#[derive(Debug, Clone)]
pub struct Sealer {
    run: u64,
    counter: u32,
}

impl Sealer {
    /// A sealer for run `run`. A node draws its run from the OS's randomness at start,
    /// so that no two senders share one (a shared run under one key repeats nonces).
    pub fn new(run: u64) -> Self {
        Sealer { run, counter: 0 }
    }

    /// The run packets are sealed under now.
    pub fn run(&self) -> u64 {
        self.run
    }

    /// Seals `parts` (concatenated: the body) under the keyring's primary key, as sent
    /// at `sent_ms`.
    pub fn seal(&mut self, keyring: &Keyring, sent_ms: u64, parts: &[&[u8]]) -> Vec<u8> {
        let body_len: usize = parts.iter().map(|p| p.len()).sum();
        let mut packet = Vec::with_capacity(SEAL_OVERHEAD + body_len);
        let key_id = keyring.primary();
        packet.push(SEAL_VERSION);
        packet.extend_from_slice(&key_id.0);
        packet.extend_from_slice(&self.run.to_be_bytes());
        packet.extend_from_slice(&self.counter.to_be_bytes());
        packet.extend_from_slice(&sent_ms.to_be_bytes());
        for part in parts {
            packet.extend_from_slice(part);
        }
        let (header, plaintext) = packet.split_at_mut(HEADER_LEN);
        let nonce = Nonce::from_slice(&header[1 + KEY_ID_LEN..]);
        let tag = keyring
            .primary_cipher()
            .encrypt_in_place_detached(nonce, &header[..1 + KEY_ID_LEN], plaintext)
            .expect("a gossip packet is far below ChaCha20-Poly1305's length limit");
        packet.extend_from_slice(&tag);
        self.advance();
        packet
    }

    fn advance(&mut self) {
        match self.counter.checked_add(1) {
            Some(next) => self.counter = next,
            None => {
                // 2^32 packets in one run: move to a new run rather than repeat a nonce.
                // A SplitMix64 step keeps the runs of different senders apart.
                self.run = splitmix64(self.run);
                self.counter = 0;
            }
        }
    }
}

/// A run derived from a seed, for deterministic runs (tests and simulations); a node
/// draws its run from the OS's randomness instead.
pub fn derived_run(seed: u64) -> u64 {
    splitmix64(seed)
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Opens a sealed packet with whichever installed key it names.
pub fn open(keyring: &Keyring, packet: &[u8]) -> Result<Opened, SealError> {
    if packet.len() < SEAL_OVERHEAD {
        return Err(SealError::Truncated { len: packet.len() });
    }
    let (header, rest) = packet.split_at(HEADER_LEN);
    if header[0] != SEAL_VERSION {
        return Err(SealError::Version(header[0]));
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&header[1..1 + KEY_ID_LEN]);
    let key_id = KeyId(id);
    let cipher = keyring
        .cipher(key_id)
        .ok_or(SealError::UnknownKey(key_id))?;
    let nonce_bytes = &header[1 + KEY_ID_LEN..];
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut plaintext = ciphertext.to_vec();
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce_bytes),
            &header[..1 + KEY_ID_LEN],
            &mut plaintext,
            Tag::from_slice(tag),
        )
        .map_err(|_| SealError::Forged)?;
    let (run, counter) = nonce_bytes.split_at(8);
    let sent_ms = u64::from_be_bytes(plaintext[..TIME_LEN].try_into().expect("8 bytes"));
    plaintext.drain(..TIME_LEN);
    Ok(Opened {
        run: u64::from_be_bytes(run.try_into().expect("8 bytes")),
        counter: u32::from_be_bytes(counter.try_into().expect("4 bytes")),
        sent_ms,
        body: plaintext,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::keyring::{GOSSIP_KEY_LEN, GossipKey};
    use super::*;

    fn ring(byte: u8) -> Keyring {
        Keyring::new(GossipKey::from_bytes([byte; GOSSIP_KEY_LEN]))
    }

    #[test]
    fn a_sealed_packet_opens_to_its_body_run_counter_and_time() {
        let keys = ring(1);
        let mut sealer = Sealer::new(42);
        let first = sealer.seal(&keys, 1_000, &[b"he", b"llo"]);
        let second = sealer.seal(&keys, 1_001, &[b"hello"]);
        assert_eq!(first.len(), SEAL_OVERHEAD + 5);
        assert_ne!(
            first[HEADER_LEN..],
            second[HEADER_LEN..],
            "fresh nonce each time"
        );
        assert!(
            !first.windows(5).any(|w| w == b"hello"),
            "the body is encrypted"
        );
        let opened = open(&keys, &first).unwrap();
        assert_eq!(
            opened,
            Opened {
                run: 42,
                counter: 0,
                sent_ms: 1_000,
                body: b"hello".to_vec()
            }
        );
        assert_eq!(open(&keys, &second).unwrap().counter, 1);
    }

    #[test]
    fn any_flipped_bit_is_refused() {
        let keys = ring(1);
        let packet = Sealer::new(1).seal(&keys, 5, &[b"hello"]);
        for i in 0..packet.len() {
            for bit in 0..8 {
                let mut bad = packet.clone();
                bad[i] ^= 1 << bit;
                assert!(open(&keys, &bad).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn a_packet_under_a_key_not_held_is_refused_and_an_accepted_key_opens() {
        let packet = Sealer::new(1).seal(&ring(1), 5, &[b"x"]);
        assert!(matches!(
            open(&ring(2), &packet),
            Err(SealError::UnknownKey(_))
        ));
        let mut both = ring(2);
        both.install(GossipKey::from_bytes([1; GOSSIP_KEY_LEN]))
            .unwrap();
        assert_eq!(open(&both, &packet).unwrap().body, b"x");
        assert!(matches!(
            open(&both, &packet[..SEAL_OVERHEAD - 1]),
            Err(SealError::Truncated { .. })
        ));
        let mut version = packet.clone();
        version[0] = 9;
        assert_eq!(open(&both, &version), Err(SealError::Version(9)));
    }

    #[test]
    fn the_counter_rolls_over_into_a_new_run() {
        let mut sealer = Sealer {
            run: 7,
            counter: u32::MAX,
        };
        let keys = ring(1);
        let last = open(&keys, &sealer.seal(&keys, 0, &[])).unwrap();
        let next = open(&keys, &sealer.seal(&keys, 0, &[])).unwrap();
        assert_eq!((last.run, last.counter), (7, u32::MAX));
        assert_ne!(next.run, 7);
        assert_eq!(next.counter, 0);
    }

    proptest! {
        #[test]
        fn random_packets_never_open_or_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let keys = ring(1);
            let mut packet = bytes.clone();
            if packet.len() > HEADER_LEN {
                // Even naming the right key, random bytes do not authenticate.
                packet[0] = SEAL_VERSION;
                packet[1..1 + KEY_ID_LEN].copy_from_slice(&keys.primary().0);
            }
            prop_assert!(open(&keys, &bytes).is_err());
            prop_assert!(open(&keys, &packet).is_err());
        }
    }
}
