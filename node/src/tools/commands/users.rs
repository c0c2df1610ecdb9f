//! `chorus users export | delete`.

use std::io::Write;
use std::time::{Duration, Instant};

use chorus_client::{ClientConfig, ClientError, ErrorCode, PageToken};
use serde_json::json;

use super::output::item_json;
use crate::tools::cli::{UsersDeleteArgs, UsersExportArgs};
use crate::tools::connect::connect;
use crate::tools::error::CliError;

/// How often an export reports its progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `chorus users export USER`: every item as a JSON line, page by page, with the count
/// and rate on stderr as it goes and once at the end. The next page is asked for while
/// the current one is written, so the node and this process work at once.
pub async fn export(args: UsersExportArgs) -> Result<(), CliError> {
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let started = Instant::now();
    let mut reported = Instant::now();
    let mut written = Written::default();
    let page_size = args.page.clamp(1, chorus_protocol::MAX_PAGE_LIMIT);
    let exported = async {
        let (mut page, mut size) = fetch(&client, &args.user, None, page_size).await?;
        loop {
            let Some(next) = page.next.clone() else {
                return written.page(&mut out, &page.items);
            };
            let (fetched, wrote) =
                tokio::join!(fetch(&client, &args.user, Some(next), size), async {
                    written.page(&mut out, &page.items)
                });
            wrote?;
            (page, size) = fetched?;
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                eprintln!("{}", written.progress(started.elapsed()));
            }
        }
    }
    .await;
    client.close().await;
    exported?;
    out.flush().map_err(|e| CliError::Usage(e.to_string()))?;
    eprintln!("{} (done)", written.progress(started.elapsed()));
    Ok(())
}

/// A page of the export after `after`, at most `size` items, asking for fewer when a
/// page of large items would not fit in one frame; and the size that fit.
async fn fetch(
    client: &chorus_client::Client,
    user: &str,
    after: Option<PageToken>,
    mut size: u32,
) -> Result<(chorus_client::Page, u32), CliError> {
    loop {
        match client.export_user(user, after.clone(), size).await {
            Ok(page) => return Ok((page, size)),
            Err(ClientError::Server(ErrorCode::Invalid { field, .. }))
                if field == "limit" && size > 1 =>
            {
                size /= 2;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// What an export wrote so far.
#[derive(Default)]
struct Written {
    items: u64,
    bytes: u64,
}

impl Written {
    /// Writes `items` as JSON lines.
    fn page(
        &mut self,
        out: &mut dyn Write,
        items: &[chorus_client::StoredItem],
    ) -> Result<(), CliError> {
        for stored in items {
            let line = item_json(stored).to_string();
            self.bytes += line.len() as u64 + 1;
            writeln!(out, "{line}").map_err(|e| CliError::Usage(e.to_string()))?;
        }
        self.items += items.len() as u64;
        Ok(())
    }

    fn progress(&self, elapsed: Duration) -> String {
        progress(self.items, self.bytes, elapsed)
    }
}

fn progress(items: u64, bytes: u64, elapsed: Duration) -> String {
    let mb = bytes as f64 / 1e6;
    let rate = mb / elapsed.as_secs_f64().max(1e-3);
    format!(
        "exported {items} items, {mb:.1} MB in {:.1} s ({rate:.1} MB/s)",
        elapsed.as_secs_f64()
    )
}

/// `chorus users delete USER`.
pub async fn delete(args: UsersDeleteArgs) -> Result<(), CliError> {
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let deleted = client.delete_user(args.user.clone()).await;
    client.close().await;
    let deleted = deleted?;
    if args.json {
        println!("{}", json!({"user_id": args.user, "deleted": deleted}));
    } else {
        println!("deleted {deleted} items of {}", args.user);
    }
    Ok(())
}
