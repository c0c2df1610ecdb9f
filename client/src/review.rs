//! The review queue through the SDK (pages of the flagged items, and a reviewer's
//! decision on one; a review or admin key), users' rights (a user's export, a page at
//! a time, and deletion; an admin key) and insights (a read key).

use chorus_protocol::{Insight, InsightQuery, ItemId, PageToken, Request, Response, StoredItem};

use crate::client::{Client, Page, unexpected};
use crate::error::ClientError;

impl Client {
    /// One page of the items waiting for review, cluster-wide, after `after`, at most
    /// `limit` (1..=1000).
    pub async fn review_queue(
        &self,
        after: Option<PageToken>,
        limit: u32,
    ) -> Result<Page, ClientError> {
        match self.request(Request::ReviewQueue { after, limit }).await? {
            Response::Page { items, next } => Ok(Page { items, next }),
            other => Err(unexpected("Page", &other)),
        }
    }

    /// Approves (the item becomes `accepted`) or rejects the flagged item `id` of
    /// `user_id`; returns the item as now stored, once a write quorum holds it.
    pub async fn review(
        &self,
        user_id: impl Into<String>,
        id: ItemId,
        approve: bool,
    ) -> Result<StoredItem, ClientError> {
        let request = Request::Review {
            user_id: user_id.into(),
            id,
            approve,
        };
        match self.request(request).await? {
            Response::Item(Some(stored)) => Ok(*stored),
            other => Err(unexpected("Item", &other)),
        }
    }

    /// One page of everything stored about `user_id`, oldest first, for an export: at
    /// most `limit` (1..=1000) after `after`. The last page (no `next`) records a
    /// `user_exported` event.
    pub async fn export_user(
        &self,
        user_id: impl Into<String>,
        after: Option<PageToken>,
        limit: u32,
    ) -> Result<Page, ClientError> {
        let request = Request::ExportUser {
            user_id: user_id.into(),
            after,
            limit,
        };
        match self.request(request).await? {
            Response::Page { items, next } => Ok(Page { items, next }),
            other => Err(unexpected("Page", &other)),
        }
    }

    /// Deletes every item of `user_id` on every replica; returns how many items were
    /// deleted, once a write quorum holds their tombstones.
    pub async fn delete_user(&self, user_id: impl Into<String>) -> Result<u64, ClientError> {
        let request = Request::DeleteUser {
            user_id: user_id.into(),
        };
        match self.request(request).await? {
            Response::UserDeleted { items } => Ok(items),
            other => Err(unexpected("UserDeleted", &other)),
        }
    }

    /// An aggregate question about the feedback, cluster-wide (needs a read key); with
    /// `query.epsilon`, answered under differential privacy and charged to the key's
    /// budget (refused, `Invalid` on `epsilon`, once it is spent).
    pub async fn insights(&self, query: InsightQuery) -> Result<Insight, ClientError> {
        match self.request(Request::Insights(query)).await? {
            Response::Insights(insight) => Ok(insight),
            other => Err(unexpected("Insights", &other)),
        }
    }
}
