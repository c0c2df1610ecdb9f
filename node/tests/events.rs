//! Events across a cluster: three `chorus agent` processes on loopback. An event
//! recorded on one member is listed by every other; a follower reads every event once,
//! in each origin's order; a member that was down while events were recorded learns
//! them when it returns, and a follower that resumes there from its cursor sees
//! exactly the events after it: nothing missed, nothing twice.

mod support;

use std::time::Duration;

use chorus_client::{Event, EventCursor, EventQuery, EventTypes};
use chorus_protocol::{FunctionRef, VersionChange};
use support::cluster::{client_of, cluster, formed, plain_client};

fn resize(version: &str) -> FunctionRef {
    FunctionRef {
        name: "resize".into(),
        version: version.into(),
    }
}

fn key(event: &Event) -> (String, u64) {
    (event.origin.0.clone(), event.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_member_and_a_follower_resumes_anywhere_with_nothing_missed_or_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = cluster(dir.path());
    for node in &mut nodes {
        node.start();
    }
    formed(&nodes).await;
    let first = plain_client(&nodes[0], dir.path()).await;
    let second = plain_client(&nodes[1], dir.path()).await;

    let deprecated = first
        .change_version(resize("1.0"), VersionChange::Deprecate)
        .await
        .unwrap();
    assert_eq!(key(&deprecated), ("node-1".into(), 1));
    // Pushed at once; listed by another member.
    let listed = second
        .events(&EventQuery::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(listed.events, std::slice::from_ref(&deprecated));

    let mut stream = second.follow_events(EventTypes::all(), EventCursor::default());
    let read = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read, deprecated);
    let resume_at = stream.cursor().clone();

    // node-3 is down while two more events are recorded, on two origins.
    nodes[2].kill();
    let current = second
        .change_version(resize("2.0"), VersionChange::MakeCurrent)
        .await
        .unwrap();
    let activated = first
        .change_version(resize("1.0"), VersionChange::Activate)
        .await
        .unwrap();
    let mut later = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("the follower sees each new event")
            .unwrap();
        later.push(key(&event));
    }
    later.sort();
    let mut want = vec![key(&current), key(&activated)];
    want.sort();
    assert_eq!(later, want);

    // node-3 returns, learns both by anti-entropy, and a follower resuming there
    // from the cursor after the first event reads exactly the two after it.
    nodes[2].start();
    formed(&nodes).await;
    let third = client_of(&nodes[2], dir.path(), Default::default())
        .await
        .unwrap();
    let mut resumed = third.follow_events(EventTypes::all(), resume_at);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(20), resumed.next())
            .await
            .expect("the returning member learns the events it missed")
            .unwrap();
        seen.push(key(&event));
    }
    seen.sort();
    assert_eq!(seen, want);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), resumed.next())
            .await
            .is_err(),
        "nothing more, and nothing twice"
    );
    // Every member shows the status the latest events set.
    for client in [&first, &second, &third] {
        let status = client.function_status(vec!["resize".into()]).await.unwrap();
        assert_eq!(status[0].current.as_deref(), Some("2.0"));
        assert!(status[0].deprecated.is_empty(), "{status:?}");
    }
}
