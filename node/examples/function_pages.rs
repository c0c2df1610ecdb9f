//! Times function pages as an application asks for them, one SDK connection to one
//! node: each function's versions once (every page one the node has not kept), then the
//! whole list a few times, each after the node's kept page went stale; then, INSIGHTS
//! times each, an insight over every function by version (after the node's kept answer
//! went stale) and a private one (ε 0.01, each a new question, so each is charged).
//! Prints p50, p99 and the slowest, in ms. Used by `node/scripts/bench-functions.sh`.
//!
//! ```sh
//! cargo run --release -p chorus-node --example function_pages -- \
//!     ADDR SERVER_NAME CA_FILE KEY_FILE FUNCTIONS LISTS [INSIGHTS]
//! ```

use std::time::{Duration, Instant};

use chorus_client::{Client, ClientConfig, Credentials};
use chorus_protocol::{Grouping, InsightQuery};

fn report(what: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64) as usize).min(ms.len() - 1)];
    println!(
        "{what}: {} pages, p50 {:.2} ms, p99 {:.2} ms, slowest {:.2} ms",
        ms.len(),
        at(0.5),
        at(0.99),
        ms[ms.len() - 1]
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, insights) = match args.as_slice() {
        [rest @ .., insights] if rest.len() == 6 => (rest, insights.parse::<u32>()?),
        rest => (rest, 0),
    };
    let [addr, name, ca, key, functions, lists] = args else {
        anyhow::bail!(
            "usage: function_pages ADDR SERVER_NAME CA_FILE KEY_FILE FUNCTIONS LISTS [INSIGHTS]"
        );
    };
    let key = std::fs::read_to_string(key)?;
    let credentials = Credentials::from_ca_file(ca, key.trim())?.with_server_name(name.clone());
    let config = ClientConfig {
        routing: None,
        ..ClientConfig::default()
    };
    let client = Client::connect(&[addr.parse()?], credentials, config).await?;
    let mut versions = Vec::new();
    for f in 0..functions.parse::<u32>()? {
        let started = Instant::now();
        let page = client
            .functions(Some(format!("fn-{f:05}")), None, 1000)
            .await?;
        versions.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            page.covered.0 == page.covered.1,
            "a partial page: {:?}",
            page.covered
        );
    }
    report("one function's versions", versions);
    let mut all = Vec::new();
    for _ in 0..lists.parse::<u32>()? {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let started = Instant::now();
        let page = client.functions(None, None, 1000).await?;
        all.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(!page.versions.is_empty(), "no versions");
    }
    report("every version", all);
    let (mut plain, mut private) = (Vec::new(), Vec::new());
    let by_version = Grouping {
        version: true,
        ..Grouping::default()
    };
    for i in 0..insights {
        // Past the insight cache (5 s) and the function page cache (1 s).
        tokio::time::sleep(Duration::from_millis(5100)).await;
        let query = InsightQuery {
            function: None,
            group: by_version,
            days: None,
            epsilon: None,
        };
        let started = Instant::now();
        let answer = client.insights(query).await?;
        plain.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(answer.covered.0 == answer.covered.1, "a partial insight");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let query = InsightQuery {
            function: None,
            group: by_version,
            days: None,
            epsilon: Some(0.01 + f64::from(i) * 1e-5),
        };
        let started = Instant::now();
        client.insights(query).await?;
        private.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    if insights > 0 {
        report("insight, every version", plain);
        report("private insight, every version", private);
    }
    client.close().await;
    Ok(())
}
