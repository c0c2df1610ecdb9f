//! Key layouts of the store's trees. Every key that belongs to a user starts with the
//! user's partition (`u16` big-endian) so that a partition is one contiguous key range.

use chorus_protocol::{ItemId, PartitionId};

/// Bytes of the partition prefix.
pub(crate) const PARTITION_LEN: usize = 2;
/// Bytes of an id in a key.
pub(crate) const ID_LEN: usize = 16;
/// Bytes of a `stored_at` timestamp in a key.
const STORED_AT_LEN: usize = 8;

/// The `items` prefix of one user: partition ‖ user_len(u8) ‖ user bytes. The length byte
/// keeps one user's range from containing another whose name extends it.
///
/// The caller guarantees `user_id.len() <= u8::MAX` (the schema allows 128 bytes).
pub(crate) fn user_prefix(partition: PartitionId, user_id: &str) -> Vec<u8> {
    debug_assert!(user_id.len() <= usize::from(u8::MAX));
    let mut key = Vec::with_capacity(PARTITION_LEN + 1 + user_id.len() + STORED_AT_LEN + ID_LEN);
    key.extend_from_slice(&partition.to_be_bytes());
    key.push(user_id.len() as u8);
    key.extend_from_slice(user_id.as_bytes());
    key
}

/// `items`: user prefix ‖ stored_at(u64 BE) ‖ id, so a user's items sort oldest first.
pub(crate) fn item_key(
    partition: PartitionId,
    user_id: &str,
    stored_at: u64,
    id: ItemId,
) -> Vec<u8> {
    let mut key = user_prefix(partition, user_id);
    key.extend_from_slice(&stored_at.to_be_bytes());
    key.extend_from_slice(&id.to_bytes());
    key
}

/// The `(stored_at, id)` at the end of an `items` key, or `None` if it is too short.
pub(crate) fn split_item_key(key: &[u8]) -> Option<(u64, ItemId)> {
    let tail = key.len().checked_sub(STORED_AT_LEN + ID_LEN)?;
    let stored_at = u64::from_be_bytes(key[tail..tail + STORED_AT_LEN].try_into().ok()?);
    let id = ItemId::from_bytes(key[tail + STORED_AT_LEN..].try_into().ok()?);
    Some((stored_at, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_start_with_the_partition_big_endian() {
        let id = ItemId(0x0102);
        let k = item_key(0x0a0b, "bob", 7, id);
        assert_eq!(&k[..6], &[0x0a, 0x0b, 3, b'b', b'o', b'b']);
        assert_eq!(split_item_key(&k), Some((7, id)));
    }

    #[test]
    fn a_user_range_excludes_a_longer_name() {
        let short = user_prefix(1, "bo");
        let long = item_key(1, "bob", 1, ItemId(1));
        assert!(!long.starts_with(&short));
    }

    #[test]
    fn by_user_keys_sort_by_time_then_id() {
        let a = item_key(1, "u", 5, ItemId(9));
        let b = item_key(1, "u", 6, ItemId(1));
        let c = item_key(1, "u", 6, ItemId(2));
        assert!(a < b && b < c);
    }
}
