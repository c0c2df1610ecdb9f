//! What a forward looks like on a link: one remote call to the peer's forward receiver
//! whose argument and answer are bincode 2 payloads (decoded with the protocol's
//! allocation limit), so that a malformed payload is an error, never a panic.

use bincode::{Decode, Encode};
use chorus_actors::Caller;
use chorus_protocol::{
    ErrorCode, Item, ItemId, PageToken, Receipt, Role, StoredItem, Tier, decode_value,
    encode_payload,
};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;

pub use crate::cluster::routing::{Forward, ForwardReply};

/// The tier named in an `Overloaded` refusal of `request`: the most urgent tier of a
/// submit's items, standard for reads.
pub fn overload_tier(request: &Forward) -> Tier {
    match request {
        Forward::Submit { items, .. } => items
            .iter()
            .map(|item| item.tier)
            .min_by_key(|tier| Tier::ALL.iter().position(|t| t == tier))
            .unwrap_or(Tier::Standard),
        _ => Tier::Standard,
    }
}

/// The message a forward receiver takes. Variant names are wire tags: renaming one
/// breaks a cluster running mixed versions.
#[derive(RactorClusterMessage)]
pub enum ForwardMsg {
    /// A bincode-encoded [`WireRequest`]; answered with a bincode-encoded
    /// `Result<WireReply, ErrorCode>`.
    #[rpc]
    Forward(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// [`Forward`] as encoded on a link.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum WireRequest {
    /// [`Forward::Submit`], the caller carried as role and key id.
    Submit {
        /// The caller's role.
        role: Role,
        /// The caller's key id (never the key).
        key_id: String,
        /// The items.
        items: Vec<Item>,
    },
    /// [`Forward::Get`].
    Get {
        /// The item's id.
        id: ItemId,
    },
    /// [`Forward::ListByUser`].
    ListByUser {
        /// Whose items.
        user_id: String,
        /// Where the page starts.
        after: Option<PageToken>,
        /// Most items in the page.
        limit: u32,
    },
    /// [`Forward::Authenticate`].
    Authenticate {
        /// SHA-256 of the key.
        key_hash: [u8; 32],
    },
}

/// [`ForwardReply`] as encoded on a link.
#[derive(Clone, Debug, PartialEq, Encode, Decode)]
pub enum WireReply {
    /// [`ForwardReply::Submit`].
    Submit(Vec<Result<Receipt, ErrorCode>>),
    /// [`ForwardReply::Get`].
    Get(Option<Box<StoredItem>>),
    /// [`ForwardReply::List`].
    List(Vec<StoredItem>, Option<PageToken>),
    /// [`ForwardReply::Role`].
    Role(Option<Role>),
}

impl From<Forward> for WireRequest {
    fn from(forward: Forward) -> Self {
        match forward {
            Forward::Submit { caller, items } => WireRequest::Submit {
                role: caller.role,
                key_id: caller.key_id.to_string(),
                items,
            },
            Forward::Get { id } => WireRequest::Get { id },
            Forward::Authenticate { key_hash } => WireRequest::Authenticate { key_hash },
            Forward::ListByUser {
                user_id,
                after,
                limit,
            } => WireRequest::ListByUser {
                user_id,
                after,
                limit,
            },
        }
    }
}

impl From<WireRequest> for Forward {
    fn from(wire: WireRequest) -> Self {
        match wire {
            WireRequest::Submit {
                role,
                key_id,
                items,
            } => Forward::Submit {
                caller: Caller {
                    role,
                    key_id: key_id.into(),
                },
                items,
            },
            WireRequest::Get { id } => Forward::Get { id },
            WireRequest::Authenticate { key_hash } => Forward::Authenticate { key_hash },
            WireRequest::ListByUser {
                user_id,
                after,
                limit,
            } => Forward::ListByUser {
                user_id,
                after,
                limit,
            },
        }
    }
}

impl From<ForwardReply> for WireReply {
    fn from(reply: ForwardReply) -> Self {
        match reply {
            ForwardReply::Submit(outcomes) => WireReply::Submit(outcomes),
            ForwardReply::Get(item) => WireReply::Get(item),
            ForwardReply::List(items, next) => WireReply::List(items, next),
            ForwardReply::Role(role) => WireReply::Role(role),
        }
    }
}

impl From<WireReply> for ForwardReply {
    fn from(wire: WireReply) -> Self {
        match wire {
            WireReply::Submit(outcomes) => ForwardReply::Submit(outcomes),
            WireReply::Get(item) => ForwardReply::Get(item),
            WireReply::List(items, next) => ForwardReply::List(items, next),
            WireReply::Role(role) => ForwardReply::Role(role),
        }
    }
}

/// Encodes a forward for the link.
pub fn encode_request(forward: Forward) -> Vec<u8> {
    encode_payload(&WireRequest::from(forward))
}

/// Decodes a forward received on a link.
pub fn decode_request(payload: &[u8]) -> Result<Forward, ErrorCode> {
    decode_value::<WireRequest>(payload)
        .map(Forward::from)
        .map_err(|e| ErrorCode::invalid("forward", e.to_string()))
}

/// Encodes the answer to a forward.
pub fn encode_reply(reply: Result<ForwardReply, ErrorCode>) -> Vec<u8> {
    encode_payload(&reply.map(WireReply::from))
}

/// Decodes the answer to a forward; a payload that does not decode is `None`.
pub fn decode_reply(payload: &[u8]) -> Option<Result<ForwardReply, ErrorCode>> {
    decode_value::<Result<WireReply, ErrorCode>>(payload)
        .ok()
        .map(|reply| reply.map(ForwardReply::from))
}

#[cfg(test)]
mod tests {
    use chorus_protocol::Kind;

    use super::*;

    #[test]
    fn requests_and_replies_survive_the_wire() {
        let caller = Caller::for_key("chorus_key", Role::Submit);
        let mut item = Item::new("user-1".to_string(), Kind::Text);
        item.tier = Tier::Priority;
        let requests = [
            Forward::Submit {
                caller,
                items: vec![item.clone(), Item::new("user-2".to_string(), Kind::Bug)],
            },
            Forward::Get { id: item.id },
            Forward::ListByUser {
                user_id: "user-1".into(),
                after: Some(PageToken(vec![1, 2, 3])),
                limit: 10,
            },
        ];
        for request in requests {
            let bytes = encode_request(request.clone());
            assert_eq!(
                WireRequest::from(decode_request(&bytes).unwrap()),
                WireRequest::from(request)
            );
        }
        for reply in [
            Ok(ForwardReply::Get(None)),
            Ok(ForwardReply::List(vec![], Some(PageToken(vec![9])))),
            Err(ErrorCode::Unauthorized),
        ] {
            assert_eq!(decode_reply(&encode_reply(reply.clone())), Some(reply));
        }
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let good = encode_request(Forward::Get { id: ItemId(7) });
        assert!(decode_request(&good[..good.len() - 1]).is_err());
        assert!(decode_request(&[0xff; 64]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_request(&trailing).is_err());
        assert_eq!(decode_reply(&[0xff, 0xff, 0xff]), None);
        // A huge declared length is refused by the allocation limit, not allocated.
        assert!(decode_request(&[0x00, 0xfc, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn the_overload_tier_is_the_most_urgent_item_tier() {
        let mut urgent = Item::new("u".to_string(), Kind::Text);
        urgent.tier = Tier::Realtime;
        let caller = Caller::for_key("k", Role::Submit);
        let submit = Forward::Submit {
            caller,
            items: vec![Item::new("u".to_string(), Kind::Text), urgent],
        };
        assert_eq!(overload_tier(&submit), Tier::Realtime);
        assert_eq!(
            overload_tier(&Forward::Get { id: ItemId(1) }),
            Tier::Standard
        );
    }
}
