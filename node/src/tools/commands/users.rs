//! `chorus users export | delete`.

use std::io::Write;
use std::time::{Duration, Instant};

use chorus_client::{ClientConfig, PageToken};
use serde_json::json;

use super::output::item_json;
use crate::tools::cli::{UsersDeleteArgs, UsersExportArgs};
use crate::tools::connect::connect;
use crate::tools::error::CliError;

/// How often an export reports its progress on stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// `chorus users export USER`: every item as a JSON line, page by page, with the count
/// and rate on stderr as it goes and once at the end.
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
    let (mut items, mut bytes) = (0u64, 0u64);
    let mut after: Option<PageToken> = None;
    let exported = async {
        loop {
            let page = client
                .export_user(args.user.clone(), after, args.page)
                .await?;
            for stored in &page.items {
                let line = item_json(stored).to_string();
                bytes += line.len() as u64 + 1;
                writeln!(out, "{line}").map_err(|e| CliError::Usage(e.to_string()))?;
            }
            items += page.items.len() as u64;
            if reported.elapsed() >= PROGRESS_EVERY {
                reported = Instant::now();
                eprintln!("{}", progress(items, bytes, started.elapsed()));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok::<(), CliError>(()),
            }
        }
    }
    .await;
    client.close().await;
    exported?;
    out.flush().map_err(|e| CliError::Usage(e.to_string()))?;
    eprintln!("{} (done)", progress(items, bytes, started.elapsed()));
    Ok(())
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
