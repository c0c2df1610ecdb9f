//! The dispatcher of the CLI tools, and the client-side subcommands (`submit`, `get`,
//! `list`, `keys`), built on the SDK exactly as an application would use it, with
//! `certs` and the offline `restore`.

mod events;
mod insights;
mod output;
mod review;
mod users;

use std::process::ExitCode;

use chorus_client::{ClientConfig, ItemId, Kind, Role, Tier};
use chorus_protocol::{ExecutionMetrics, FunctionRef, FunctionVersion, VersionChange};

use crate::tools::cli::{
    CertsCommand, Command, FunctionArgs, FunctionsArgs, FunctionsCommand, GetArgs, KeysCommand,
    KeysCreateArgs, KeysListArgs, KeysRevokeArgs, ListArgs, RestoreArgs, ReviewCommand, SubmitArgs,
    UsersCommand,
};
use crate::tools::connect::connect;
use crate::tools::error::CliError;

/// Runs a client-side subcommand and prints its outcome; returns the exit code.
pub async fn run(command: Command) -> ExitCode {
    let (json, outcome) = match command {
        Command::Submit(args) => (args.json, submit(args).await),
        Command::Get(args) => (args.json, get(args).await),
        Command::List(args) => (args.json, list(args).await),
        Command::Keys(KeysCommand::Create(args)) => (args.json, create_key(args).await),
        Command::Keys(KeysCommand::List(args)) => (args.json, list_keys(args).await),
        Command::Functions(FunctionsCommand::List(args)) => (args.json, list_functions(args).await),
        Command::Functions(FunctionsCommand::Show(args)) => {
            (args.json, show_function(args, false).await)
        }
        Command::Functions(FunctionsCommand::Versions(args)) => {
            (args.json, show_function(args, true).await)
        }
        Command::Functions(FunctionsCommand::Deprecate(args)) => (
            args.json,
            events::change_version(args, VersionChange::Deprecate).await,
        ),
        Command::Functions(FunctionsCommand::Activate(args)) => (
            args.json,
            events::change_version(args, VersionChange::Activate).await,
        ),
        Command::Functions(FunctionsCommand::Current(args)) => (
            args.json,
            events::change_version(args, VersionChange::MakeCurrent).await,
        ),
        Command::Events(args) => (args.json, events::events(args).await),
        Command::Review(ReviewCommand::List(args)) => (args.json, review::list(args).await),
        Command::Review(ReviewCommand::Approve(args)) => {
            (args.json, review::decide(args, true).await)
        }
        Command::Review(ReviewCommand::Reject(args)) => {
            (args.json, review::decide(args, false).await)
        }
        Command::Insights(args) => (args.json, insights::insights(args).await),
        Command::Users(UsersCommand::Export(args)) => (false, users::export(args).await),
        Command::Users(UsersCommand::Delete(args)) => (args.json, users::delete(args).await),
        Command::Keys(KeysCommand::Revoke(args)) => (args.json, revoke_key(args).await),
        Command::Bench(args) => (false, crate::tools::bench::run(args).await),
        // ctl prints its own outcome: a broken audit chain is a result, not an error.
        Command::Ctl(args) => return crate::tools::ctl::run(args).await,
        Command::Certs(command) => (false, certs(command)),
        Command::Restore(args) => (args.json, restore(&args)),
        Command::Demo(args) => return crate::tools::demo::run(args).await,
        Command::Agent(_) => unreachable!("the agent is not a client command"),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&e, json);
            ExitCode::FAILURE
        }
    }
}

/// `chorus restore`: checks the snapshot, then (unless `--check`) restores it into a
/// data dir that is absent or empty, created 0700. Offline: no agent may run on it.
fn restore(args: &RestoreArgs) -> Result<(), CliError> {
    use chorus_actors::store::{DEFAULT_INDEX_CACHE_BYTES, snapshot};
    let usage = |e: &dyn std::fmt::Display| CliError::Usage(e.to_string());
    if args.check {
        let manifest = snapshot::verify(&args.from).map_err(|e| usage(&e))?;
        let bytes: u64 = manifest.segments.iter().map(|s| s.bytes).sum();
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "ok": true, "node": manifest.node, "partitions": manifest.partitions,
                    "segments": manifest.segments.len(), "bytes": bytes,
                    "records": manifest.records, "created_at_ms": manifest.created_at_ms,
                })
            );
        } else {
            println!(
                "snapshot intact: node {}, {} partitions, {} segments, {bytes} bytes, {} records",
                manifest.node,
                manifest.partitions,
                manifest.segments.len(),
                manifest.records
            );
        }
        return Ok(());
    }
    let Some(data_dir) = &args.data_dir else {
        return Err(usage(&"--data-dir is required to restore"));
    };
    let occupied = match std::fs::read_dir(data_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(usage(&format!("{}: {e}", data_dir.display()))),
    };
    if occupied {
        return Err(usage(&format!(
            "{} is not empty: restore only into a fresh data dir",
            data_dir.display()
        )));
    }
    // Checked before the data dir is made, so a bad snapshot leaves nothing behind.
    snapshot::read_manifest(&args.from).map_err(|e| usage(&e))?;
    crate::secrets::create_private_dir(data_dir).map_err(|e| usage(&e))?;
    let report = snapshot::restore(
        &args.from,
        &data_dir.join("store"),
        DEFAULT_INDEX_CACHE_BYTES,
    )
    .map_err(|e| usage(&e))?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true, "data_dir": data_dir.display().to_string(),
                "node": report.node, "partitions": report.partitions,
                "segments": report.segments, "bytes": report.bytes,
                "records": report.records, "items": report.items,
                "api_keys": report.api_keys,
                "end_segment": report.end.segment, "end_offset": report.end.offset,
                "duration_ms": report.duration.as_millis() as u64,
            })
        );
    } else {
        println!(
            "restored {} items ({} records, {} segments, {} bytes) of node {} into {} in {} ms",
            report.items,
            report.records,
            report.segments,
            report.bytes,
            report.node,
            data_dir.display(),
            report.duration.as_millis()
        );
        println!(
            "start the agent on it with the same partition count ({}); keep or recreate its \
             API key files (the keys themselves are restored)",
            report.partitions
        );
    }
    Ok(())
}

fn certs(command: CertsCommand) -> Result<(), CliError> {
    use crate::cluster::certs;
    let usage = |e: certs::CertsError| CliError::Usage(e.to_string());
    match command {
        CertsCommand::Init { dir } => {
            let files = certs::init(&dir).map_err(usage)?;
            println!("wrote {}", files.cert.display());
            println!("wrote {} (mode 0600)", files.key.display());
            println!("wrote {} (mode 0600)", files.cluster_key.display());
        }
        CertsCommand::Node {
            name,
            ips,
            dns,
            dir,
        } => {
            let files = certs::issue_node(&dir, &name, &ips, &dns).map_err(usage)?;
            println!("wrote {}", files.cert.display());
            println!("wrote {} (mode 0600)", files.key.display());
        }
        CertsCommand::Bundle {
            name,
            ips,
            dns,
            dir,
            out,
        } => {
            let made = certs::bundle(&dir, &name, &ips, &dns, &out).map_err(usage)?;
            if made.issued {
                println!("wrote {}", made.node.cert.display());
                println!("wrote {} (mode 0600)", made.node.key.display());
            } else {
                println!("using {} and its key", made.node.cert.display());
            }
            println!(
                "wrote {} (mode 0600); on the host: deploy/install.sh --bundle {}",
                made.out.display(),
                made.out.file_name().unwrap_or_default().to_string_lossy()
            );
        }
    }
    Ok(())
}

async fn submit(args: SubmitArgs) -> Result<(), CliError> {
    let kind = match &args.kind {
        Some(k) => k.parse::<Kind>()?,
        None if args.rating.is_some() => Kind::Rating,
        None => Kind::Text,
    };
    let id = args.id.as_deref().map(str::parse::<ItemId>).transpose()?;
    let tier = args.tier.parse::<Tier>()?;
    let function = args.function.as_deref().map(parse_function).transpose()?;
    let metrics = match (args.error_rate, args.duration_ms) {
        (Some(error_rate), Some(avg_duration_ms)) => Some(ExecutionMetrics {
            success_rate: 1.0 - error_rate.clamp(0.0, 1.0),
            avg_duration_ms,
            error_rate,
        }),
        _ => None,
    };
    let client = connect(&args.connect, ClientConfig::default()).await?;
    // An id that names the user's partition: `chorus get` reads it in one hop.
    let mut item = client.new_item(args.user.clone(), kind);
    if let Some(id) = id {
        item.id = id;
    }
    item.rating = args.rating;
    item.text = args.text.clone();
    item.tags = args.tags.clone();
    item.tier = tier;
    item.function = function;
    item.metrics = metrics;
    let receipt = client.submit(item).await;
    client.close().await;
    output::print_receipt(&receipt?, args.json);
    Ok(())
}

async fn get(args: GetArgs) -> Result<(), CliError> {
    let id = args.id.parse::<ItemId>()?;
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let found = client.get(id).await;
    client.close().await;
    match found? {
        Some(stored) => {
            output::print_item(&stored, args.json);
            Ok(())
        }
        None => Err(CliError::NotFound {
            what: "item",
            field: "id",
            value: id.to_string(),
        }),
    }
}

async fn list(args: ListArgs) -> Result<(), CliError> {
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let mut remaining = args.limit as usize;
    let mut after = None;
    let outcome = loop {
        if remaining == 0 {
            break Ok(());
        }
        let page_size = remaining.min(chorus_protocol::MAX_PAGE_LIMIT as usize) as u32;
        match client
            .list_by_user(&args.user, after.take(), page_size)
            .await
        {
            Ok(page) => {
                for stored in &page.items {
                    output::print_item(stored, args.json);
                }
                remaining = remaining.saturating_sub(page.items.len());
                match page.next {
                    Some(next) if !page.items.is_empty() => after = Some(next),
                    _ => break Ok(()),
                }
            }
            Err(e) => break Err(e.into()),
        }
    };
    client.close().await;
    outcome
}

async fn create_key(args: KeysCreateArgs) -> Result<(), CliError> {
    let role = args.role.parse::<Role>()?;
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let key = client.create_api_key(role, args.name.clone()).await;
    client.close().await;
    output::print_key(&key?, role, args.json);
    Ok(())
}

/// A `--function` value, NAME@VERSION.
pub(crate) fn parse_function(value: &str) -> Result<FunctionRef, CliError> {
    match value.rsplit_once('@') {
        Some((name, version)) if !name.is_empty() && !version.is_empty() => Ok(FunctionRef {
            name: name.into(),
            version: version.into(),
        }),
        _ => Err(CliError::Usage(format!("{value:?}: expected NAME@VERSION"))),
    }
}

/// The status of every function `versions` names, asked a page of names at a time.
async fn statuses(
    client: &chorus_client::Client,
    versions: &[FunctionVersion],
) -> Result<std::collections::BTreeMap<String, chorus_protocol::FunctionStatus>, CliError> {
    let mut names: Vec<String> = versions.iter().map(|v| v.function.name.clone()).collect();
    names.dedup();
    let mut statuses = std::collections::BTreeMap::new();
    for page in names.chunks(chorus_protocol::MAX_FUNCTIONS_PAGE as usize) {
        for status in client.function_status(page.to_vec()).await? {
            statuses.insert(status.name.clone(), status);
        }
    }
    Ok(statuses)
}

/// Every version of every function (or of `name`), page by page.
async fn all_versions(
    client: &chorus_client::Client,
    name: Option<String>,
) -> Result<(Vec<FunctionVersion>, (u32, u32)), CliError> {
    let mut versions = Vec::new();
    let mut after = None;
    let mut covered = (u32::MAX, 0);
    loop {
        let page = client
            .functions(name.clone(), after, chorus_protocol::MAX_FUNCTIONS_PAGE)
            .await?;
        versions.extend(page.versions);
        // The least any page covered: what the whole listing can vouch for.
        covered = (covered.0.min(page.covered.0), page.covered.1);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((versions, covered)),
        }
    }
}

async fn list_functions(args: FunctionsArgs) -> Result<(), CliError> {
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let listed = async {
        let (versions, covered) = all_versions(&client, None).await?;
        let statuses = statuses(&client, &versions).await?;
        Ok::<_, CliError>((versions, covered, statuses))
    }
    .await;
    client.close().await;
    let (versions, covered, statuses) = listed?;
    output::print_functions(&versions, covered, &statuses, args.json);
    Ok(())
}

async fn show_function(args: FunctionArgs, versions_only: bool) -> Result<(), CliError> {
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let shown = async {
        let (versions, covered) = all_versions(&client, Some(args.name.clone())).await?;
        let status = client.function_status(vec![args.name.clone()]).await?;
        Ok::<_, CliError>((
            versions,
            covered,
            status.into_iter().next().unwrap_or_default(),
        ))
    }
    .await;
    client.close().await;
    let (versions, covered, status) = shown?;
    if versions.is_empty() {
        return Err(CliError::NotFound {
            what: "function",
            field: "name",
            value: args.name,
        });
    }
    if versions_only {
        output::print_versions(&versions, covered, &status, args.json);
    } else {
        output::print_function(&args.name, &versions, covered, &status, args.json);
    }
    Ok(())
}

async fn list_keys(args: KeysListArgs) -> Result<(), CliError> {
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let keys = client.list_api_keys().await;
    client.close().await;
    output::print_keys(&keys?, args.json);
    Ok(())
}

async fn revoke_key(args: KeysRevokeArgs) -> Result<(), CliError> {
    // Checked here too, so a mistyped id is refused before connecting.
    chorus_protocol::check_key_id(&args.id)?;
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let key = client.revoke_api_key(args.id.clone()).await;
    client.close().await;
    output::print_revoked(&key?, args.json);
    Ok(())
}
