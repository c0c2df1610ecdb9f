//! The cluster's events, held whole by every member and merged by union (see the
//! protocol's `events` module for the numbering by origin).
//!
//! ```text
//! events            origin_len (u8) ‖ origin ‖ seq (u64 BE) → Event (bincode)
//! events_by_time    at_ms (u64 BE) ‖ origin_len ‖ origin ‖ seq (u64 BE) → ()
//! event_heads       origin → contiguous (u64 BE): seq 1..=contiguous are all held
//! version_status    name_len (u8) ‖ name ‖ version → VersionState (bincode)
//! current_versions  name → CurrentVersion (bincode)
//! privacy_spent     key id → ε spent, in millionths (u64 BE)
//! ```
//!
//! An origin's events are served only up to its contiguous head, so a reader never
//! sees event 12 of an origin before event 11 and a cursor past 11 means 1..=11 were
//! all offered. A merge keeps what it already holds (an event is immutable once
//! numbered), so merging is idempotent and commutative.
//!
//! The two status trees are a view over the events, kept as each event is first
//! stored: of the events that set one fact (a version's lifecycle, whether it requires
//! an update, a function's current version) the latest by [`EventPosition`] wins, so
//! every member that holds the same events shows the same status. A key's privacy
//! budget spent is the sum of its `privacy_spent` events, kept as each is first stored
//! (in millionths of ε, so that every member's sum is exact whatever the order).

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;

use bincode::{Decode, Encode};
use chorus_protocol::{
    Event, EventCursor, EventKind, EventPosition, EventTypes, FunctionRef, FunctionStatus,
    MAX_EVENTS_PAGE, NodeId, decode_value, encode_payload,
};
use sled::Transactional;
use tokio::sync::watch;

use super::{Store, StoreError, now_ms};

/// Most keys one listing by time reads before it answers, matching or not: a filter
/// that matches little gets a short page with a token, not an unbounded scan.
const MAX_SCANNED_PER_PAGE: usize = 20_000;

/// One version's status as its latest events set it.
#[derive(Clone, Debug, Default, PartialEq, Encode, Decode)]
struct VersionState {
    /// Deprecated or not, by the latest deprecate/activate event.
    deprecated: Option<(bool, Position)>,
    /// Requires an update or not, by the latest requires_update/update_cleared event.
    requires_update: Option<(bool, Position)>,
}

/// A function's current version and the event that named it.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
struct CurrentVersion {
    version: String,
    at: Position,
}

/// [`EventPosition`] in the status trees' own encoding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Encode, Decode)]
struct Position {
    at_ms: u64,
    origin: String,
    seq: u64,
}

impl From<&Event> for Position {
    fn from(event: &Event) -> Self {
        Position {
            at_ms: event.at_ms,
            origin: event.origin.0.clone(),
            seq: event.seq,
        }
    }
}

/// The events trees, with a signal that moves whenever events are added.
pub(crate) struct Events {
    events: sled::Tree,
    by_time: sled::Tree,
    heads: sled::Tree,
    versions: sled::Tree,
    current: sled::Tree,
    spent: sled::Tree,
    /// Serialises numbering and merging, so heads only move forward.
    write: Mutex<()>,
    added: watch::Sender<u64>,
}

impl Events {
    /// Opens the trees in `db`.
    pub(crate) fn open(db: &sled::Db) -> Result<Events, StoreError> {
        Ok(Events {
            events: db.open_tree("events")?,
            by_time: db.open_tree("events_by_time")?,
            heads: db.open_tree("event_heads")?,
            versions: db.open_tree("version_status")?,
            current: db.open_tree("current_versions")?,
            spent: db.open_tree("privacy_spent")?,
            write: Mutex::new(()),
            added: watch::channel(0).0,
        })
    }

    /// Numbers `kinds` as `origin`'s next events, stamped `now_ms` (or the origin's
    /// last stamp, if later, so that an origin's events are in time order too), and
    /// stores them. Not durable until the caller flushes the index.
    pub(crate) fn record(
        &self,
        origin: &NodeId,
        now_ms: u64,
        kinds: Vec<EventKind>,
    ) -> Result<Vec<Event>, StoreError> {
        for kind in &kinds {
            kind.validate().map_err(|e| StoreError::Invalid {
                field: "event",
                reason: e.to_string(),
            })?;
        }
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let head = self.head(origin)?;
        let last_at = match head {
            0 => 0,
            seq => self.get(origin, seq)?.map_or(0, |e| e.at_ms),
        };
        let at_ms = now_ms.max(last_at);
        let events: Vec<Event> = kinds
            .into_iter()
            .zip(head + 1..)
            .map(|(kind, seq)| Event {
                origin: origin.clone(),
                seq,
                at_ms,
                kind,
            })
            .collect();
        self.store(&events)?;
        Ok(events)
    }

    /// Stores what of `events` this node does not hold yet; returns how many. Events
    /// that fail their own checks are dropped (a peer's bug must not poison the set).
    pub(crate) fn merge(&self, events: Vec<Event>) -> Result<usize, StoreError> {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut new = Vec::new();
        for event in events {
            if event.seq == 0 || event.kind.validate().is_err() {
                continue;
            }
            if !self
                .events
                .contains_key(event_key(&event.origin, event.seq))?
            {
                new.push(event);
            }
        }
        self.store(&new)?;
        Ok(new.len())
    }

    /// Writes `events` (all new), moves their origins' heads and the status view, in
    /// one transaction, then signals followers.
    fn store(&self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut origins: BTreeMap<&NodeId, u64> = BTreeMap::new();
        for event in events {
            origins.entry(&event.origin).or_insert(0);
        }
        let new: HashSet<(&NodeId, u64)> = events.iter().map(|e| (&e.origin, e.seq)).collect();
        for (origin, head) in origins.iter_mut() {
            *head = self.head(origin)?;
        }
        let mut status: BTreeMap<Vec<u8>, VersionState> = BTreeMap::new();
        let mut current: BTreeMap<String, CurrentVersion> = BTreeMap::new();
        let mut spent: BTreeMap<String, u64> = BTreeMap::new();
        for event in events {
            self.fold_status(event, &mut status, &mut current)?;
            if let EventKind::PrivacySpent { key_id, epsilon } = &event.kind {
                let total = match spent.get(key_id) {
                    Some(total) => *total,
                    None => self.spent_micros(key_id)?,
                };
                spent.insert(key_id.clone(), total.saturating_add(micros(*epsilon)));
            }
        }
        (
            &self.events,
            &self.by_time,
            &self.heads,
            &self.versions,
            &self.current,
            &self.spent,
        )
            .transaction(
                |(tx_events, tx_time, tx_heads, tx_versions, tx_current, tx_spent)| {
                    for event in events {
                        tx_events
                            .insert(event_key(&event.origin, event.seq), encode_payload(event))?;
                        tx_time.insert(time_key(event), &[][..])?;
                    }
                    for (origin, was) in &origins {
                        let mut head = *was;
                        while head < u64::MAX
                            && (new.contains(&(*origin, head + 1))
                                || tx_events.get(event_key(origin, head + 1))?.is_some())
                        {
                            head += 1;
                        }
                        if head != *was {
                            tx_heads.insert(origin.0.as_bytes(), &head.to_be_bytes())?;
                        }
                    }
                    for (key, state) in &status {
                        tx_versions.insert(key.as_slice(), encode_payload(state))?;
                    }
                    for (name, version) in &current {
                        tx_current.insert(name.as_bytes(), encode_payload(version))?;
                    }
                    for (key_id, total) in &spent {
                        tx_spent.insert(key_id.as_bytes(), &total.to_be_bytes())?;
                    }
                    Ok(())
                },
            )
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
                    tree: "events",
                    reason: "events transaction aborted".into(),
                },
                sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
            })?;
        self.added.send_modify(|n| *n += events.len() as u64);
        Ok(())
    }

    /// Folds `event` into the status changes gathered so far (read from the trees
    /// first), keeping the latest event per fact.
    fn fold_status(
        &self,
        event: &Event,
        status: &mut BTreeMap<Vec<u8>, VersionState>,
        current: &mut BTreeMap<String, CurrentVersion>,
    ) -> Result<(), StoreError> {
        let position = Position::from(event);
        let (function, fact) = match &event.kind {
            EventKind::VersionDeprecated { function, .. } => (function, Fact::Deprecated(true)),
            EventKind::VersionActivated { function, .. } => (function, Fact::Deprecated(false)),
            EventKind::RequiresUpdate { function, .. } => (function, Fact::Update(true)),
            EventKind::UpdateCleared { function } => (function, Fact::Update(false)),
            EventKind::CurrentVersion { function, .. } => {
                let held = match current.get(&function.name) {
                    Some(held) => Some(held.clone()),
                    None => self.current_version(&function.name)?,
                };
                if held.is_none_or(|held| held.at < position) {
                    current.insert(
                        function.name.clone(),
                        CurrentVersion {
                            version: function.version.clone(),
                            at: position,
                        },
                    );
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let key = version_key(function);
        let state = match status.get(&key) {
            Some(state) => state.clone(),
            None => self.version_state(&key)?.unwrap_or_default(),
        };
        let mut state = state;
        let slot = match fact {
            Fact::Deprecated(_) => &mut state.deprecated,
            Fact::Update(_) => &mut state.requires_update,
        };
        let value = match fact {
            Fact::Deprecated(v) | Fact::Update(v) => v,
        };
        if slot.as_ref().is_none_or(|(_, at)| *at < position) {
            *slot = Some((value, position));
        }
        status.insert(key, state);
        Ok(())
    }

    /// The `events` tree's records as stored, for a snapshot.
    pub(crate) fn export(&self) -> Result<Vec<super::audit::RawRecord>, StoreError> {
        self.events
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    /// Restores events a snapshot held (its `events` records), rebuilding the trees
    /// derived from them; returns how many.
    pub(crate) fn import(&self, records: Vec<Vec<u8>>) -> Result<usize, StoreError> {
        let events = records
            .iter()
            .map(|value| decode_event(value))
            .collect::<Result<Vec<Event>, StoreError>>()?;
        self.merge(events)
    }

    /// Each origin's contiguous head, sorted by origin.
    pub(crate) fn heads(&self) -> Result<Vec<(NodeId, u64)>, StoreError> {
        self.heads
            .iter()
            .map(|entry| {
                let (origin, head) = entry?;
                Ok((NodeId(utf8(&origin)?), be_u64(&head)?))
            })
            .collect()
    }

    /// The events of `origin` after `after`, up to its contiguous head, at most `limit`.
    pub(crate) fn of_origin_after(
        &self,
        origin: &NodeId,
        after: u64,
        head: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if after >= head {
            return Ok(Vec::new());
        }
        self.events
            .range(event_key(origin, after + 1)..=event_key(origin, head))
            .take(limit)
            .map(|entry| decode_event(&entry?.1))
            .collect()
    }

    /// What a follower at `cursor` reads next: every origin's events past it, in
    /// position order, at most [`MAX_EVENTS_PAGE`] read and `limit` of `types` kept.
    /// The cursor moves past every event read, kept or not.
    pub(crate) fn follow(
        &self,
        cursor: &EventCursor,
        types: EventTypes,
        limit: usize,
    ) -> Result<(Vec<Event>, EventCursor), StoreError> {
        let read_at_most = MAX_EVENTS_PAGE as usize;
        let mut candidates = Vec::new();
        for (origin, head) in self.heads()? {
            candidates.extend(self.of_origin_after(
                &origin,
                cursor.seen(&origin),
                head,
                read_at_most,
            )?);
        }
        // Each origin's events are in seq and time order, so a prefix of this order
        // is a prefix of every origin's: the cursor never skips an event.
        candidates.sort_by_key(Event::position);
        let mut next = cursor.clone();
        let mut kept = Vec::new();
        for event in candidates.into_iter().take(read_at_most) {
            if kept.len() == limit {
                break;
            }
            next.advance(&event.origin, event.seq);
            if types.contains(event.event_type()) {
                kept.push(event);
            }
        }
        Ok((kept, next))
    }

    /// A page of events of `types` recorded in `[since, until)`, after `after`, oldest
    /// first; the token is set while more may follow.
    pub(crate) fn page(
        &self,
        types: EventTypes,
        since_ms: Option<u64>,
        until_ms: Option<u64>,
        after: Option<&EventPosition>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<EventPosition>), StoreError> {
        let mut start = since_ms.unwrap_or(0).to_be_bytes().to_vec();
        if let Some(after) = after {
            let mut past = position_key(after);
            past.push(0);
            start = start.max(past);
        }
        let end = until_ms.map(|until| until.to_be_bytes().to_vec());
        let mut events = Vec::new();
        let mut last = None;
        for (scanned, entry) in self.by_time.range(start..).enumerate() {
            let (key, _) = entry?;
            if end
                .as_ref()
                .is_some_and(|end| key.as_ref() >= end.as_slice())
            {
                return Ok((events, None));
            }
            if scanned == MAX_SCANNED_PER_PAGE || events.len() == limit {
                return Ok((events, last));
            }
            let position = parse_position(&key)?;
            let Some(event) = self.get(&position.origin, position.seq)? else {
                return Err(StoreError::Corrupt {
                    tree: "events",
                    reason: format!(
                        "events_by_time names {}#{} that events lacks",
                        position.origin, position.seq
                    ),
                });
            };
            if types.contains(event.event_type()) {
                events.push(event);
            }
            last = Some(position);
        }
        Ok((events, None))
    }

    /// Each named function's status, in the order asked.
    pub(crate) fn function_status(
        &self,
        names: &[String],
    ) -> Result<Vec<FunctionStatus>, StoreError> {
        names
            .iter()
            .map(|name| {
                let mut status = FunctionStatus {
                    name: name.clone(),
                    current: self.current_version(name)?.map(|c| c.version),
                    ..FunctionStatus::default()
                };
                let prefix = function_prefix(name);
                for entry in self.versions.scan_prefix(&prefix) {
                    let (key, value) = entry?;
                    let version = utf8(&key[prefix.len()..])?;
                    let state: VersionState = decode(&value)?;
                    if matches!(state.deprecated, Some((true, _))) {
                        status.deprecated.push(version.clone());
                    }
                    if matches!(state.requires_update, Some((true, _))) {
                        status.requires_update.push(version);
                    }
                }
                Ok(status)
            })
            .collect()
    }

    /// Whether the latest event about `function`'s update says it requires one.
    pub(crate) fn requires_update(&self, function: &FunctionRef) -> Result<bool, StoreError> {
        Ok(self
            .version_state(&version_key(function))?
            .is_some_and(|state| matches!(state.requires_update, Some((true, _)))))
    }

    /// The ε `key_id` spent, by the `privacy_spent` events held here.
    pub(crate) fn privacy_spent(&self, key_id: &str) -> Result<f64, StoreError> {
        Ok(self.spent_micros(key_id)? as f64 / 1e6)
    }

    fn spent_micros(&self, key_id: &str) -> Result<u64, StoreError> {
        self.spent
            .get(key_id.as_bytes())?
            .map_or(Ok(0), |v| be_u64(&v))
    }

    /// A receiver that changes whenever events are added.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.added.subscribe()
    }

    fn head(&self, origin: &NodeId) -> Result<u64, StoreError> {
        self.heads
            .get(origin.0.as_bytes())?
            .map_or(Ok(0), |v| be_u64(&v))
    }

    fn get(&self, origin: &NodeId, seq: u64) -> Result<Option<Event>, StoreError> {
        self.events
            .get(event_key(origin, seq))?
            .map(|v| decode_event(&v))
            .transpose()
    }

    fn version_state(&self, key: &[u8]) -> Result<Option<VersionState>, StoreError> {
        self.versions.get(key)?.map(|v| decode(&v)).transpose()
    }

    fn current_version(&self, name: &str) -> Result<Option<CurrentVersion>, StoreError> {
        self.current
            .get(name.as_bytes())?
            .map(|v| decode(&v))
            .transpose()
    }
}

impl Store {
    /// Records `kinds` as this node's next events, durable before it returns.
    pub fn record_events(&self, kinds: Vec<EventKind>) -> Result<Vec<Event>, StoreError> {
        let events = self.events.record(&self.node, now_ms(), kinds)?;
        self.sync_meta()?;
        Ok(events)
    }

    /// Stores the events of `events` this node lacks, durable before it returns; how
    /// many were new.
    pub fn merge_events(&self, events: Vec<Event>) -> Result<usize, StoreError> {
        let added = self.events.merge(events)?;
        if added > 0 {
            self.sync_meta()?;
        }
        Ok(added)
    }

    /// Each origin's contiguous head: what a peer compares to learn what it lacks.
    pub fn event_heads(&self) -> Result<EventCursor, StoreError> {
        self.events.heads().map(EventCursor)
    }

    /// What a follower at `cursor` reads next (see [`Events::follow`]).
    pub fn follow_events(
        &self,
        cursor: &EventCursor,
        types: EventTypes,
        limit: usize,
    ) -> Result<(Vec<Event>, EventCursor), StoreError> {
        self.events.follow(cursor, types, limit)
    }

    /// A page of the events of `types` recorded in `[since_ms, until_ms)` after
    /// `after`, oldest first, and the next page's token.
    pub fn events_page(
        &self,
        types: EventTypes,
        since_ms: Option<u64>,
        until_ms: Option<u64>,
        after: Option<&EventPosition>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<EventPosition>), StoreError> {
        self.events.page(types, since_ms, until_ms, after, limit)
    }

    /// Each named function's status, as the events set it.
    pub fn function_status(&self, names: &[String]) -> Result<Vec<FunctionStatus>, StoreError> {
        self.events.function_status(names)
    }

    /// The ε `key_id` spent on differentially private insights, cluster-wide as far as
    /// the events held here know.
    pub fn privacy_spent(&self, key_id: &str) -> Result<f64, StoreError> {
        self.events.privacy_spent(key_id)
    }

    /// Whether the events say `function` requires an update.
    pub fn requires_update(&self, function: &FunctionRef) -> Result<bool, StoreError> {
        self.events.requires_update(function)
    }

    /// A receiver that changes whenever events are added (recorded or merged).
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }
}

/// `epsilon` in millionths, rounded up: a budget is never charged less than asked.
fn micros(epsilon: f64) -> u64 {
    (epsilon * 1e6).ceil() as u64
}

/// Which fact of a version an event sets.
#[derive(Clone, Copy)]
enum Fact {
    Deprecated(bool),
    Update(bool),
}

fn origin_key(origin: &NodeId, out: &mut Vec<u8>) {
    // Node ids are short (a config checks them); the cast cannot lose what matters
    // for order because every id of one cluster has the same bound.
    out.push(origin.0.len().min(255) as u8);
    out.extend_from_slice(origin.0.as_bytes());
}

fn event_key(origin: &NodeId, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + origin.0.len() + 8);
    origin_key(origin, &mut key);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn position_key(position: &EventPosition) -> Vec<u8> {
    let mut key = position.at_ms.to_be_bytes().to_vec();
    origin_key(&position.origin, &mut key);
    key.extend_from_slice(&position.seq.to_be_bytes());
    key
}

fn time_key(event: &Event) -> Vec<u8> {
    position_key(&event.position())
}

fn parse_position(key: &[u8]) -> Result<EventPosition, StoreError> {
    let corrupt = || StoreError::Corrupt {
        tree: "events",
        reason: format!("bad events_by_time key {key:02x?}"),
    };
    let at_ms = key.get(..8).ok_or_else(corrupt)?;
    let len = usize::from(*key.get(8).ok_or_else(corrupt)?);
    let origin = key.get(9..9 + len).ok_or_else(corrupt)?;
    let seq = key.get(9 + len..).ok_or_else(corrupt)?;
    Ok(EventPosition {
        at_ms: be_u64(at_ms)?,
        origin: NodeId(utf8(origin)?),
        seq: be_u64(seq)?,
    })
}

/// `name_len (u8) ‖ name`: what every version key of the function starts with.
fn function_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    // Names are at most MAX_FUNCTION_NAME_BYTES (128) long: validated before storing.
    key.push(name.len().min(255) as u8);
    key.extend_from_slice(name.as_bytes());
    key
}

fn version_key(function: &FunctionRef) -> Vec<u8> {
    let mut key = function_prefix(&function.name);
    key.extend_from_slice(function.version.as_bytes());
    key
}

fn be_u64(bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree: "events",
        reason: format!("{} bytes where a u64 belongs", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

fn utf8(bytes: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| StoreError::Corrupt {
        tree: "events",
        reason: "a key of the events trees is not UTF-8".into(),
    })
}

fn decode_event(bytes: &[u8]) -> Result<Event, StoreError> {
    decode(bytes)
}

fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, StoreError> {
    decode_value(bytes).map_err(|e| StoreError::Corrupt {
        tree: "events",
        reason: format!("an events tree value: {e}"),
    })
}

#[cfg(test)]
mod tests;
