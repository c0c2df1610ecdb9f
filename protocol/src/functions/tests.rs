use proptest::prelude::*;

use super::*;
use crate::item::{ExecutionMetrics, Kind};

fn facts() -> impl Strategy<Value = ItemFacts> {
    (
        proptest::option::of(1u8..=5),
        proptest::option::of((0u32..=1_000_000, any::<u64>())),
    )
        .prop_map(|(rating, metrics)| ItemFacts { rating, metrics })
}

fn stats_of(all: &[ItemFacts]) -> VersionStats {
    let mut stats = VersionStats::default();
    all.iter().for_each(|f| stats.add(f));
    stats
}

fn round_trip(stats: &VersionStats) -> Result<VersionStats, DecodeError> {
    let config = bincode::config::standard();
    let bytes = bincode::encode_to_vec(stats, config).unwrap();
    bincode::decode_from_slice(&bytes, config).map(|(s, _)| s)
}

proptest! {
    #[test]
    fn every_value_lies_in_its_bucket(us in any::<u64>()) {
        let bucket = bucket_of(us);
        prop_assert!(bucket < DURATION_BUCKETS);
        let (low, width) = bucket_span(bucket);
        prop_assert!(low <= us && us - low < width, "{us} outside {low}+{width}");
        // A bucket spans at most 1/16 of its lowest value.
        prop_assert!(width == 1 || width * 16 <= low);
    }

    #[test]
    fn removing_what_was_added_in_any_order_leaves_nothing(
        all in proptest::collection::vec(facts(), 0..200),
        order in any::<u64>(),
    ) {
        let mut stats = stats_of(&all);
        let mut shuffled = all.clone();
        let len = shuffled.len().max(1);
        shuffled.rotate_left((order as usize) % len);
        for f in &shuffled {
            stats.remove(f);
        }
        prop_assert_eq!(stats, VersionStats::default());
    }

    #[test]
    fn merged_parts_equal_the_whole(
        all in proptest::collection::vec(facts(), 0..200),
        cut in any::<usize>(),
    ) {
        let cut = cut % (all.len() + 1);
        let mut merged = stats_of(&all[..cut]);
        merged.merge(&stats_of(&all[cut..]));
        prop_assert_eq!(&merged, &stats_of(&all));
        prop_assert_eq!(round_trip(&merged).unwrap(), merged);
    }

    #[test]
    fn a_quantile_is_within_its_bucket_of_the_exact_one(
        mut values in proptest::collection::vec(0u64..10_000_000_000, 1..500),
        q in 0.0f64..=1.0,
    ) {
        let mut histogram = DurationHistogram::default();
        values.iter().for_each(|&v| histogram.record(v));
        values.sort_unstable();
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        let exact = values[rank - 1] as f64;
        let got = histogram.quantile(q).unwrap();
        prop_assert!((got - exact).abs() <= exact * 0.032 + 0.5, "{got} against {exact}");
    }

    #[test]
    fn stats_decode_from_any_bytes_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = bincode::decode_from_slice::<VersionStats, _>(&bytes, bincode::config::standard());
    }
}

#[test]
fn counts_no_items_add_up_to_are_refused() {
    let mut stats = stats_of(&[ItemFacts {
        rating: Some(4),
        metrics: Some((10, 1_500)),
    }]);
    assert!(round_trip(&stats).is_ok());
    stats.items = 0;
    assert!(round_trip(&stats).is_err(), "more ratings than items");
    let mut stats = stats_of(&[ItemFacts {
        rating: None,
        metrics: Some((10, 1_500)),
    }]);
    stats.durations.record(7);
    assert!(round_trip(&stats).is_err(), "more durations than reports");
    let bad_order = DurationHistogram {
        buckets: vec![(9, 1), (3, 1)],
    };
    let bytes = bincode::encode_to_vec(&bad_order, bincode::config::standard()).unwrap();
    assert!(
        bincode::decode_from_slice::<DurationHistogram, _>(&bytes, bincode::config::standard())
            .is_err()
    );
    let too_many = DurationHistogram {
        buckets: (0..=DURATION_BUCKETS).map(|b| (b, 1)).collect(),
    };
    let bytes = bincode::encode_to_vec(&too_many, bincode::config::standard()).unwrap();
    assert!(
        bincode::decode_from_slice::<DurationHistogram, _>(&bytes, bincode::config::standard())
            .is_err()
    );
}

#[test]
fn summaries_read_the_counts() {
    let stats = stats_of(&[
        ItemFacts {
            rating: Some(5),
            metrics: Some((0, 2_000)),
        },
        ItemFacts {
            rating: Some(2),
            metrics: Some((100_000, 4_000)),
        },
        ItemFacts {
            rating: None,
            metrics: None,
        },
    ]);
    assert_eq!(stats.items, 3);
    assert_eq!(stats.rated(), 2);
    assert_eq!(stats.mean_rating(), Some(3.5));
    assert_eq!(stats.error_rate(), Some(0.05));
    let p50 = stats.duration_ms(0.5).unwrap();
    assert!((p50 - 2.0).abs() < 0.07, "{p50}");
    let p95 = stats.duration_ms(0.95).unwrap();
    assert!((p95 - 4.0).abs() < 0.13, "{p95}");
    assert_eq!(VersionStats::default().mean_rating(), None);
    assert_eq!(VersionStats::default().duration_ms(0.5), None);
}

#[test]
fn an_item_tells_its_function_what_it_reports() {
    let mut item = Item::new("u", Kind::Text);
    assert!(ItemFacts::of(&item).is_none(), "no function, no facts");
    item.function = Some(FunctionRef {
        name: "resize".into(),
        version: "1.2.0".into(),
    });
    item.rating = Some(4);
    item.metrics = Some(ExecutionMetrics {
        success_rate: 0.9,
        avg_duration_ms: 12.5,
        error_rate: 0.1,
    });
    let (function, facts) = ItemFacts::of(&item).unwrap();
    assert_eq!(function.version, "1.2.0");
    assert_eq!(
        facts,
        ItemFacts {
            rating: Some(4),
            metrics: Some((100_000, 12_500)),
        }
    );
}

#[test]
fn a_version_is_judged_only_over_enough_items() {
    let rule = UpdateRule::default();
    let poor = ItemFacts {
        rating: Some(2),
        metrics: Some((200_000, 1_000)),
    };
    let mut stats = stats_of(&vec![poor; 49]);
    assert!(rule.judge(&stats).is_empty(), "49 items are not enough");
    stats.add(&poor);
    assert_eq!(
        rule.judge(&stats),
        [
            UpdateReason::LowRating {
                mean: 2.0,
                over: 50
            },
            UpdateReason::HighErrorRate {
                rate: 0.2,
                over: 50
            },
        ]
    );
    let good = ItemFacts {
        rating: Some(5),
        metrics: Some((0, 1_000)),
    };
    assert!(rule.judge(&stats_of(&vec![good; 100])).is_empty());
    // A rating of 3.0 is not under 3.0; an error rate of 5 % is not over 5 %.
    let edge = ItemFacts {
        rating: Some(3),
        metrics: Some((50_000, 1_000)),
    };
    assert!(rule.judge(&stats_of(&vec![edge; 60])).is_empty());
}
