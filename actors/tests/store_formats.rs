//! A store written by an earlier release opens under this one with nothing lost. The
//! fixtures in `tests/fixtures/` are data dirs' `store/` written by a release's agent
//! (three items, one per user, 16 partitions); a release must open every one it
//! promises to upgrade from (the release before it), read back what was acknowledged,
//! and go on writing.

use std::path::Path;

use chorus_actors::store::{Durability, LogConfig, Store, StoreConfig};
use chorus_protocol::{FunctionRef, Item, ItemId, Kind, NodeId};

/// Copies `from` into `to`, recursively (opening a store writes to it).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The items the first release's fixture holds: (id, user, text, rating).
const STORE_V1_ITEMS: [(&str, &str, &str, u8); 3] = [
    ("01M97Y6Z8ZWS144PH5Z56REB2M", "user-1", "fixture item 1", 1),
    ("01M97Y6ZCCBEXNJGJDWCMT7101", "user-2", "fixture item 2", 2),
    ("01M97Y6ZF9E48D97GSV00XDF5S", "user-3", "fixture item 3", 3),
];

#[test]
fn a_store_written_by_the_first_release_opens_with_every_item_and_takes_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1"),
        &path,
    );
    let config = || StoreConfig {
        path: path.clone(),
        node: NodeId("node-1".into()),
        partitions: 16,
        durability: Durability::Full,
        log: LogConfig::default(),
    };
    let store = Store::open(config()).unwrap();
    for (id, user, text, rating) in STORE_V1_ITEMS {
        let id: ItemId = id.parse().unwrap();
        let stored = store.get(id).unwrap().expect("an item of the old store");
        assert_eq!(stored.item.user_id, user);
        assert_eq!(stored.item.text, text);
        assert_eq!(stored.item.rating, Some(rating));
        let (listed, _) = store.list_by_user(user, None, 10).unwrap();
        assert_eq!(listed.iter().map(|s| s.item.id).collect::<Vec<_>>(), [id]);
    }
    let mut item = Item::new("user-1", Kind::Text);
    item.text = "written by this release".into();
    item.function = Some(FunctionRef {
        name: "resize".into(),
        version: "1".into(),
    });
    store.apply(vec![item.clone()]).remove(0).unwrap();
    // The old store's items name no function: counted when it opened, they add nothing.
    store.flush().unwrap();
    let stats = store.function_stats(|_| true);
    assert_eq!(stats.values().map(|s| s.items).collect::<Vec<_>>(), [1]);
    drop(store);
    let reopened = Store::open(config()).unwrap();
    assert_eq!(
        reopened.list_by_user("user-1", None, 10).unwrap().0.len(),
        2
    );
    assert!(reopened.get(item.id).unwrap().is_some());
}
