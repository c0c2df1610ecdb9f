//! How CLI results are printed: short human lines, or one JSON object per result.

use chorus_client::{
    ApiKeyInfo, ClientError, Enrichment, ErrorCode, Receipt, Role, Status, StoredItem,
};
use std::collections::BTreeMap;

use chorus_protocol::{FunctionStatus, FunctionVersion, UpdateReason, VersionStats};
use serde_json::{Value, json};

use crate::tools::error::CliError;

/// A receipt as JSON: at least `id` and `status`.
pub fn receipt_json(receipt: &Receipt) -> Value {
    let mut value = json!({
        "id": receipt.id.to_string(),
        "status": receipt.status.as_str(),
        "reasons": reasons(&receipt.status),
        "alignment_score": receipt.alignment_score,
        "owner": receipt.owner.0,
        "replicas": receipt.replicas.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        "stored_at": receipt.stored_at,
    });
    add_enrichment(&mut value, &receipt.enrichment);
    value
}

/// Adds `enrichment` (`done`, `skipped`, `not_configured`) and, when skipped,
/// `enrichment_skipped_reason`.
fn add_enrichment(value: &mut Value, enrichment: &Enrichment) {
    value["enrichment"] = json!(enrichment.as_str());
    if let Enrichment::Skipped { reason } = enrichment {
        value["enrichment_skipped_reason"] = json!(reason);
    }
}

/// A stored item as JSON: the item's fields and its receipt's `status`.
pub fn item_json(stored: &StoredItem) -> Value {
    let item = &stored.item;
    let mut value = json!({
        "id": item.id.to_string(),
        "status": stored.receipt.status.as_str(),
        "reasons": reasons(&stored.receipt.status),
        "user_id": item.user_id,
        "kind": item.kind.as_str(),
        "rating": item.rating,
        "text": item.text,
        "tags": item.tags,
        "tier": item.tier.as_str(),
        "function": item.function.as_ref().map(|f| json!({"name": f.name, "version": f.version})),
        "metrics": item.metrics.as_ref().map(|m| json!({
            "success_rate": m.success_rate,
            "avg_duration_ms": m.avg_duration_ms,
            "error_rate": m.error_rate,
        })),
        "client_ts": item.client_ts,
        "owner": stored.receipt.owner.0,
        "stored_at": stored.receipt.stored_at,
    });
    add_enrichment(&mut value, &stored.receipt.enrichment);
    value
}

fn reasons(status: &Status) -> Vec<String> {
    match status {
        Status::Accepted | Status::Deleted => Vec::new(),
        Status::Flagged { reasons } | Status::Rejected { reasons } => reasons.clone(),
    }
}

/// Prints a receipt.
pub fn print_receipt(receipt: &Receipt, json: bool) {
    if json {
        println!("{}", receipt_json(receipt));
    } else {
        println!(
            "{} {} (owner {}, stored at {} ms)",
            receipt.status.as_str(),
            receipt.id,
            receipt.owner,
            receipt.stored_at
        );
    }
}

/// Prints a stored item.
pub fn print_item(stored: &StoredItem, json: bool) {
    if json {
        println!("{}", item_json(stored));
    } else {
        let item = &stored.item;
        let rating = item
            .rating
            .map(|r| format!(" rating={r}"))
            .unwrap_or_default();
        println!(
            "{} {} user={} kind={}{} tier={} text={:?}",
            item.id,
            stored.receipt.status.as_str(),
            item.user_id,
            item.kind.as_str(),
            rating,
            item.tier.as_str(),
            item.text
        );
    }
}

/// Prints a new API key.
pub fn print_key(key: &str, role: Role, json: bool) {
    if json {
        println!("{}", json!({"key": key, "role": role.as_str()}));
    } else {
        println!("{key}");
        eprintln!("(an API key with role {role}; it is shown only this once)");
    }
}

/// An API key as JSON: `id`, `role`, `name`, `created_at` and `revoked_at` (ms since
/// the Unix epoch; `null` while valid).
pub fn key_json(key: &ApiKeyInfo) -> Value {
    json!({
        "id": key.id,
        "role": key.role.as_str(),
        "name": key.name,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
    })
}

/// A time in ms since the Unix epoch as RFC 3339 UTC to the second, for people.
pub(crate) fn timestamp(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Prints the key listing: a table, or with `--json` one object per key.
pub fn print_keys(keys: &[ApiKeyInfo], json: bool) {
    if json {
        for key in keys {
            println!("{}", key_json(key));
        }
        return;
    }
    println!(
        "{:<16}  {:<6}  {:<20}  {:<20}  NAME",
        "ID", "ROLE", "CREATED", "REVOKED"
    );
    for key in keys {
        let revoked = key.revoked_at.map_or_else(|| "-".to_string(), timestamp);
        println!(
            "{:<16}  {:<6}  {:<20}  {:<20}  {}",
            key.id,
            key.role.as_str(),
            timestamp(key.created_at),
            revoked,
            key.name
        );
    }
}

/// Prints a revoked key: its id and revocation time, or with `--json` its object.
pub fn print_revoked(key: &ApiKeyInfo, json: bool) {
    if json {
        println!("{}", key_json(key));
    } else {
        let at = key.revoked_at.map_or_else(|| "-".to_string(), timestamp);
        println!("revoked {} ({}, {:?}) at {at}", key.id, key.role, key.name);
    }
}

/// A version's counts as JSON: `name`, `version`, `items`, `ratings` (1 to 5),
/// `mean_rating`, `error_rate`, `p50_ms`, `p95_ms` (`null` without data) and
/// `requires_update` (the reasons, empty when none).
pub fn version_json(version: &FunctionVersion, status: &FunctionStatus) -> Value {
    let stats = &version.stats;
    json!({
        "name": version.function.name,
        "version": version.function.version,
        "status": lifecycle(status, &version.function.version),
        "current": status.current.as_deref() == Some(version.function.version.as_str()),
        "items": stats.items,
        "ratings": stats.ratings,
        "mean_rating": stats.mean_rating(),
        "error_rate": stats.error_rate(),
        "p50_ms": stats.duration_ms(0.5),
        "p95_ms": stats.duration_ms(0.95),
        "requires_update": version.requires_update.0.iter().map(reason_json).collect::<Vec<_>>(),
    })
}

/// `active` or `deprecated`, as the cluster's events set it.
fn lifecycle(status: &FunctionStatus, version: &str) -> &'static str {
    if status.deprecated.iter().any(|v| v == version) {
        "deprecated"
    } else {
        "active"
    }
}

/// A version's status for a table: `active` or `deprecated`, `*` when current.
fn status_cell(status: &FunctionStatus, version: &str) -> String {
    let current = status.current.as_deref() == Some(version);
    format!(
        "{}{}",
        lifecycle(status, version),
        if current { " *" } else { "" }
    )
}

fn reason_json(reason: &UpdateReason) -> Value {
    match reason {
        UpdateReason::LowRating { mean, over } => {
            json!({"reason": "low_rating", "mean_rating": mean, "over": over})
        }
        UpdateReason::HighErrorRate { rate, over } => {
            json!({"reason": "high_error_rate", "error_rate": rate, "over": over})
        }
    }
}

/// A reason for people.
pub(crate) fn reason_text(reason: &UpdateReason) -> String {
    match reason {
        UpdateReason::LowRating { mean, over } => format!("mean rating {mean:.2} over {over}"),
        UpdateReason::HighErrorRate { rate, over } => {
            format!("error rate {:.1}% over {over}", rate * 100.0)
        }
    }
}

/// An optional number for a table.
fn cell(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// A line on stderr when the counts miss partitions (a change of leader, a member out
/// of reach), so a table is never taken for the whole truth silently.
fn warn_partial((covered, of): (u32, u32)) {
    if covered < of {
        eprintln!("(counted over {covered} of {of} partitions: some leaders did not answer)");
    }
}

/// The versions of functions grouped by name, in order.
fn by_function(versions: &[FunctionVersion]) -> Vec<(&str, Vec<&FunctionVersion>)> {
    let mut out: Vec<(&str, Vec<&FunctionVersion>)> = Vec::new();
    for version in versions {
        match out.last_mut() {
            Some((name, group)) if *name == version.function.name => group.push(version),
            _ => out.push((&version.function.name, vec![version])),
        }
    }
    out
}

/// The sum of a function's versions' counts.
fn totals(group: &[&FunctionVersion]) -> VersionStats {
    let mut total = VersionStats::default();
    for version in group {
        total.merge(&version.stats);
    }
    total
}

/// The versions of a function's group that require an update.
fn flagged<'a>(group: &[&'a FunctionVersion]) -> Vec<&'a str> {
    group
        .iter()
        .filter(|v| !v.requires_update.0.is_empty())
        .map(|v| v.function.version.as_str())
        .collect()
}

/// Prints every function: a table, or with `--json` one object per function (`name`,
/// `versions`, `items`, `mean_rating`, `requires_update`: the versions that do).
pub fn print_functions(
    versions: &[FunctionVersion],
    covered: (u32, u32),
    statuses: &BTreeMap<String, FunctionStatus>,
    json: bool,
) {
    warn_partial(covered);
    let groups = by_function(versions);
    let none = FunctionStatus::default();
    if json {
        for (name, group) in &groups {
            let total = totals(group);
            let flagged = flagged(group);
            let status = statuses.get(*name).unwrap_or(&none);
            println!(
                "{}",
                json!({
                    "name": name,
                    "versions": group.len(),
                    "items": total.items,
                    "mean_rating": total.mean_rating(),
                    "current": status.current,
                    "deprecated": status.deprecated,
                    "requires_update": flagged,
                })
            );
        }
        return;
    }
    println!(
        "{:<32}  {:>8}  {:>10}  {:>6}  {:<12}  REQUIRE UPDATE",
        "FUNCTION", "VERSIONS", "ITEMS", "RATING", "CURRENT"
    );
    for (name, group) in &groups {
        let total = totals(group);
        let flagged = flagged(group);
        let status = statuses.get(*name).unwrap_or(&none);
        println!(
            "{:<32}  {:>8}  {:>10}  {:>6}  {:<12}  {}",
            name,
            group.len(),
            total.items,
            cell(total.mean_rating(), 2),
            status.current.as_deref().unwrap_or("-"),
            if flagged.is_empty() {
                "-".into()
            } else {
                flagged.join(", ")
            }
        );
    }
}

/// Prints one function's versions: a table, or with `--json` one object per version
/// ([`version_json`]).
pub fn print_versions(
    versions: &[FunctionVersion],
    covered: (u32, u32),
    status: &FunctionStatus,
    json: bool,
) {
    warn_partial(covered);
    if json {
        for version in versions {
            println!("{}", version_json(version, status));
        }
        return;
    }
    println!(
        "{:<16}  {:<12}  {:>10}  {:>6}  {:>7}  {:>10}  {:>10}  REQUIRES UPDATE",
        "VERSION", "STATUS", "ITEMS", "RATING", "ERRORS", "P50 MS", "P95 MS"
    );
    for version in versions {
        let stats = &version.stats;
        let reasons: Vec<String> = version.requires_update.0.iter().map(reason_text).collect();
        println!(
            "{:<16}  {:<12}  {:>10}  {:>6}  {:>7}  {:>10}  {:>10}  {}",
            version.function.version,
            status_cell(status, &version.function.version),
            stats.items,
            cell(stats.mean_rating(), 2),
            stats
                .error_rate()
                .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0)),
            cell(stats.duration_ms(0.5), 1),
            cell(stats.duration_ms(0.95), 1),
            if reasons.is_empty() {
                "-".into()
            } else {
                reasons.join("; ")
            }
        );
    }
}

/// Prints one function: its totals over every version, then its versions; with
/// `--json` one object (`name`, `items`, `mean_rating`, `error_rate`, `p50_ms`,
/// `p95_ms`, `versions`: each as [`version_json`]).
pub fn print_function(
    name: &str,
    versions: &[FunctionVersion],
    covered: (u32, u32),
    status: &FunctionStatus,
    json: bool,
) {
    let all: Vec<&FunctionVersion> = versions.iter().collect();
    let total = totals(&all);
    if json {
        warn_partial(covered);
        println!(
            "{}",
            json!({
                "name": name,
                "items": total.items,
                "mean_rating": total.mean_rating(),
                "error_rate": total.error_rate(),
                "p50_ms": total.duration_ms(0.5),
                "p95_ms": total.duration_ms(0.95),
                "current": status.current,
                "versions": versions
                    .iter()
                    .map(|v| version_json(v, status))
                    .collect::<Vec<_>>(),
            })
        );
        return;
    }
    println!(
        "{name}: {} items over {} versions, mean rating {}, error rate {}, p50 {} ms, p95 {} ms",
        total.items,
        versions.len(),
        cell(total.mean_rating(), 2),
        total
            .error_rate()
            .map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0)),
        cell(total.duration_ms(0.5), 1),
        cell(total.duration_ms(0.95), 1),
    );
    if let Some(current) = &status.current {
        println!("current version: {current}");
    }
    print_versions(versions, covered, status, false);
}

/// Prints an error: always a line on stderr, and with `--json` one object on stdout.
pub fn print_error(error: &CliError, json: bool) {
    match error {
        // The node's own words, without the SDK's "server error" wrapper.
        CliError::Client(ClientError::Server(code)) => eprintln!("error: {code}"),
        other => eprintln!("error: {other}"),
    }
    if json {
        println!("{}", error_json(error));
    }
}

fn error_json(error: &CliError) -> Value {
    match error {
        CliError::Client(ClientError::Server(code)) => {
            let mut value = json!({"error": code.kind(), "message": code.to_string()});
            match code {
                ErrorCode::Invalid { field, reason } => {
                    value["field"] = json!(field);
                    value["reason"] = json!(reason);
                }
                ErrorCode::RateLimited { retry_after_ms }
                | ErrorCode::Overloaded { retry_after_ms, .. } => {
                    value["retry_after_ms"] = json!(retry_after_ms);
                }
                _ => {}
            }
            value
        }
        CliError::Client(other) => json!({"error": "client", "message": other.to_string()}),
        CliError::Usage(message) => json!({"error": "usage", "message": message}),
        CliError::NotFound { field, .. } => json!({
            "error": "not_found",
            "message": error.to_string(),
            "field": field,
            "reason": error.to_string(),
        }),
    }
}
