//! What the store tests hold a store to: a model of every item's user and newest
//! verdict, and the check that the store answers exactly that by id and by listing;
//! and the small store the module tests open.

use std::collections::BTreeMap;

use chorus_protocol::{ItemId, Status};

use super::Store;

/// A store of 8 partitions under `dir`, flushed (not synced) at each write.
pub(crate) fn small_store(dir: &std::path::Path) -> super::StoreConfig {
    super::StoreConfig {
        path: dir.join("store"),
        node: chorus_protocol::NodeId("node-a".into()),
        partitions: 8,
        durability: super::Durability::Flush,
        log: super::LogConfig::default(),
    }
}

/// id → (user, newest status).
pub(crate) type Model = BTreeMap<ItemId, (String, Status)>;

/// A rejection naming `round`, to tell verdict rewrites apart.
pub(crate) fn rejected(round: usize) -> Status {
    Status::Rejected {
        reasons: vec![format!("round {round}")],
    }
}

/// Every item readable by id and by its user's listing, with its newest verdict, and
/// nothing else listed.
pub(crate) fn check(store: &Store, model: &Model) {
    for (id, (user, status)) in model {
        let stored = store
            .get(*id)
            .unwrap()
            .unwrap_or_else(|| panic!("{id:?} lost"));
        assert_eq!(&stored.item.user_id, user);
        assert_eq!(&stored.receipt.status, status, "{id:?}");
    }
    let mut users: BTreeMap<&str, Vec<ItemId>> = BTreeMap::new();
    for (id, (user, _)) in model {
        users.entry(user).or_default().push(*id);
    }
    for (user, mut expected) in users {
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = store.list_by_user(user, after, 50).unwrap();
            for stored in page {
                assert_eq!(&model[&stored.item.id].1, &stored.receipt.status);
                listed.push(stored.item.id);
            }
            match next {
                Some(token) => after = Some(token),
                None => break,
            }
        }
        listed.sort();
        expected.sort();
        assert_eq!(listed, expected, "listing of {user}");
    }
}
