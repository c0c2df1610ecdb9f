//! Where each request goes, as plain functions of the ring snapshot: the owner of a
//! request, what to do after a routed attempt fails, and when the snapshot may be
//! fetched again (a batch's split by owner and the merge of its outcomes are
//! `chorus_protocol`'s, shared with the node). No IO here: the client calls these and
//! acts on what they return.

use std::time::{Duration, Instant};

use chorus_protocol::{ErrorCode, NodeId, Request, RingMember, RingSnapshot};

use crate::error::ClientError;

/// Where one attempt of a request is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Straight to the owner, wrapped in `Request::Routed` with the snapshot's epoch.
    Owner {
        /// The member the snapshot names as owner.
        member: RingMember,
        /// The epoch of that snapshot.
        epoch: u64,
    },
    /// Unwrapped, through any working connection: the node forwards it to the owner.
    Any,
}

/// The single owner of every user a request is about, if the request can be routed and
/// the snapshot spans more than one member (with one member there is nothing to choose).
pub(crate) fn owner_of_request<'a>(
    ring: &'a RingSnapshot,
    request: &Request,
) -> Option<&'a RingMember> {
    if ring.members.len() < 2 {
        return None;
    }
    match request {
        Request::Submit(item) => Some(ring.owner_of_user(&item.user_id).1),
        Request::ListByUser { user_id, .. } => Some(ring.owner_of_user(user_id).1),
        // An id that names its partition (`Client::new_item`) is read at its leader.
        Request::Get(id) => {
            let partition = usize::from(id.partition_hint()?);
            let owner = *ring.owners.get(partition)?;
            ring.members.get(usize::from(owner))
        }
        Request::SubmitBatch(items) => {
            let (first, rest) = items.split_first()?;
            let owner = ring.owner_of_user(&first.user_id).1;
            rest.iter()
                .all(|item| ring.owner_of_user(&item.user_id).1.node == owner.node)
                .then_some(owner)
        }
        _ => None,
    }
}

/// How far a request has got along its route. It only moves forward (owner, then the
/// owner named after a refresh, then any connection), so a request is routed at most
/// twice before it takes the plain path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RoutePlan {
    stage: Stage,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Stage {
    /// To the owner of the current snapshot.
    Owner,
    /// `refused_by` answered `NotOwner` naming `hint`; to the owner of the refreshed
    /// snapshot, once.
    Redirected { refused_by: NodeId, hint: NodeId },
    /// Unrouted, through any connection.
    Plain,
}

/// What to do after an attempt failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The owner refused the request without executing it: refresh the snapshot, then
    /// try again at once.
    Refresh,
    /// The owner is out of reach: try again at once, unrouted, through any connection.
    Fallback,
    /// Apply the ordinary retry rules to the error.
    Retry,
}

impl RoutePlan {
    /// A plan for a request; `routing` false sends it unrouted from the start.
    pub(crate) fn new(routing: bool) -> Self {
        RoutePlan {
            stage: if routing { Stage::Owner } else { Stage::Plain },
        }
    }

    /// Where the next attempt goes, given the current snapshot.
    pub(crate) fn target(&self, ring: Option<&RingSnapshot>, request: &Request) -> Target {
        let Some(ring) = ring else {
            return Target::Any;
        };
        let Some(owner) = owner_of_request(ring, request) else {
            return Target::Any;
        };
        let member = match &self.stage {
            Stage::Plain => return Target::Any,
            Stage::Owner => owner,
            // A snapshot that still names the node that refused is stale (the refresh
            // was rate-limited, or the nodes disagree for a moment): trust the node's
            // hint if it is a member, else let a node forward it.
            Stage::Redirected { refused_by, hint } if &owner.node == refused_by => {
                match ring.members.iter().find(|m| &m.node == hint) {
                    Some(member) if &member.node != refused_by => member,
                    _ => return Target::Any,
                }
            }
            Stage::Redirected { .. } => owner,
        };
        Target::Owner {
            member: member.clone(),
            epoch: ring.epoch,
        }
    }

    /// Decides what follows a failed attempt at `target`, and moves the plan on.
    ///
    /// A `NotOwner` answer means the request was not executed, so it is always resent;
    /// an owner that cannot be reached falls back to the plain path when nothing was sent
    /// or the request is idempotent (the rules of [`crate::retry`]); anything else is
    /// left to the retry rules.
    pub(crate) fn handle_error(
        &mut self,
        target: &Target,
        error: &ClientError,
        idempotent: bool,
    ) -> Step {
        let Target::Owner { member, .. } = target else {
            return Step::Retry;
        };
        if let ClientError::Server(ErrorCode::NotOwner { owner }) = error {
            self.stage = match self.stage {
                Stage::Owner => Stage::Redirected {
                    refused_by: member.node.clone(),
                    hint: owner.clone(),
                },
                _ => Stage::Plain,
            };
            return match self.stage {
                Stage::Plain => Step::Fallback,
                _ => Step::Refresh,
            };
        }
        let unreachable = error.nothing_sent() && !matches!(error, ClientError::Closed);
        let lost = idempotent
            && matches!(
                error,
                ClientError::ConnectionLost { .. }
                    | ClientError::StreamReset { .. }
                    // A silent owner (e.g. killed, not yet declared down): the node
                    // sent to instead answers or forwards, and says Unavailable fast.
                    | ClientError::Timeout
                    | ClientError::Server(ErrorCode::Unavailable { .. })
            );
        if unreachable || lost {
            self.stage = Stage::Plain;
            return Step::Fallback;
        }
        Step::Retry
    }
}

/// The typed error each item of a group gets when the group failed as a whole.
pub(crate) fn group_error(error: &ClientError) -> ErrorCode {
    match error {
        ClientError::Server(code) => code.clone(),
        ClientError::Timeout => ErrorCode::Timeout,
        other => ErrorCode::Unavailable {
            reason: other.to_string(),
        },
    }
}

/// A fetch of the snapshot, for deciding whether another may start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fetch {
    /// When it began.
    pub began: Instant,
    /// When it ended, whatever its outcome.
    pub ended: Instant,
}

/// Whether a caller that asked for a fresh snapshot at `asked_at` must fetch one now.
/// Not if a fetch began after it asked (that fetch's snapshot is fresh enough for it: the
/// concurrent askers share one fetch), nor if the last fetch ended less than
/// `min_interval` ago (so that a burst of `NotOwner` answers costs one fetch).
pub(crate) fn refresh_needed(
    last: Option<Fetch>,
    asked_at: Instant,
    now: Instant,
    min_interval: Duration,
) -> bool {
    match last {
        None => true,
        Some(last) => last.began < asked_at && now.duration_since(last.ended) >= min_interval,
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{Item, Kind, Receipt, Status, merge_outcomes, partition_of};
    use proptest::prelude::*;

    use super::*;

    /// Two members, `a` and `b`, four partitions owned a, b, b, a.
    fn ring() -> RingSnapshot {
        RingSnapshot {
            epoch: 9,
            partitions: 4,
            members: vec![member("a"), member("b")],
            owners: vec![0, 1, 1, 0],
        }
    }

    fn member(name: &str) -> RingMember {
        RingMember {
            node: NodeId(name.into()),
            addr: format!("127.0.0.1:{}", 7000 + name.len()),
        }
    }

    /// A user whose partition `ring()` gives to `owner`.
    fn user_of(owner: &str) -> String {
        let ring = ring();
        (0..)
            .map(|i| format!("user-{i}"))
            .find(|u| ring.owner_of_user(u).1.node.0 == owner)
            .unwrap()
    }

    fn submit(user: &str) -> Request {
        Request::Submit(Item::new(user, Kind::Text))
    }

    fn owner(name: &str, epoch: u64) -> Target {
        Target::Owner {
            member: member(name),
            epoch,
        }
    }

    fn not_owner(name: &str) -> ClientError {
        ClientError::Server(ErrorCode::NotOwner {
            owner: NodeId(name.into()),
        })
    }

    #[test]
    fn requests_about_a_user_go_to_its_owner() {
        let ring = ring();
        let plan = RoutePlan::new(true);
        let (a, b) = (user_of("a"), user_of("b"));
        assert_eq!(plan.target(Some(&ring), &submit(&a)), owner("a", 9));
        assert_eq!(plan.target(Some(&ring), &submit(&b)), owner("b", 9));
        let list = Request::ListByUser {
            user_id: b.clone(),
            after: None,
            limit: 10,
        };
        assert_eq!(plan.target(Some(&ring), &list), owner("b", 9));
        let one_owner = Request::SubmitBatch(vec![Item::new(&b, Kind::Text); 3]);
        assert_eq!(plan.target(Some(&ring), &one_owner), owner("b", 9));
    }

    #[test]
    fn a_get_by_an_id_that_names_its_partition_goes_to_the_partitions_owner() {
        let ring = ring();
        let plan = RoutePlan::new(true);
        for owner in ["a", "b"] {
            let user = user_of(owner);
            let partition = partition_of(&user, ring.partitions);
            let request = Request::Get(chorus_protocol::ItemId::for_partition(partition));
            assert!(
                matches!(plan.target(Some(&ring), &request), Target::Owner { member, .. } if member.node.0 == owner)
            );
        }
        // A hint beyond the ring's partitions (an id minted elsewhere) goes anywhere.
        let beyond = Request::Get(chorus_protocol::ItemId::for_partition(u16::MAX));
        assert_eq!(plan.target(Some(&ring), &beyond), Target::Any);
    }

    #[test]
    fn requests_without_a_single_owner_go_anywhere() {
        let ring = ring();
        let plan = RoutePlan::new(true);
        let (a, b) = (user_of("a"), user_of("b"));
        let mixed =
            Request::SubmitBatch(vec![Item::new(&a, Kind::Text), Item::new(&b, Kind::Text)]);
        for request in [
            mixed,
            Request::SubmitBatch(vec![]),
            Request::Get(chorus_protocol::ItemId(1)),
            Request::RingSnapshot,
        ] {
            assert_eq!(
                plan.target(Some(&ring), &request),
                Target::Any,
                "{request:?}"
            );
        }
        assert_eq!(plan.target(None, &submit(&a)), Target::Any);
        assert_eq!(
            RoutePlan::new(false).target(Some(&ring), &submit(&a)),
            Target::Any
        );
    }

    #[test]
    fn a_single_member_ring_changes_nothing() {
        let single = RingSnapshot {
            epoch: 1,
            partitions: 4,
            members: vec![member("a")],
            owners: vec![0; 4],
        };
        assert_eq!(
            RoutePlan::new(true).target(Some(&single), &submit("alice")),
            Target::Any
        );
    }

    #[test]
    fn not_owner_refreshes_then_resends_once_then_goes_plain() {
        let mut ring = ring();
        let user = user_of("a");
        let mut plan = RoutePlan::new(true);
        let first = plan.target(Some(&ring), &submit(&user));
        assert_eq!(first, owner("a", 9));
        assert_eq!(
            plan.handle_error(&first, &not_owner("b"), true),
            Step::Refresh
        );
        // The refreshed ring gives the partition to b.
        ring.epoch = 10;
        ring.owners = vec![1; 4];
        let second = plan.target(Some(&ring), &submit(&user));
        assert_eq!(second, owner("b", 10));
        assert_eq!(
            plan.handle_error(&second, &not_owner("a"), true),
            Step::Fallback
        );
        assert_eq!(plan.target(Some(&ring), &submit(&user)), Target::Any);
    }

    #[test]
    fn a_stale_refresh_follows_the_hint_of_the_node_that_refused() {
        let ring = ring();
        let user = user_of("a");
        let mut plan = RoutePlan::new(true);
        let first = plan.target(Some(&ring), &submit(&user));
        assert_eq!(
            plan.handle_error(&first, &not_owner("b"), true),
            Step::Refresh
        );
        // Same ring (the refresh was rate-limited): a is still named, b is the hint.
        assert_eq!(plan.target(Some(&ring), &submit(&user)), owner("b", 9));
        // A hint outside the ring: a node forwards it.
        let mut plan = RoutePlan::new(true);
        plan.handle_error(&first, &not_owner("zed"), true);
        assert_eq!(plan.target(Some(&ring), &submit(&user)), Target::Any);
    }

    #[test]
    fn an_unreachable_owner_falls_back_only_where_safe() {
        let lost = ClientError::ConnectionLost {
            reason: "gone".into(),
        };
        let unreachable = ClientError::Connect {
            addr: "127.0.0.1:1".parse().unwrap(),
            reason: "refused".into(),
        };
        let cases = [
            // (error, idempotent, step)
            (unreachable.clone(), false, Step::Fallback),
            (ClientError::Tls("wrong name".into()), false, Step::Fallback),
            (lost.clone(), true, Step::Fallback),
            (lost, false, Step::Retry),
            (ClientError::Timeout, true, Step::Fallback),
            (ClientError::Timeout, false, Step::Retry),
            (ClientError::Closed, true, Step::Retry),
            (ClientError::Server(ErrorCode::Forbidden), true, Step::Retry),
            (
                ClientError::Server(ErrorCode::RateLimited { retry_after_ms: 5 }),
                true,
                Step::Retry,
            ),
        ];
        for (error, idempotent, step) in cases {
            let mut plan = RoutePlan::new(true);
            assert_eq!(
                plan.handle_error(&owner("a", 9), &error, idempotent),
                step,
                "{error:?} idempotent={idempotent}"
            );
        }
        // Errors on the plain path are always the retry rules' business.
        let mut plan = RoutePlan::new(true);
        assert_eq!(
            plan.handle_error(&Target::Any, &unreachable, true),
            Step::Retry
        );
    }

    #[test]
    fn a_batch_splits_by_owner_in_first_seen_order() {
        let ring = ring();
        let (a, b) = (user_of("a"), user_of("b"));
        let users = [&b, &a, &b, &b, &a];
        let items: Vec<Item> = users.iter().map(|u| Item::new(*u, Kind::Text)).collect();
        let groups = ring.split_by_owner(items.clone());
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].owner.0.as_str(), &groups[0].positions[..]),
            ("b", &[0, 2, 3][..])
        );
        assert_eq!(
            (groups[1].owner.0.as_str(), &groups[1].positions[..]),
            ("a", &[1, 4][..])
        );
        assert_eq!(groups[1].items, vec![items[1].clone(), items[4].clone()]);
    }

    fn receipt(n: u128) -> Receipt {
        Receipt {
            id: chorus_protocol::ItemId(n),
            status: Status::Accepted,
            alignment_score: None,
            owner: NodeId("a".into()),
            replicas: vec![],
            stored_at: 0,
            enrichment: chorus_protocol::Enrichment::NotConfigured,
        }
    }

    #[test]
    fn a_group_failure_keeps_the_servers_code() {
        assert_eq!(
            group_error(&ClientError::Server(ErrorCode::Forbidden)),
            ErrorCode::Forbidden
        );
        assert_eq!(group_error(&ClientError::Timeout), ErrorCode::Timeout);
        assert!(matches!(
            group_error(&ClientError::reset(chorus_protocol::ResetCode::Done)),
            ErrorCode::Unavailable { .. }
        ));
    }

    #[test]
    fn refreshes_are_shared_and_rate_limited() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let min = Duration::from_millis(100);
        assert!(refresh_needed(None, t0, t0, min));
        let last = Some(Fetch {
            began: ms(10),
            ended: ms(20),
        });
        // Asked before the last fetch began: that fetch answers it.
        assert!(!refresh_needed(last, ms(5), ms(200), min));
        // Asked after, but the last one ended too recently.
        assert!(!refresh_needed(last, ms(50), ms(60), min));
        // Asked after, and long enough since.
        assert!(refresh_needed(last, ms(50), ms(120), min));
    }

    /// The owner of each of 8 partitions among `members` members.
    fn arb_ring() -> impl Strategy<Value = RingSnapshot> {
        (1usize..5).prop_flat_map(|members| {
            proptest::collection::vec(0..members as u16, 8).prop_map(move |owners| RingSnapshot {
                epoch: 1,
                partitions: 8,
                members: (0..members).map(|i| member(&"m".repeat(i + 1))).collect(),
                owners,
            })
        })
    }

    proptest! {
        #[test]
        fn split_then_merge_fills_every_position_once_in_order(
            ring in arb_ring(),
            users in proptest::collection::vec(0u32..64, 1..200),
        ) {
            let items: Vec<Item> = users
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let mut item = Item::new(format!("user-{u}"), Kind::Text);
                    item.id = chorus_protocol::ItemId(i as u128);
                    item
                })
                .collect();
            let total = items.len();
            let groups = ring.split_by_owner(items);
            let mut seen = 0;
            let parts = groups
                .into_iter()
                .map(|group| {
                    seen += group.positions.len();
                    // Every item of a group has the group's owner, and positions ascend.
                    for (item, position) in group.items.iter().zip(&group.positions) {
                        assert_eq!(item.id.0 as usize, *position);
                        assert_eq!(ring.owner_of_user(&item.user_id).1.node, group.owner);
                        let p = partition_of(&item.user_id, ring.partitions);
                        assert_eq!(
                            ring.members[usize::from(ring.owners[usize::from(p)])].node,
                            group.owner
                        );
                    }
                    assert!(group.positions.windows(2).all(|w| w[0] < w[1]));
                    let outcomes = group.items.iter().map(|i| Ok(receipt(i.id.0))).collect();
                    (group.positions, Ok(outcomes))
                })
                .collect();
            prop_assert_eq!(seen, total);
            let merged = merge_outcomes(total, parts).expect("a permutation");
            for (position, outcome) in merged.into_iter().enumerate() {
                prop_assert_eq!(outcome, Ok(receipt(position as u128)));
            }
        }
    }
}
