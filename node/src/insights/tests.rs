use chorus_protocol::{FunctionRef, ItemFacts, VersionStats};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::*;

fn version(name: &str, version: &str, ratings: &[u8]) -> FunctionVersion {
    let mut stats = VersionStats::default();
    for &rating in ratings {
        stats.add(&ItemFacts {
            rating: Some(rating),
            metrics: None,
        });
    }
    FunctionVersion {
        function: FunctionRef {
            name: name.into(),
            version: version.into(),
        },
        stats,
        requires_update: Default::default(),
    }
}

#[test]
fn rows_are_per_version_or_summed_per_function() {
    let versions = [
        version("crop", "1", &[5, 5]),
        version("resize", "1", &[1, 2, 2]),
        version("resize", "2", &[4]),
    ];
    let by_version = group(&versions, true);
    assert_eq!(by_version.len(), 3);
    assert_eq!(by_version[1].version.as_deref(), Some("1"));
    assert_eq!(by_version[1].ratings, [1, 2, 0, 0, 0]);
    let by_function = group(&versions, false);
    assert_eq!(by_function.len(), 2);
    assert_eq!(by_function[1].function.as_deref(), Some("resize"));
    assert_eq!(by_function[1].version, None);
    assert_eq!(by_function[1].items, 4);
    assert_eq!(by_function[1].ratings, [1, 2, 0, 1, 0]);
    assert_eq!(by_function[1].mean_rating(), Some(9.0 / 4.0));
}

#[test]
fn private_rows_are_noisy_around_the_truth_at_the_scale_their_sensitivity_asks() {
    // Count and histogram each at ε/2 with sensitivity 1: Laplace of scale 2/ε, whose
    // variance is 2·(2/ε)² = 8 at ε = 1.
    let truth = InsightRow {
        function: Some("resize".into()),
        version: None,
        kind: None,
        tier: None,
        day: None,
        items: 10_000,
        ratings: [2_000; 5],
    };
    let epsilon = Epsilon::new(1.0).unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let draws = 20_000;
    let mut sum = 0.0;
    let mut squares = 0.0;
    for _ in 0..draws {
        let noisy = privatize(vec![truth.clone()], epsilon, &mut rng).remove(0);
        let error = noisy.items as f64 - 10_000.0;
        sum += error;
        squares += error * error;
        assert!(noisy.ratings.iter().all(|&c| c.abs_diff(2_000) < 200));
    }
    let mean = sum / f64::from(draws);
    let variance = squares / f64::from(draws) - mean * mean;
    assert!(mean.abs() < 0.2, "unbiased: {mean}");
    assert!((variance - 8.0).abs() < 0.8, "variance {variance}, want 8");
    // A larger ε adds less noise.
    let wide = Epsilon::new(8.0).unwrap();
    let noisy = privatize(vec![truth.clone()], wide, &mut rng).remove(0);
    assert!(noisy.items.abs_diff(10_000) < 20);
}

#[test]
fn small_groups_are_left_out_of_a_private_answer() {
    let tiny = InsightRow {
        function: Some("rare".into()),
        version: None,
        kind: None,
        tier: None,
        day: None,
        items: 1,
        ratings: [1, 0, 0, 0, 0],
    };
    let mut rng = StdRng::seed_from_u64(3);
    let epsilon = Epsilon::new(10.0).unwrap();
    let kept = (0..1_000)
        .filter(|_| !privatize(vec![tiny.clone()], epsilon, &mut rng).is_empty())
        .count();
    assert!(kept < 10, "a group of one shows {kept} times in 1000");
}

#[test]
fn facet_rows_sum_over_the_dimensions_not_grouped_by() {
    let facet = |kind, tier, day| Facet { kind, tier, day };
    let tally = |items, rated5| Tally {
        items,
        ratings: [0, 0, 0, 0, rated5],
    };
    let facets: BTreeMap<Facet, Tally> = [
        (facet(Kind::Rating, Tier::Standard, 10), tally(3, 3)),
        (facet(Kind::Rating, Tier::Priority, 10), tally(2, 1)),
        (facet(Kind::Text, Tier::Standard, 11), tally(4, 0)),
    ]
    .into_iter()
    .collect();
    let by_kind = group_facets(
        &facets,
        Grouping {
            kind: true,
            ..Grouping::default()
        },
    );
    assert_eq!(by_kind.len(), 2);
    assert_eq!(by_kind[0].kind, Some(Kind::Rating));
    assert_eq!((by_kind[0].items, by_kind[0].ratings[4]), (5, 4));
    assert_eq!((by_kind[0].tier, by_kind[0].day), (None, None));
    let by_day_and_tier = group_facets(
        &facets,
        Grouping {
            tier: true,
            day: true,
            ..Grouping::default()
        },
    );
    assert_eq!(by_day_and_tier.len(), 3);
    let everything = group_facets(&facets, Grouping::default());
    assert_eq!(everything.len(), 1);
    assert_eq!(everything[0].items, 9);
}
