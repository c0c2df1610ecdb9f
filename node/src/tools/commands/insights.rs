//! `chorus insights`.

use chorus_client::ClientConfig;
use chorus_protocol::{DAY_MS, Grouping, Insight, InsightQuery, InsightRow};
use serde_json::json;

use crate::tools::cli::InsightsArgs;
use crate::tools::connect::connect;
use crate::tools::error::CliError;

/// `chorus insights`: a table (or JSON lines) of the answer's rows.
pub async fn insights(args: InsightsArgs) -> Result<(), CliError> {
    let query = InsightQuery {
        function: args.function.clone(),
        group: grouping(&args.by)?,
        days: args.last_days.map(last_days),
        epsilon: args.dp,
    };
    query.validate()?;
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let answer = client.insights(query).await;
    client.close().await;
    print(&answer?, args.json);
    Ok(())
}

/// The `--by` values as a grouping (default: by function).
fn grouping(by: &[String]) -> Result<Grouping, CliError> {
    let mut group = Grouping::default();
    for dimension in by {
        match dimension.as_str() {
            "function" => group.function = true,
            "version" => group.version = true,
            "kind" => group.kind = true,
            "tier" => group.tier = true,
            "day" => group.day = true,
            other => {
                return Err(CliError::Usage(format!(
                    "--by {other:?}: expected function, version, kind, tier or day"
                )));
            }
        }
    }
    if by.is_empty() {
        group.function = true;
    }
    Ok(group)
}

/// The last `n` days, today (UTC) included, as days since the Unix epoch.
fn last_days(n: u32) -> (u32, u32) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let today = u32::try_from(now_ms / DAY_MS).unwrap_or(u32::MAX);
    (today.saturating_sub(n.saturating_sub(1)), today)
}

fn print(answer: &Insight, json: bool) {
    if answer.covered.0 < answer.covered.1 {
        eprintln!(
            "warning: the counts cover {} of {} partitions",
            answer.covered.0, answer.covered.1
        );
    }
    if json {
        for row in &answer.rows {
            println!(
                "{}",
                json!({
                    "function": row.function,
                    "version": row.version,
                    "kind": row.kind.map(|k| k.as_str()),
                    "tier": row.tier.map(|t| t.as_str()),
                    "day": row.day,
                    "items": row.items,
                    "ratings": row.ratings,
                    "mean_rating": row.mean_rating(),
                })
            );
        }
        println!(
            "{}",
            json!({
                "summary": true,
                "rows": answer.rows.len(),
                "covered": [answer.covered.0, answer.covered.1],
                "epsilon": answer.epsilon,
                "budget_remaining": answer.budget_remaining,
            })
        );
        return;
    }
    println!(
        "{:<48}  {:>10}  {:>6}  RATINGS 1-5",
        "GROUP", "ITEMS", "MEAN"
    );
    for row in &answer.rows {
        println!(
            "{:<48}  {:>10}  {:>6}  {:?}",
            label(row),
            row.items,
            row.mean_rating()
                .map_or_else(|| "-".into(), |m| format!("{m:.2}")),
            row.ratings
        );
    }
    if let (Some(epsilon), Some(left)) = (answer.epsilon, answer.budget_remaining) {
        println!("differentially private at epsilon {epsilon}; budget left {left:.3}");
    }
}

/// A row's group as a table shows it: its dimensions' values, or `all`.
fn label(row: &InsightRow) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(function) = &row.function {
        parts.push(match &row.version {
            Some(version) => format!("{function}@{version}"),
            None => function.clone(),
        });
    }
    if let Some(kind) = row.kind {
        parts.push(kind.as_str().to_string());
    }
    if let Some(tier) = row.tier {
        parts.push(tier.as_str().to_string());
    }
    if let Some(day) = row.day {
        parts.push(format!("day {day}"));
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_parse_and_default_to_function() {
        assert!(grouping(&[]).unwrap().function);
        let group = grouping(&["kind".into(), "day".into()]).unwrap();
        assert!(group.kind && group.day && !group.function);
        assert!(grouping(&["colour".into()]).is_err());
        let (from, to) = last_days(7);
        assert_eq!(to - from, 6);
    }
}
