//! `chorus insights`.

use chorus_client::ClientConfig;
use chorus_protocol::{Insight, InsightQuery};
use serde_json::json;

use crate::tools::cli::InsightsArgs;
use crate::tools::connect::connect;
use crate::tools::error::CliError;

/// `chorus insights`: a table (or JSON lines) of the answer's rows.
pub async fn insights(args: InsightsArgs) -> Result<(), CliError> {
    let query = InsightQuery {
        function: args.function.clone(),
        by_version: args.by_version,
        epsilon: args.dp,
    };
    query.validate()?;
    let client = connect(&args.connect, ClientConfig::default()).await?;
    let answer = client.insights(query).await;
    client.close().await;
    print(&answer?, args.json);
    Ok(())
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
        "{:<32}  {:<12}  {:>10}  {:>6}  RATINGS 1-5",
        "FUNCTION", "VERSION", "ITEMS", "MEAN"
    );
    for row in &answer.rows {
        println!(
            "{:<32}  {:<12}  {:>10}  {:>6}  {:?}",
            row.function,
            row.version.as_deref().unwrap_or("*"),
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
