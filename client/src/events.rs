//! The cluster's events through the SDK: pages by time, a stream that follows new
//! events from a cursor (resumable after a reconnect, with nothing missed and nothing
//! twice), and the version changes an admin makes.

use std::collections::VecDeque;
use std::time::Duration;

use chorus_protocol::{
    Event, EventCursor, EventPosition, EventTypes, FunctionRef, FunctionStatus, MAX_EVENT_WAIT_MS,
    MAX_EVENTS_PAGE, Request, Response, VersionChange,
};

use crate::client::{Client, unexpected};
use crate::error::ClientError;

/// A page of events, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct EventsPage {
    /// The events.
    pub events: Vec<Event>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<EventPosition>,
}

/// Which events a listing by time wants.
#[derive(Clone, Debug, PartialEq)]
pub struct EventQuery {
    /// Which types.
    pub types: EventTypes,
    /// Only events recorded at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only events recorded before this time.
    pub until_ms: Option<u64>,
}

impl Default for EventQuery {
    fn default() -> Self {
        EventQuery {
            types: EventTypes::all(),
            since_ms: None,
            until_ms: None,
        }
    }
}

impl Client {
    /// One page of the cluster's events matching `query` after `after` (needs a read
    /// key), at most `limit` (1..=1000).
    pub async fn events(
        &self,
        query: &EventQuery,
        after: Option<EventPosition>,
        limit: u32,
    ) -> Result<EventsPage, ClientError> {
        let request = Request::Events {
            types: query.types,
            since_ms: query.since_ms,
            until_ms: query.until_ms,
            after,
            limit,
        };
        match self.request(request).await? {
            Response::Events { events, next } => Ok(EventsPage { events, next }),
            other => Err(unexpected("Events", &other)),
        }
    }

    /// A stream of the events of `types` recorded past `cursor` (the default cursor:
    /// from the first), in each origin's order, following new ones as they come.
    pub fn follow_events(&self, types: EventTypes, cursor: EventCursor) -> EventStream {
        EventStream {
            client: self.clone(),
            types,
            cursor,
            server_cursor: None,
            buffered: VecDeque::new(),
        }
    }

    /// Deprecates, reactivates or makes current a version of a function (needs an
    /// admin key); returns the event that records it.
    pub async fn change_version(
        &self,
        function: FunctionRef,
        change: VersionChange,
    ) -> Result<Event, ClientError> {
        match self
            .request(Request::ChangeVersion { function, change })
            .await?
        {
            Response::Event(event) => Ok(event),
            other => Err(unexpected("Event", &other)),
        }
    }

    /// The status of each named function (needs a read key): its current version,
    /// deprecated versions and versions requiring an update.
    pub async fn function_status(
        &self,
        names: Vec<String>,
    ) -> Result<Vec<FunctionStatus>, ClientError> {
        match self.request(Request::FunctionStatus { names }).await? {
            Response::FunctionStatus(status) => Ok(status),
            other => Err(unexpected("FunctionStatus", &other)),
        }
    }
}

/// New events as they are recorded, from a cursor. Each [`EventStream::next`] returns
/// the next event; [`EventStream::cursor`] is then the position just past it, so a
/// reader that saves it after handling each event and resumes from it (on any node,
/// after any reconnect) sees every later event exactly once.
#[derive(Debug)]
pub struct EventStream {
    client: Client,
    types: EventTypes,
    /// Past every event returned by `next`.
    cursor: EventCursor,
    /// The server's cursor once the buffer is drained (past events skipped by type too).
    server_cursor: Option<EventCursor>,
    buffered: VecDeque<Event>,
}

impl EventStream {
    /// How long one follow request waits on the server for a new event.
    const WAIT: Duration = Duration::from_millis(MAX_EVENT_WAIT_MS as u64 / 2);

    /// The next event, waiting for one to be recorded if need be. Errors are the
    /// client's (the request is retried by its rules first); the stream can be polled
    /// again after one, from where it was.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(event) = self.buffered.pop_front() {
                self.cursor.advance(&event.origin, event.seq);
                if self.buffered.is_empty()
                    && let Some(server) = self.server_cursor.take()
                {
                    self.cursor = server;
                }
                return Ok(event);
            }
            let request = Request::FollowEvents {
                types: self.types,
                cursor: self.cursor.clone(),
                limit: MAX_EVENTS_PAGE,
                wait_ms: Self::WAIT.as_millis() as u32,
            };
            match self.client.request(request).await? {
                Response::Followed { events, cursor } => {
                    if events.is_empty() {
                        self.cursor = cursor;
                    } else {
                        self.buffered = events.into();
                        self.server_cursor = Some(cursor);
                    }
                }
                other => return Err(unexpected("Followed", &other)),
            }
        }
    }

    /// Where a new stream resumes to see exactly the events after those `next` has
    /// returned.
    pub fn cursor(&self) -> &EventCursor {
        &self.cursor
    }
}
