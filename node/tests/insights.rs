//! Insights across a cluster: three `chorus agent` processes on loopback. A plain
//! insight sums every partition once; a private one is charged to the asking key's
//! budget at the keeper of its ledger whichever member is asked, so the budget is one
//! budget cluster-wide: spent across members, refused once exhausted, and a repeat of
//! a released answer within the cache bound costs nothing.

mod support;

use std::time::Duration;

use chorus_client::{ClientError, ErrorCode, EventQuery, EventType, EventTypes};
use chorus_protocol::{FunctionRef, Grouping, InsightQuery, Item, Kind};
use support::cluster::{
    client_of, cluster_with, formed, plain_client, submit_once_led, user_owned_by,
};

fn about(user: &str, version: &str, rating: u8) -> Item {
    let mut item = Item::new(user.to_string(), Kind::Rating);
    item.rating = Some(rating);
    item.function = Some(FunctionRef {
        name: "resize".into(),
        version: version.into(),
    });
    item
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_privacy_budget_per_key_is_spent_across_members_and_refused_once_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster_with(dir.path(), "[insights]\nepsilon_budget = 1.0");
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let first = plain_client(&nodes[0], dir.path()).await;
    for owner in ["node-1", "node-2", "node-3"] {
        let user = user_owned_by(&nodes[0], owner, owner);
        for rating in [1, 2, 5, 5] {
            submit_once_led(&first, about(&user, "1.0", rating))
                .await
                .unwrap();
        }
        submit_once_led(&first, about(&user, "2.0", 4))
            .await
            .unwrap();
    }
    let plain = InsightQuery {
        function: Some("resize".into()),
        group: Grouping {
            version: true,
            ..Grouping::default()
        },
        days: None,
        epsilon: None,
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let answer = first.insights(plain.clone()).await.unwrap();
            let items: u64 = answer.rows.iter().map(|r| r.items).sum();
            if items == 15 && answer.covered.0 == answer.covered.1 {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("every item counted once");
    assert_eq!(answer.rows.len(), 2);
    assert_eq!(answer.rows[0].ratings, [3, 3, 0, 0, 6]);
    assert_eq!(answer.rows[0].mean_rating(), Some(39.0 / 12.0));
    assert_eq!((answer.epsilon, answer.budget_remaining), (None, None));
    // By kind and tier over the last two days: every item (and the warm-up-free
    // cluster stored nothing else), one row.
    let today = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        / chorus_protocol::DAY_MS) as u32;
    let facets = first
        .insights(InsightQuery {
            function: None,
            group: Grouping {
                kind: true,
                tier: true,
                ..Grouping::default()
            },
            days: Some((today - 1, today)),
            epsilon: None,
        })
        .await
        .unwrap();
    assert_eq!(facets.covered.0, facets.covered.1);
    assert_eq!(facets.rows.len(), 1, "{:?}", facets.rows);
    assert_eq!(facets.rows[0].kind, Some(Kind::Rating));
    assert_eq!(facets.rows[0].items, 15);
    assert_eq!(facets.rows[0].ratings, [3, 3, 0, 3, 6]);
    let mixed = first
        .insights(InsightQuery {
            function: None,
            group: Grouping {
                function: true,
                day: true,
                ..Grouping::default()
            },
            days: None,
            epsilon: None,
        })
        .await;
    assert!(mixed.is_err(), "function and day do not mix");

    // The same key (node-1's admin key) through every member: one budget of 1.0.
    let key = std::fs::read_to_string(nodes[0].data.join("admin.key")).unwrap();
    let via = |i: usize| {
        let node = &nodes[i];
        let dir = dir.path();
        let key = key.trim().to_string();
        async move {
            let credentials =
                chorus_client::Credentials::from_ca_file(dir.join("certs/ca.pem"), &key)
                    .unwrap()
                    .with_server_name(node.name.clone());
            chorus_client::Client::connect(
                &[node.addr.parse().unwrap()],
                credentials,
                Default::default(),
            )
            .await
            .unwrap()
        }
    };
    let (one, two, three) = (via(0).await, via(1).await, via(2).await);
    let private = |function: &str, epsilon: f64| InsightQuery {
        function: Some(function.into()),
        group: Grouping {
            function: true,
            ..Grouping::default()
        },
        days: None,
        epsilon: Some(epsilon),
    };
    let spent = one.insights(private("resize", 0.4)).await.unwrap();
    assert_eq!(spent.epsilon, Some(0.4));
    assert!((spent.budget_remaining.unwrap() - 0.6).abs() < 1e-6);
    // The same question again within the cache bound: the same answer, nothing spent.
    let again = one.insights(private("resize", 0.4)).await.unwrap();
    assert_eq!(again, spent);
    let spent = two.insights(private("crop", 0.4)).await.unwrap();
    assert!((spent.budget_remaining.unwrap() - 0.2).abs() < 1e-6);
    let refused = three.insights(private("resize", 0.3)).await;
    assert!(
        matches!(&refused, Err(ClientError::Server(ErrorCode::Invalid { field, .. })) if field == "epsilon"),
        "{refused:?}"
    );
    let last = three.insights(private("resize", 0.2)).await.unwrap();
    assert!(last.budget_remaining.unwrap().abs() < 1e-6);
    assert!(three.insights(private("crop", 0.01)).await.is_err());
    // Another key has a budget of its own; a plain insight spends nothing.
    let other = client_of(&nodes[1], dir.path(), Default::default())
        .await
        .unwrap();
    other.insights(private("resize", 0.5)).await.unwrap();
    three.insights(plain).await.unwrap();

    // Each charge is an event every member holds.
    let spends: EventTypes = [EventType::PrivacySpent].into_iter().collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = two
            .events(
                &EventQuery {
                    types: spends,
                    ..EventQuery::default()
                },
                None,
                100,
            )
            .await
            .unwrap();
        if page.events.len() == 4 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} privacy_spent events",
            page.events.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
