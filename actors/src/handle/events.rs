//! The node handle's side of the cluster's events: recording, merging what peers
//! send, and reading them by time or by cursor. Every call runs on the blocking pool.

use std::sync::Arc;

use chorus_protocol::{
    ErrorCode, Event, EventCursor, EventKind, EventPosition, EventTypes, FunctionRef,
    FunctionStatus, VersionChange,
};
use tokio::sync::watch;

use super::{AUDIT_ACTOR_API, NodeHandle, blocking};

impl NodeHandle {
    /// Records `kinds` as this node's next events, durable before it answers.
    pub async fn record_events(&self, kinds: Vec<EventKind>) -> Result<Vec<Event>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.record_events(kinds)).await
    }

    /// Stores the events of `events` this node lacks; how many were new.
    pub async fn merge_events(&self, events: Vec<Event>) -> Result<usize, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.merge_events(events)).await
    }

    /// Each origin's contiguous head.
    pub async fn event_heads(&self) -> Result<EventCursor, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.event_heads()).await
    }

    /// What a follower at `cursor` reads next: at most `limit` events of `types`, and
    /// the cursor past everything read.
    pub async fn follow_events(
        &self,
        cursor: EventCursor,
        types: EventTypes,
        limit: usize,
    ) -> Result<(Vec<Event>, EventCursor), ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.follow_events(&cursor, types, limit)).await
    }

    /// A page of events of `types` recorded in `[since_ms, until_ms)` after `after`.
    pub async fn events_page(
        &self,
        types: EventTypes,
        since_ms: Option<u64>,
        until_ms: Option<u64>,
        after: Option<EventPosition>,
        limit: usize,
    ) -> Result<(Vec<Event>, Option<EventPosition>), ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.events_page(types, since_ms, until_ms, after.as_ref(), limit)).await
    }

    /// Each named function's status.
    pub async fn function_status(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<FunctionStatus>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.function_status(&names)).await
    }

    /// Which of `functions` the events say require an update.
    pub async fn requiring_update(
        &self,
        functions: Vec<FunctionRef>,
    ) -> Result<Vec<bool>, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || {
            functions
                .iter()
                .map(|function| store.requires_update(function))
                .collect()
        })
        .await
    }

    /// The ε `key_id` spent on differentially private insights, as the events held
    /// here know.
    pub async fn privacy_spent(&self, key_id: String) -> Result<f64, ErrorCode> {
        let store = Arc::clone(&self.inner.store);
        blocking(move || store.privacy_spent(&key_id)).await
    }

    /// A receiver that changes whenever events are added here.
    pub fn subscribe_events(&self) -> watch::Receiver<u64> {
        self.inner.store.subscribe_events()
    }

    /// Deprecates, reactivates or makes current a version, for the key `by`: audited
    /// first (no change without its record), then recorded as an event.
    pub async fn change_version(
        &self,
        function: FunctionRef,
        change: VersionChange,
        by: String,
    ) -> Result<Event, ErrorCode> {
        function.validate()?;
        let (action, kind) = match change {
            VersionChange::Deprecate => (
                "function.deprecate",
                EventKind::VersionDeprecated {
                    function: function.clone(),
                    by,
                },
            ),
            VersionChange::Activate => (
                "function.activate",
                EventKind::VersionActivated {
                    function: function.clone(),
                    by,
                },
            ),
            VersionChange::MakeCurrent => (
                "function.current",
                EventKind::CurrentVersion {
                    function: function.clone(),
                    by,
                },
            ),
        };
        kind.validate()?;
        self.audit_append(
            AUDIT_ACTOR_API,
            action,
            format!("name={:?} version={:?}", function.name, function.version),
        )
        .await?;
        let mut events = self.record_events(vec![kind]).await?;
        events.pop().ok_or_else(|| ErrorCode::Unavailable {
            reason: "the store recorded no event".into(),
        })
    }
}
