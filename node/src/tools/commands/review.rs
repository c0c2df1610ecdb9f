//! `chorus review list | approve | reject`.

use chorus_client::{ClientConfig, ItemId, PageToken};
use chorus_protocol::MAX_PAGE_LIMIT;

use super::output;
use crate::tools::cli::{ReviewDecisionArgs, ReviewListArgs};
use crate::tools::connect::connect;
use crate::tools::error::CliError;

/// `chorus review list`: every item waiting, page by page.
pub async fn list(args: ReviewListArgs) -> Result<(), CliError> {
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let listed = async {
        let mut left = args.limit.unwrap_or(u64::MAX);
        let mut after: Option<PageToken> = None;
        while left > 0 {
            let limit = left.min(u64::from(MAX_PAGE_LIMIT)) as u32;
            let page = client.review_queue(after, limit).await?;
            for stored in &page.items {
                output::print_item(stored, args.json);
            }
            left = left.saturating_sub(page.items.len() as u64);
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        Ok::<(), CliError>(())
    }
    .await;
    client.close().await;
    listed
}

/// `chorus review approve|reject ID --user USER`.
pub async fn decide(args: ReviewDecisionArgs, approve: bool) -> Result<(), CliError> {
    let id = args.id.parse::<ItemId>()?;
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let decided = client.review(args.user.clone(), id, approve).await;
    client.close().await;
    output::print_item(&decided?, args.json);
    Ok(())
}
