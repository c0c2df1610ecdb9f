//! What the load is made of: the items, one request, and how a failure is named.

use chorus_client::{Client, ClientConfig, ClientError, Item, Kind, LoadGuardConfig, Tier};
use chorus_protocol::{ExecutionMetrics, FunctionRef};
use rand::Rng;

use super::args::BenchArgs;
use crate::tools::connect::ConnectArgs;
use crate::tools::connect::connect;
use crate::tools::error::CliError;

/// The SDK settings of a load generator: it measures the node, so it retries only as
/// `--retries` asks (none by default: each refusal is counted as the node gave it; with
/// retries, what an application sees) and throttles itself only when
/// `--client-throttle` asks for the SDK's throttle (the offered load is then what a
/// fleet of applications would send, not what reaches the node).
pub(crate) fn client_config(args: &BenchArgs) -> Result<ClientConfig, CliError> {
    let mut config = ClientConfig {
        streams_per_connection: std::num::NonZeroUsize::new(args.streams)
            .ok_or_else(|| CliError::Usage("--streams must be at least 1".into()))?,
        load_guard: args.client_throttle.then(LoadGuardConfig::default),
        max_retries: args.retries,
        ..ClientConfig::default()
    };
    if args.no_routing {
        config.routing = None;
    }
    Ok(config)
}

/// Opens `n` connections (each its own [`Client`]) to the node.
pub(crate) async fn connect_all(
    to: &ConnectArgs,
    config: &ClientConfig,
    n: usize,
) -> Result<Vec<Client>, CliError> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(connect(to, config.clone()).await?);
    }
    Ok(clients)
}

/// What the generated items look like.
pub(crate) struct Shape {
    /// Distinct users the items come from.
    pub(crate) users: u32,
    /// Every item's text.
    pub(crate) text: String,
    /// Tiers with their weights.
    pub(crate) tiers: Vec<(Tier, u32)>,
    /// The sum of the tiers' weights.
    pub(crate) total_weight: u32,
    /// Items per request.
    pub(crate) batch: usize,
    /// Functions the items name (none when 0).
    pub(crate) functions: u32,
}

impl Shape {
    /// The items `args` asks for, in the tiers of `tiers` (with their weights).
    pub(crate) fn new(args: &BenchArgs, tiers: Vec<(Tier, u32)>) -> Self {
        let text: String = "Très bien — "
            .chars()
            .chain(std::iter::repeat('x'))
            .take(args.text_bytes)
            .collect();
        Shape {
            users: args.users.max(1),
            text,
            total_weight: tiers.iter().map(|(_, w)| w).sum(),
            tiers,
            batch: args.batch,
            functions: args.functions,
        }
    }

    /// The tier of worker `w` of `workers`: workers are split between tiers in
    /// proportion to their weights, and each sends only its own tier, so that a slow
    /// tier's requests cannot delay (and inflate the latency of) another tier's.
    pub(crate) fn tier_of_worker(&self, w: usize, workers: usize) -> Tier {
        let mut pick = (w as u64 * u64::from(self.total_weight) / workers.max(1) as u64) as u32;
        for (tier, weight) in &self.tiers {
            if pick < *weight {
                return *tier;
            }
            pick -= weight;
        }
        self.tiers[0].0
    }

    /// One item of `tier` from a random user.
    pub(crate) fn item(&self, rng: &mut impl Rng, tier: Tier) -> Item {
        let mut item = Item::new(
            format!("user-{:011}", rng.random_range(0..self.users)),
            Kind::Bug,
        );
        item.rating = Some(rng.random_range(1..=5));
        item.text = self.text.clone();
        item.tier = tier;
        if self.functions > 0 {
            item.function = Some(FunctionRef {
                name: format!("fn-{:05}", rng.random_range(0..self.functions)),
                version: format!("1.{}", rng.random_range(0..3u8)),
            });
            let error_rate = rng.random_range(0.0..0.2);
            item.metrics = Some(ExecutionMetrics {
                success_rate: 1.0 - error_rate,
                avg_duration_ms: rng.random_range(1.0..500.0),
                error_rate,
            });
        }
        item
    }
}

/// Sends one request (a submit, or a batch of `shape.batch`) of `tier`.
pub(crate) async fn send(
    client: &Client,
    shape: &Shape,
    tier: Tier,
    rng: &mut impl Rng,
) -> Result<(), ClientError> {
    if shape.batch == 1 {
        return client.submit(shape.item(rng, tier)).await.map(|_| ());
    }
    let items = (0..shape.batch).map(|_| shape.item(rng, tier)).collect();
    match client
        .submit_batch(items)
        .await?
        .into_iter()
        .find_map(Result::err)
    {
        Some(code) => Err(ClientError::Server(code)),
        None => Ok(()),
    }
}

/// The name a failure is counted under.
pub(crate) fn error_kind(error: &ClientError) -> String {
    match error {
        ClientError::Server(code) => code.kind().to_string(),
        ClientError::Timeout => "client_timeout".into(),
        ClientError::ConnectionLost { .. } => "connection_lost".into(),
        ClientError::StreamReset { .. } => "stream_reset".into(),
        other => format!("client: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::bench::args::parse_tier_mix;

    #[test]
    fn workers_split_between_tiers_by_weight() {
        let shape = Shape {
            users: 1,
            text: String::new(),
            tiers: parse_tier_mix("realtime=1,batch=3").unwrap(),
            total_weight: 4,
            batch: 1,
            functions: 0,
        };
        let tiers: Vec<Tier> = (0..8).map(|w| shape.tier_of_worker(w, 8)).collect();
        assert_eq!(tiers.iter().filter(|t| **t == Tier::Realtime).count(), 2);
        assert_eq!(tiers.iter().filter(|t| **t == Tier::Batch).count(), 6);
    }

    #[test]
    fn items_name_functions_only_when_asked_and_are_valid() {
        let mut shape = Shape {
            users: 10,
            text: "x".into(),
            tiers: vec![(Tier::Standard, 1)],
            total_weight: 1,
            batch: 1,
            functions: 0,
        };
        let mut rng = rand::rng();
        assert!(shape.item(&mut rng, Tier::Standard).function.is_none());
        shape.functions = 7;
        for _ in 0..100 {
            let item = shape.item(&mut rng, Tier::Standard);
            assert!(item.function.is_some() && item.metrics.is_some());
            item.validate().unwrap();
        }
    }
}
