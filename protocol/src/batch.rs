//! A batch split by where its items go, and their outcomes put back in the caller's
//! order: the one rule the SDK (routing to owners) and the node (forwarding to owners)
//! both use.

use std::collections::HashMap;
use std::hash::Hash;

use crate::{ErrorCode, Item, NodeId, Receipt, RingSnapshot};

/// The outcome of one item of a batch.
pub type ItemOutcome = Result<Receipt, ErrorCode>;

/// One group's share of a batch: its positions, and its outcomes or the error that
/// failed the whole group.
pub type GroupOutcome = (Vec<usize>, Result<Vec<ItemOutcome>, ErrorCode>);

/// The items of a batch that go to one place, with their positions in the batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchGroup<K> {
    /// Where they go.
    pub owner: K,
    /// Where each item stands in the caller's batch, ascending.
    pub positions: Vec<usize>,
    /// The items, in the same order as `positions`.
    pub items: Vec<Item>,
}

/// Splits a batch into one group per `owner_of(item)`, groups in order of each owner's
/// first item.
pub fn split_by<K: Clone + Eq + Hash>(
    items: Vec<Item>,
    mut owner_of: impl FnMut(&Item) -> K,
) -> Vec<BatchGroup<K>> {
    let mut groups: Vec<BatchGroup<K>> = Vec::new();
    let mut index_of: HashMap<K, usize> = HashMap::new();
    for (position, item) in items.into_iter().enumerate() {
        let owner = owner_of(&item);
        let index = *index_of.entry(owner.clone()).or_insert_with(|| {
            groups.push(BatchGroup {
                owner,
                positions: Vec::new(),
                items: Vec::new(),
            });
            groups.len() - 1
        });
        groups[index].positions.push(position);
        groups[index].items.push(item);
    }
    groups
}

impl RingSnapshot {
    /// Splits a batch by the owner of each item's user.
    pub fn split_by_owner(&self, items: Vec<Item>) -> Vec<BatchGroup<NodeId>> {
        split_by(items, |item| {
            self.owner_of_user(&item.user_id).1.node.clone()
        })
    }
}

/// Puts each group's outcomes back at their positions. A group that failed as a whole
/// gives its error to each of its own positions only. `None` if the positions do not
/// cover `0..total` exactly once, or a group has the wrong number of outcomes.
pub fn merge_outcomes(total: usize, parts: Vec<GroupOutcome>) -> Option<Vec<ItemOutcome>> {
    let mut merged: Vec<Option<ItemOutcome>> = vec![None; total];
    for (positions, outcome) in parts {
        match outcome {
            Ok(outcomes) => {
                if outcomes.len() != positions.len() {
                    return None;
                }
                for (position, outcome) in positions.into_iter().zip(outcomes) {
                    fill(&mut merged, position, outcome)?;
                }
            }
            Err(code) => {
                for position in positions {
                    fill(&mut merged, position, Err(code.clone()))?;
                }
            }
        }
    }
    merged.into_iter().collect()
}

fn fill(merged: &mut [Option<ItemOutcome>], position: usize, outcome: ItemOutcome) -> Option<()> {
    let slot = merged.get_mut(position)?;
    if slot.is_some() {
        return None;
    }
    *slot = Some(outcome);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Enrichment, ItemId, Status};

    fn receipt(n: u128) -> Receipt {
        Receipt {
            id: ItemId(n),
            status: Status::Accepted,
            alignment_score: None,
            owner: NodeId("a".into()),
            replicas: vec![],
            stored_at: 0,
            enrichment: Enrichment::NotConfigured,
        }
    }

    #[test]
    fn groups_keep_first_seen_order_and_ascending_positions() {
        let users = ["b", "a", "b", "b", "a"];
        let items: Vec<Item> = users
            .iter()
            .map(|u| Item::new(*u, crate::Kind::Text))
            .collect();
        let groups = split_by(items.clone(), |i| i.user_id.clone());
        assert_eq!(groups.len(), 2);
        assert_eq!(
            (groups[0].owner.as_str(), &groups[0].positions[..]),
            ("b", &[0, 2, 3][..])
        );
        assert_eq!(
            (groups[1].owner.as_str(), &groups[1].positions[..]),
            ("a", &[1, 4][..])
        );
        assert_eq!(groups[1].items, vec![items[1].clone(), items[4].clone()]);
    }

    #[test]
    fn a_failed_group_fails_only_its_own_positions() {
        let parts = vec![
            (
                vec![0, 2],
                Ok(vec![Ok(receipt(0)), Err(ErrorCode::Forbidden)]),
            ),
            (vec![1, 3], Err(ErrorCode::Timeout)),
        ];
        assert_eq!(
            merge_outcomes(4, parts),
            Some(vec![
                Ok(receipt(0)),
                Err(ErrorCode::Timeout),
                Err(ErrorCode::Forbidden),
                Err(ErrorCode::Timeout),
            ])
        );
    }

    #[test]
    fn merging_refuses_holes_overlaps_and_short_groups() {
        assert_eq!(
            merge_outcomes(2, vec![(vec![0], Ok(vec![Ok(receipt(0))]))]),
            None
        );
        assert_eq!(
            merge_outcomes(1, vec![(vec![0, 0], Err(ErrorCode::Timeout))]),
            None
        );
        assert_eq!(merge_outcomes(1, vec![(vec![0], Ok(vec![]))]), None);
        assert_eq!(
            merge_outcomes(1, vec![(vec![1], Err(ErrorCode::Timeout))]),
            None
        );
    }
}
