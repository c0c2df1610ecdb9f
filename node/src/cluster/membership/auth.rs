//! The cluster key: the 32-byte secret every member is configured with
//! (`chorus certs init` writes it). Gossip is not sealed with it directly: the first
//! gossip key ([`super::keyring::Keyring::from_cluster_key`]) and the link cookie are
//! each derived from it with HKDF under a label of their own.

/// Bytes of a cluster key.
pub const KEY_LEN: usize = 32;

/// The cluster's shared secret. Its bytes never appear in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey(pub [u8; KEY_LEN]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_prints() {
        assert_eq!(
            format!("{:?}", ClusterKey([0xab; KEY_LEN])),
            "ClusterKey(..)"
        );
    }
}
