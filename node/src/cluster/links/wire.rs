//! What a forward looks like on a link: one remote call to the peer's forward receiver
//! whose argument and answer are bincode 2 payloads. They are decoded with an
//! allocation limit equal to the link frame limit (a payload cannot be larger than the
//! frame that carried it), every count and string bounded while it is decoded (a batch
//! holds at most `MAX_BATCH_ITEMS` items, a page `MAX_PAGE_LIMIT`, a key set
//! `MAX_API_KEYS` keys and as many revocations), and no type that
//! nests itself: a malformed or hostile payload is an error, never a panic, a deep
//! recursion or a large allocation.

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};
use chorus_actors::store::{
    MAX_EPOCH_HISTORY, PartitionEpochs, Promise, RepairOutcome, ReplicaRecord, ShipBatch,
    ShipOutcome,
};
use chorus_actors::{ApiKeyRecord, Caller, KeyHash, KeySet};
use chorus_protocol::{
    ErrorCode, Event, EventCursor, Facet, FunctionRef, Item, ItemId, MAX_API_KEY_NAME_BYTES,
    MAX_API_KEYS, MAX_BATCH_ITEMS, MAX_EVENTS_PAGE, MAX_FUNCTION_NAME_BYTES,
    MAX_FUNCTION_VERSION_BYTES, MAX_FUNCTIONS_PAGE, MAX_PAGE_LIMIT, MAX_USER_ID_BYTES, NodeId,
    PageToken, Receipt, Role, StoredItem, Tally, Tier, VersionStats,
};
use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;

use crate::cluster::replication::digest::{MAX_DIGEST_RANGES, PartitionDigest};
pub use crate::cluster::routing::{Forward, ForwardReply};
use crate::cluster::standing::{
    MAX_PARTITION_WORDS, MAX_STANDINGS, PartitionSet, Standing, Standings,
};
use crate::functions::{FunctionQuery, FunctionReport};

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

/// The layout of link messages this release writes; every earlier layout's encodings
/// are kept as fixtures (`wire_fixtures/link-v{N}.txt`) that it must keep decoding.
/// Layout 2 is layout 1 with, on a `chorus-link/2` link, the id of the request a
/// forward serves before its body ([`REQUEST_ID_MARK`]), or the ids of the several it
/// serves, as a shipment does ([`REQUEST_IDS_MARK`]).
pub const LINK_FORMAT: u32 = 2;

/// The allocation limit of link payloads: the link frame limit.
const LINK_LIMIT: usize = super::MAX_LINK_FRAME as usize;

type WireConfig = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<LINK_LIMIT>,
>;

const WIRE: WireConfig = bincode::config::standard().with_limit::<LINK_LIMIT>();

/// Longest key id a forwarded submit may name (ours are 16 hex digits).
pub const MAX_KEY_ID_BYTES: usize = 64;

/// A sequence's length as bincode writes it, refused over `max` before anything is
/// allocated for it.
fn bounded_len<D: Decoder>(decoder: &mut D, max: usize, field: &str) -> Result<usize, DecodeError> {
    let len = u64::decode(decoder)?;
    if len > max as u64 {
        return Err(DecodeError::OtherString(format!(
            "{field}: {len} declared, at most {max}"
        )));
    }
    Ok(len as usize)
}

/// A vector of at most `max` elements; it grows with the elements decoded, never with
/// the declared length alone.
fn bounded_vec<D: Decoder, T: Decode<D::Context>>(
    decoder: &mut D,
    max: usize,
    field: &str,
) -> Result<Vec<T>, DecodeError> {
    let len = bounded_len(decoder, max, field)?;
    let mut out = Vec::new();
    for _ in 0..len {
        out.push(T::decode(decoder)?);
    }
    Ok(out)
}

/// A UTF-8 string of at most `max` bytes.
fn bounded_string<D: Decoder>(
    decoder: &mut D,
    max: usize,
    field: &str,
) -> Result<String, DecodeError> {
    let len = bounded_len(decoder, max, field)?;
    decoder.claim_bytes_read(len)?;
    let mut bytes = vec![0; len];
    bincode::de::read::Reader::read(decoder.reader(), &mut bytes)?;
    String::from_utf8(bytes).map_err(|e| DecodeError::Utf8 {
        inner: e.utf8_error(),
    })
}

/// The tag bincode writes in front of an `Option`'s value (`true`: `Some`).
fn bool_tag<D: Decoder>(decoder: &mut D) -> Result<bool, DecodeError> {
    match u8::decode(decoder)? {
        0 => Ok(false),
        1 => Ok(true),
        found => Err(DecodeError::UnexpectedVariant {
            type_name: "Option",
            allowed: &bincode::error::AllowedEnumVariants::Range { min: 0, max: 1 },
            found: u32::from(found),
        }),
    }
}

/// The variant index bincode's derive writes in front of an enum's fields.
fn variant<D: Decoder>(decoder: &mut D) -> Result<u32, DecodeError> {
    u32::decode(decoder)
}

/// The last variant index of [`WireRequest`].
const LAST_REQUEST: u32 = 12;
/// The last variant index of [`WireReply`].
const LAST_REPLY: u32 = 13;

/// Most partition batches in one shipment or partitions in one promise request (a
/// partition count fits a u16).
pub const MAX_PARTITIONS_PER_CALL: usize = 1 << 16;
/// Most records in one shipment's batch or one fetched page.
pub const MAX_RECORDS_PER_CALL: usize = 1 << 16;

/// A byte string of at most `max` bytes.
fn bounded_bytes<D: Decoder>(
    decoder: &mut D,
    max: usize,
    field: &str,
) -> Result<Vec<u8>, DecodeError> {
    let len = bounded_len(decoder, max, field)?;
    decoder.claim_bytes_read(len)?;
    let mut bytes = vec![0; len];
    bincode::de::read::Reader::read(decoder.reader(), &mut bytes)?;
    Ok(bytes)
}

/// A [`ReplicaRecord`] in the derive's layout, its body bounded by the link frame.
fn decode_record<D: Decoder>(decoder: &mut D) -> Result<ReplicaRecord, DecodeError> {
    Ok(ReplicaRecord {
        partition: u16::decode(decoder)?,
        sequence: u64::decode(decoder)?,
        body: bounded_bytes(decoder, LINK_LIMIT, "body")?,
    })
}

/// Records in the derive's layout, at most [`MAX_RECORDS_PER_CALL`].
fn decode_records<D: Decoder>(decoder: &mut D) -> Result<Vec<ReplicaRecord>, DecodeError> {
    let len = bounded_len(decoder, MAX_RECORDS_PER_CALL, "records")?;
    let mut records = Vec::new();
    for _ in 0..len {
        records.push(decode_record(decoder)?);
    }
    Ok(records)
}

/// A function and version, each within the item schema's bounds.
fn decode_function<D: Decoder>(decoder: &mut D) -> Result<FunctionRef, DecodeError> {
    Ok(FunctionRef {
        name: bounded_string(decoder, MAX_FUNCTION_NAME_BYTES, "function.name")?,
        version: bounded_string(decoder, MAX_FUNCTION_VERSION_BYTES, "function.version")?,
    })
}

/// An epoch history, at most [`MAX_EPOCH_HISTORY`] entries.
fn decode_history<D: Decoder>(decoder: &mut D) -> Result<Vec<(u64, u64)>, DecodeError> {
    bounded_vec(decoder, MAX_EPOCH_HISTORY, "history")
}

/// Shipped batches as a leader sends them, in the derive's layout, within bounds.
fn decode_shipment<D: Decoder>(decoder: &mut D) -> Result<Vec<ShipBatch>, DecodeError> {
    let len = bounded_len(decoder, MAX_PARTITIONS_PER_CALL, "batches")?;
    let mut batches = Vec::new();
    for _ in 0..len {
        batches.push(ShipBatch {
            partition: u16::decode(decoder)?,
            epoch: u64::decode(decoder)?,
            history: decode_history(decoder)?,
            prev: u64::decode(decoder)?,
            records: decode_records(decoder)?,
        });
    }
    Ok(batches)
}

/// Promises as replicas send them, in the derive's layout, within bounds.
fn decode_promises<D: Decoder>(decoder: &mut D) -> Result<Vec<Promise>, DecodeError> {
    let len = bounded_len(decoder, MAX_PARTITIONS_PER_CALL, "promises")?;
    let mut promises = Vec::new();
    for _ in 0..len {
        promises.push(Promise {
            accepted: bool::decode(decoder)?,
            epochs: PartitionEpochs {
                promised: u64::decode(decoder)?,
                history: decode_history(decoder)?,
            },
            last: u64::decode(decoder)?,
        });
    }
    Ok(promises)
}

fn unknown_variant(found: u32, type_name: &'static str) -> DecodeError {
    let allowed = if type_name == "WireRequest" {
        &bincode::error::AllowedEnumVariants::Range {
            min: 0,
            max: LAST_REQUEST,
        }
    } else {
        &bincode::error::AllowedEnumVariants::Range {
            min: 0,
            max: LAST_REPLY,
        }
    };
    DecodeError::UnexpectedVariant {
        type_name,
        allowed,
        found,
    }
}

/// A [`KeySet`] as encoded on a link (bincode's derive; decoded by hand, within
/// bounds): at most `MAX_API_KEYS` keys, names of at most `MAX_API_KEY_NAME_BYTES`,
/// and at most `MAX_API_KEYS` revocations. The largest is about 2 MiB, well inside a
/// link frame.
#[derive(Clone, Debug, Default, PartialEq, Encode)]
pub struct WireKeySet {
    /// Keys by hash.
    pub keys: Vec<(KeyHash, ApiKeyRecord)>,
    /// Revocations by hash, with their time.
    pub revocations: Vec<(KeyHash, u64)>,
}

impl<Context> Decode<Context> for WireKeySet {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let len = bounded_len(decoder, MAX_API_KEYS, "keys")?;
        let mut keys = Vec::new();
        for _ in 0..len {
            let hash = <[u8; 32]>::decode(decoder)?;
            let record = ApiKeyRecord {
                role: Role::decode(decoder)?,
                name: bounded_string(decoder, MAX_API_KEY_NAME_BYTES, "name")?,
                created_at: u64::decode(decoder)?,
            };
            keys.push((hash, record));
        }
        let revocations = bounded_vec(decoder, MAX_API_KEYS, "revocations")?;
        Ok(WireKeySet { keys, revocations })
    }
}

impl From<KeySet> for WireKeySet {
    fn from(set: KeySet) -> Self {
        WireKeySet {
            keys: set.keys,
            revocations: set.revocations,
        }
    }
}

impl From<WireKeySet> for KeySet {
    fn from(wire: WireKeySet) -> Self {
        KeySet {
            keys: wire.keys,
            revocations: wire.revocations,
        }
    }
}

/// Longest member name in a standings map (a DNS name).
pub const MAX_NODE_NAME_BYTES: usize = 253;

/// Members' standings as encoded on a link (bincode's derive; decoded by hand, within
/// bounds): at most [`MAX_STANDINGS`] members, names of at most
/// [`MAX_NODE_NAME_BYTES`], cordons of at most [`MAX_PARTITION_WORDS`] words.
#[derive(Clone, Debug, Default, PartialEq, Encode)]
pub struct WireStandings(pub Vec<(String, Standing)>);

impl<Context> Decode<Context> for WireStandings {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let len = bounded_len(decoder, MAX_STANDINGS, "standings")?;
        let mut entries = Vec::new();
        for _ in 0..len {
            let node = bounded_string(decoder, MAX_NODE_NAME_BYTES, "node")?;
            let version = u64::decode(decoder)?;
            let warming = bool::decode(decoder)?;
            let departed = bool::decode(decoder)?;
            let cordoned = match bool_tag(decoder)? {
                false => None,
                true => Some(PartitionSet::from_words(bounded_vec(
                    decoder,
                    MAX_PARTITION_WORDS,
                    "cordon",
                )?)),
            };
            let standing = Standing {
                version,
                warming,
                departed,
                cordoned,
            };
            entries.push((node, standing));
        }
        Ok(WireStandings(entries))
    }
}

impl From<Standings> for WireStandings {
    fn from(standings: Standings) -> Self {
        WireStandings(
            standings
                .into_entries()
                .into_iter()
                .map(|(node, standing)| (node.0, standing))
                .collect(),
        )
    }
}

impl From<WireStandings> for Standings {
    fn from(wire: WireStandings) -> Self {
        Standings::from_entries(wire.0.into_iter().map(|(n, s)| (NodeId(n), s)))
    }
}

/// Most facets one member's report holds: kinds × tiers × the days of a century.
pub const MAX_FACETS: usize = 1 << 20;

/// [`Forward`] as encoded on a link (encoded by bincode's derive; decoded by hand,
/// within bounds, in the same layout).
#[derive(Clone, Debug, PartialEq, Encode)]
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
    /// [`Forward::KeyDigest`].
    KeyDigest,
    /// [`Forward::SyncKeys`].
    SyncKeys {
        /// The keys and revocations.
        set: WireKeySet,
        /// Whether `set` is the sender's whole set.
        complete: bool,
    },
    /// [`Forward::Ship`].
    Ship(Vec<ShipBatch>),
    /// [`Forward::Promise`].
    Promise(Vec<(u16, u64)>),
    /// [`Forward::Fetch`].
    Fetch {
        /// Each partition and the sequence its records are wanted after.
        partitions: Vec<(u16, u64)>,
        /// About how many bytes in all.
        max_bytes: u32,
    },
    /// [`Forward::Digests`].
    Digests {
        /// The partition.
        partition: u16,
        /// The last sequence the copies must end at.
        expect_last: u64,
        /// The ranges, at most [`MAX_DIGEST_RANGES`].
        ranges: Vec<(u64, u64)>,
    },
    /// [`Forward::Repair`].
    Repair {
        /// The partition.
        partition: u16,
        /// The leader's epoch.
        epoch: u64,
        /// The last sequence the digests were compared at.
        expect_last: u64,
        /// Where the copies agree up to.
        after: u64,
    },
    /// [`Forward::Standings`].
    Standings(WireStandings),
    /// [`Forward::Tips`].
    Tips(Vec<u16>),
    /// [`Forward::FunctionStats`].
    FunctionStats {
        /// Only this function's versions.
        name: Option<String>,
        /// Only versions after this one.
        after: Option<FunctionRef>,
        /// At most this many.
        limit: u32,
    },
    /// [`Forward::EventHeads`].
    EventHeads,
    /// [`Forward::EventsAfter`].
    EventsAfter(EventCursor),
    /// [`Forward::PushEvents`].
    PushEvents(Vec<Event>),
    /// [`Forward::ReviewPage`].
    ReviewPage {
        /// Where the page starts.
        after: Option<PageToken>,
        /// Most items in the page.
        limit: u32,
    },
    /// [`Forward::Review`], the caller carried as role and key id.
    Review {
        /// The caller's role.
        role: Role,
        /// The caller's key id (never the key).
        key_id: String,
        /// The item's user.
        user_id: String,
        /// The item.
        id: ItemId,
        /// Approve, or reject.
        approve: bool,
    },
    /// [`Forward::DeleteUser`], the caller carried as role and key id.
    DeleteUser {
        /// The caller's role.
        role: Role,
        /// The caller's key id (never the key).
        key_id: String,
        /// The user.
        user_id: String,
        /// Where the part starts.
        after: Option<ItemId>,
    },
    /// [`Forward::ChargePrivacy`].
    ChargePrivacy {
        /// The key's id.
        key_id: String,
        /// The ε to charge.
        epsilon: f64,
        /// The key's lifetime budget.
        budget: f64,
    },
    /// [`Forward::FacetStats`].
    FacetStats(Option<(u32, u32)>),
}

impl<Context> Decode<Context> for WireRequest {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        match variant(decoder)? {
            0 => Ok(WireRequest::Submit {
                role: Role::decode(decoder)?,
                key_id: bounded_string(decoder, MAX_KEY_ID_BYTES, "key_id")?,
                items: bounded_vec(decoder, MAX_BATCH_ITEMS, "items")?,
            }),
            1 => Ok(WireRequest::Get {
                id: ItemId::decode(decoder)?,
            }),
            2 => Ok(WireRequest::ListByUser {
                user_id: bounded_string(decoder, MAX_USER_ID_BYTES, "user_id")?,
                after: Option::<PageToken>::decode(decoder)?,
                limit: u32::decode(decoder)?,
            }),
            3 => Ok(WireRequest::Authenticate {
                key_hash: <[u8; 32]>::decode(decoder)?,
            }),
            4 => Ok(WireRequest::KeyDigest),
            5 => Ok(WireRequest::SyncKeys {
                set: WireKeySet::decode(decoder)?,
                complete: bool::decode(decoder)?,
            }),
            6 => Ok(WireRequest::Ship(decode_shipment(decoder)?)),
            7 => Ok(WireRequest::Promise(bounded_vec(
                decoder,
                MAX_PARTITIONS_PER_CALL,
                "partitions",
            )?)),
            8 => Ok(WireRequest::Fetch {
                partitions: bounded_vec(decoder, MAX_PARTITIONS_PER_CALL, "partitions")?,
                max_bytes: u32::decode(decoder)?,
            }),
            9 => Ok(WireRequest::Digests {
                partition: u16::decode(decoder)?,
                expect_last: u64::decode(decoder)?,
                ranges: bounded_vec(decoder, MAX_DIGEST_RANGES, "ranges")?,
            }),
            10 => Ok(WireRequest::Repair {
                partition: u16::decode(decoder)?,
                epoch: u64::decode(decoder)?,
                expect_last: u64::decode(decoder)?,
                after: u64::decode(decoder)?,
            }),
            11 => Ok(WireRequest::Standings(WireStandings::decode(decoder)?)),
            12 => Ok(WireRequest::Tips(bounded_vec(
                decoder,
                MAX_PARTITIONS_PER_CALL,
                "partitions",
            )?)),
            13 => Ok(WireRequest::FunctionStats {
                name: match bool_tag(decoder)? {
                    false => None,
                    true => Some(bounded_string(decoder, MAX_FUNCTION_NAME_BYTES, "name")?),
                },
                after: match bool_tag(decoder)? {
                    false => None,
                    true => Some(decode_function(decoder)?),
                },
                limit: u32::decode(decoder)?,
            }),
            14 => Ok(WireRequest::EventHeads),
            15 => Ok(WireRequest::EventsAfter(EventCursor::decode(decoder)?)),
            16 => Ok(WireRequest::PushEvents(bounded_vec(
                decoder,
                MAX_EVENTS_PAGE as usize,
                "events",
            )?)),
            17 => Ok(WireRequest::ReviewPage {
                after: Option::<PageToken>::decode(decoder)?,
                limit: u32::decode(decoder)?,
            }),
            18 => Ok(WireRequest::Review {
                role: Role::decode(decoder)?,
                key_id: bounded_string(decoder, MAX_KEY_ID_BYTES, "key_id")?,
                user_id: bounded_string(decoder, MAX_USER_ID_BYTES, "user_id")?,
                id: ItemId::decode(decoder)?,
                approve: bool::decode(decoder)?,
            }),
            19 => Ok(WireRequest::DeleteUser {
                role: Role::decode(decoder)?,
                key_id: bounded_string(decoder, MAX_KEY_ID_BYTES, "key_id")?,
                user_id: bounded_string(decoder, MAX_USER_ID_BYTES, "user_id")?,
                after: Option::<ItemId>::decode(decoder)?,
            }),
            21 => Ok(WireRequest::FacetStats(Option::<(u32, u32)>::decode(
                decoder,
            )?)),
            20 => Ok(WireRequest::ChargePrivacy {
                key_id: bounded_string(decoder, MAX_KEY_ID_BYTES, "key_id")?,
                epsilon: f64::decode(decoder)?,
                budget: f64::decode(decoder)?,
            }),
            found => Err(unknown_variant(found, "WireRequest")),
        }
    }
}

/// [`ForwardReply`] as encoded on a link (encoded by bincode's derive; decoded by
/// hand, within bounds, in the same layout).
#[derive(Clone, Debug, PartialEq, Encode)]
pub enum WireReply {
    /// [`ForwardReply::Submit`].
    Submit(Vec<Result<Receipt, ErrorCode>>),
    /// [`ForwardReply::Get`].
    Get(Option<Box<StoredItem>>),
    /// [`ForwardReply::List`].
    List(Vec<StoredItem>, Option<PageToken>),
    /// [`ForwardReply::Role`].
    Role(Option<Role>),
    /// [`ForwardReply::KeyDigest`].
    KeyDigest(u64),
    /// [`ForwardReply::Keys`].
    Keys(WireKeySet),
    /// [`ForwardReply::Revoked`].
    Revoked,
    /// [`ForwardReply::Shipped`].
    Shipped(Vec<ShipOutcome>),
    /// [`ForwardReply::Promised`].
    Promised(Vec<Promise>),
    /// [`ForwardReply::Records`].
    Records(Vec<ReplicaRecord>),
    /// [`ForwardReply::Digests`].
    Digests(Option<Vec<PartitionDigest>>),
    /// [`ForwardReply::Repaired`].
    Repaired(RepairOutcome),
    /// [`ForwardReply::Standings`].
    Standings(WireStandings),
    /// [`ForwardReply::Tips`].
    Tips(Vec<u64>),
    /// [`ForwardReply::FunctionStats`]: the versions, then the partitions' words.
    FunctionStats(Vec<(FunctionRef, VersionStats)>, Vec<u64>),
    /// [`ForwardReply::EventHeads`].
    EventHeads(EventCursor),
    /// [`ForwardReply::Events`].
    Events(Vec<Event>),
    /// [`ForwardReply::EventsTaken`].
    EventsTaken(u32),
    /// [`ForwardReply::Deleted`].
    Deleted(u64, Option<ItemId>),
    /// [`ForwardReply::Charged`].
    Charged(f64, Event),
    /// [`ForwardReply::FacetStats`]: the facets, then the partitions' words.
    FacetStats(Vec<(Facet, Tally)>, Vec<u64>),
}

impl<Context> Decode<Context> for WireReply {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        match variant(decoder)? {
            0 => Ok(WireReply::Submit(bounded_vec(
                decoder,
                MAX_BATCH_ITEMS,
                "outcomes",
            )?)),
            1 => Ok(WireReply::Get(Option::<Box<StoredItem>>::decode(decoder)?)),
            2 => Ok(WireReply::List(
                bounded_vec(decoder, MAX_PAGE_LIMIT as usize, "items")?,
                Option::<PageToken>::decode(decoder)?,
            )),
            3 => Ok(WireReply::Role(Option::<Role>::decode(decoder)?)),
            4 => Ok(WireReply::KeyDigest(u64::decode(decoder)?)),
            5 => Ok(WireReply::Keys(WireKeySet::decode(decoder)?)),
            6 => Ok(WireReply::Revoked),
            7 => Ok(WireReply::Shipped(bounded_vec(
                decoder,
                MAX_PARTITIONS_PER_CALL,
                "outcomes",
            )?)),
            8 => Ok(WireReply::Promised(decode_promises(decoder)?)),
            9 => Ok(WireReply::Records(decode_records(decoder)?)),
            10 => Ok(WireReply::Digests(match bool_tag(decoder)? {
                false => None,
                true => Some(bounded_vec(decoder, MAX_DIGEST_RANGES, "digests")?),
            })),
            11 => Ok(WireReply::Repaired(RepairOutcome::decode(decoder)?)),
            12 => Ok(WireReply::Standings(WireStandings::decode(decoder)?)),
            13 => Ok(WireReply::Tips(bounded_vec(
                decoder,
                MAX_PARTITIONS_PER_CALL,
                "tips",
            )?)),
            14 => {
                let len = bounded_len(decoder, MAX_FUNCTIONS_PAGE as usize, "versions")?;
                let mut versions = Vec::new();
                for _ in 0..len {
                    versions.push((decode_function(decoder)?, VersionStats::decode(decoder)?));
                }
                Ok(WireReply::FunctionStats(
                    versions,
                    bounded_vec(decoder, MAX_PARTITION_WORDS, "partitions")?,
                ))
            }
            15 => Ok(WireReply::EventHeads(EventCursor::decode(decoder)?)),
            16 => Ok(WireReply::Events(bounded_vec(
                decoder,
                MAX_EVENTS_PAGE as usize,
                "events",
            )?)),
            17 => Ok(WireReply::EventsTaken(u32::decode(decoder)?)),
            18 => Ok(WireReply::Deleted(
                u64::decode(decoder)?,
                Option::<ItemId>::decode(decoder)?,
            )),
            19 => Ok(WireReply::Charged(
                f64::decode(decoder)?,
                Event::decode(decoder)?,
            )),
            20 => Ok(WireReply::FacetStats(
                bounded_vec(decoder, MAX_FACETS, "facets")?,
                bounded_vec(decoder, MAX_PARTITION_WORDS, "partitions")?,
            )),
            found => Err(unknown_variant(found, "WireReply")),
        }
    }
}

/// Decodes a whole link payload as one `T` under the link's allocation limit; trailing
/// bytes are an error.
fn decode_payload<T: Decode<()>>(payload: &[u8]) -> Result<T, DecodeError> {
    let (value, read) = bincode::decode_from_slice(payload, WIRE)?;
    if read != payload.len() {
        return Err(DecodeError::OtherString(format!(
            "{} trailing bytes",
            payload.len() - read
        )));
    }
    Ok(value)
}

fn encode_payload<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, WIRE).expect("encoding into a Vec cannot fail")
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
            Forward::KeyDigest => WireRequest::KeyDigest,
            Forward::SyncKeys { set, complete } => WireRequest::SyncKeys {
                set: set.into(),
                complete,
            },
            Forward::Ship { batches } => WireRequest::Ship(batches),
            Forward::Promise { partitions } => WireRequest::Promise(partitions),
            Forward::Fetch {
                partitions,
                max_bytes,
            } => WireRequest::Fetch {
                partitions,
                max_bytes,
            },
            Forward::Digests {
                partition,
                expect_last,
                ranges,
            } => WireRequest::Digests {
                partition,
                expect_last,
                ranges,
            },
            Forward::Repair {
                partition,
                epoch,
                expect_last,
                after,
            } => WireRequest::Repair {
                partition,
                epoch,
                expect_last,
                after,
            },
            Forward::Standings { set } => WireRequest::Standings(set.into()),
            Forward::Tips { partitions } => WireRequest::Tips(partitions),
            Forward::FunctionStats {
                query: FunctionQuery { name, after, limit },
            } => WireRequest::FunctionStats { name, after, limit },
            Forward::EventHeads => WireRequest::EventHeads,
            Forward::EventsAfter { cursor } => WireRequest::EventsAfter(cursor),
            Forward::PushEvents { events } => WireRequest::PushEvents(events),
            Forward::ReviewPage { after, limit } => WireRequest::ReviewPage { after, limit },
            Forward::Review {
                caller,
                user_id,
                id,
                approve,
            } => WireRequest::Review {
                role: caller.role,
                key_id: caller.key_id.to_string(),
                user_id,
                id,
                approve,
            },
            Forward::FacetStats { days } => WireRequest::FacetStats(days),
            Forward::ChargePrivacy {
                key_id,
                epsilon,
                budget,
            } => WireRequest::ChargePrivacy {
                key_id,
                epsilon,
                budget,
            },
            Forward::DeleteUser {
                caller,
                user_id,
                after,
            } => WireRequest::DeleteUser {
                role: caller.role,
                key_id: caller.key_id.to_string(),
                user_id,
                after,
            },
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
            WireRequest::KeyDigest => Forward::KeyDigest,
            WireRequest::SyncKeys { set, complete } => Forward::SyncKeys {
                set: set.into(),
                complete,
            },
            WireRequest::Ship(batches) => Forward::Ship { batches },
            WireRequest::Promise(partitions) => Forward::Promise { partitions },
            WireRequest::Fetch {
                partitions,
                max_bytes,
            } => Forward::Fetch {
                partitions,
                max_bytes,
            },
            WireRequest::Digests {
                partition,
                expect_last,
                ranges,
            } => Forward::Digests {
                partition,
                expect_last,
                ranges,
            },
            WireRequest::Repair {
                partition,
                epoch,
                expect_last,
                after,
            } => Forward::Repair {
                partition,
                epoch,
                expect_last,
                after,
            },
            WireRequest::Standings(set) => Forward::Standings { set: set.into() },
            WireRequest::Tips(partitions) => Forward::Tips { partitions },
            WireRequest::FunctionStats { name, after, limit } => Forward::FunctionStats {
                query: FunctionQuery { name, after, limit },
            },
            WireRequest::EventHeads => Forward::EventHeads,
            WireRequest::EventsAfter(cursor) => Forward::EventsAfter { cursor },
            WireRequest::PushEvents(events) => Forward::PushEvents { events },
            WireRequest::ReviewPage { after, limit } => Forward::ReviewPage { after, limit },
            WireRequest::Review {
                role,
                key_id,
                user_id,
                id,
                approve,
            } => Forward::Review {
                caller: Caller {
                    role,
                    key_id: key_id.into(),
                },
                user_id,
                id,
                approve,
            },
            WireRequest::FacetStats(days) => Forward::FacetStats { days },
            WireRequest::ChargePrivacy {
                key_id,
                epsilon,
                budget,
            } => Forward::ChargePrivacy {
                key_id,
                epsilon,
                budget,
            },
            WireRequest::DeleteUser {
                role,
                key_id,
                user_id,
                after,
            } => Forward::DeleteUser {
                caller: Caller {
                    role,
                    key_id: key_id.into(),
                },
                user_id,
                after,
            },
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
            ForwardReply::KeyDigest(digest) => WireReply::KeyDigest(digest),
            ForwardReply::Keys(set) => WireReply::Keys(set.into()),
            ForwardReply::Revoked => WireReply::Revoked,
            ForwardReply::Shipped(outcomes) => WireReply::Shipped(outcomes),
            ForwardReply::Promised(promises) => WireReply::Promised(promises),
            ForwardReply::Records(records) => WireReply::Records(records),
            ForwardReply::Digests(digests) => WireReply::Digests(digests),
            ForwardReply::FunctionStats(FunctionReport {
                versions,
                partitions,
            }) => WireReply::FunctionStats(versions, partitions.words().to_vec()),
            ForwardReply::Repaired(outcome) => WireReply::Repaired(outcome),
            ForwardReply::Standings(set) => WireReply::Standings(set.into()),
            ForwardReply::Tips(tips) => WireReply::Tips(tips),
            ForwardReply::EventHeads(cursor) => WireReply::EventHeads(cursor),
            ForwardReply::Events(events) => WireReply::Events(events),
            ForwardReply::EventsTaken(taken) => WireReply::EventsTaken(taken),
            ForwardReply::Deleted(items, next) => WireReply::Deleted(items, next),
            ForwardReply::Charged(remaining, event) => WireReply::Charged(remaining, event),
            ForwardReply::FacetStats(crate::insights::FacetReport { facets, partitions }) => {
                WireReply::FacetStats(facets, partitions.words().to_vec())
            }
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
            WireReply::KeyDigest(digest) => ForwardReply::KeyDigest(digest),
            WireReply::Keys(set) => ForwardReply::Keys(set.into()),
            WireReply::Revoked => ForwardReply::Revoked,
            WireReply::Shipped(outcomes) => ForwardReply::Shipped(outcomes),
            WireReply::Promised(promises) => ForwardReply::Promised(promises),
            WireReply::Records(records) => ForwardReply::Records(records),
            WireReply::Digests(digests) => ForwardReply::Digests(digests),
            WireReply::Repaired(outcome) => ForwardReply::Repaired(outcome),
            WireReply::Standings(set) => ForwardReply::Standings(set.into()),
            WireReply::Tips(tips) => ForwardReply::Tips(tips),
            WireReply::FunctionStats(versions, words) => {
                ForwardReply::FunctionStats(FunctionReport {
                    versions,
                    partitions: PartitionSet::from_words(words),
                })
            }
            WireReply::EventHeads(cursor) => ForwardReply::EventHeads(cursor),
            WireReply::Events(events) => ForwardReply::Events(events),
            WireReply::EventsTaken(taken) => ForwardReply::EventsTaken(taken),
            WireReply::Deleted(items, next) => ForwardReply::Deleted(items, next),
            WireReply::Charged(remaining, event) => ForwardReply::Charged(remaining, event),
            WireReply::FacetStats(facets, words) => {
                ForwardReply::FacetStats(crate::insights::FacetReport {
                    facets,
                    partitions: PartitionSet::from_words(words),
                })
            }
        }
    }
}

/// The first byte of a forward that carries its request's id (`chorus-link/2`): never
/// the first byte of a bincode varint, so no payload without an id begins with it.
pub const REQUEST_ID_MARK: u8 = 0xFF;

/// The first byte of a forward on behalf of several requests at once, such as a
/// shipment of their records (`chorus-link/2`), then their ids: 0xFE announces a
/// 128-bit varint, which no bare payload's first field (a 32-bit variant tag) can be.
pub const REQUEST_IDS_MARK: u8 = 0xFE;

/// Most request ids one forward carries; a sender names the first this many.
pub const MAX_REQUEST_IDS: usize = 4096;

/// The ids behind [`REQUEST_IDS_MARK`], at most [`MAX_REQUEST_IDS`].
struct RequestIds(Vec<u64>);

impl<Context> Decode<Context> for RequestIds {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        bounded_vec(decoder, MAX_REQUEST_IDS, "request ids").map(RequestIds)
    }
}

/// Encodes a forward to send on a link, on behalf of `requests` (for a
/// `chorus-link/2` peer; none for an older one): one id goes first behind
/// [`REQUEST_ID_MARK`], several behind [`REQUEST_IDS_MARK`], at most
/// [`MAX_REQUEST_IDS`] of them.
pub fn encode_request(forward: Forward, requests: &[u64]) -> Vec<u8> {
    let body = encode_payload(&WireRequest::from(forward));
    let mut payload = match requests {
        [] => return body,
        [id] => {
            let mut payload = vec![REQUEST_ID_MARK];
            payload.extend(encode_payload(id));
            payload
        }
        many => {
            let mut payload = vec![REQUEST_IDS_MARK];
            payload.extend(encode_payload(&&many[..many.len().min(MAX_REQUEST_IDS)]));
            payload
        }
    };
    payload.extend(body);
    payload
}

/// Decodes a forward received on a link, with the ids of the requests it serves (none,
/// one, or several; never 0).
pub fn decode_request(payload: &[u8]) -> Result<(Vec<u64>, Forward), ErrorCode> {
    let invalid = |e: &dyn std::fmt::Display| ErrorCode::invalid("forward", e.to_string());
    let (requests, body) = match payload.split_first() {
        Some((&REQUEST_ID_MARK, rest)) => {
            let (id, read) =
                bincode::decode_from_slice::<u64, _>(rest, WIRE).map_err(|e| invalid(&e))?;
            (vec![id], &rest[read..])
        }
        Some((&REQUEST_IDS_MARK, rest)) => {
            let (RequestIds(ids), read) =
                bincode::decode_from_slice(rest, WIRE).map_err(|e| invalid(&e))?;
            (ids, &rest[read..])
        }
        _ => (Vec::new(), payload),
    };
    if requests.contains(&0) {
        return Err(invalid(&"request id 0"));
    }
    let forward = decode_payload::<WireRequest>(body)
        .map(Forward::from)
        .map_err(|e| invalid(&e))?;
    Ok((requests, forward))
}

/// Encodes the answer to a forward.
pub fn encode_reply(reply: Result<ForwardReply, ErrorCode>) -> Vec<u8> {
    encode_payload(&reply.map(WireReply::from))
}

/// Decodes the answer to a forward; a payload that does not decode is `None`.
pub fn decode_reply(payload: &[u8]) -> Option<Result<ForwardReply, ErrorCode>> {
    decode_payload::<Result<WireReply, ErrorCode>>(payload)
        .ok()
        .map(|reply| reply.map(ForwardReply::from))
}

#[cfg(test)]
mod tests {
    use chorus_protocol::Kind;

    use super::*;

    #[test]
    fn a_forward_carries_its_request_id_only_when_given_one() {
        let id = ItemId(0x0123_4567_89ab_cdef);
        let bare = encode_request(Forward::Get { id }, &[]);
        assert_ne!(bare[0], REQUEST_ID_MARK);
        assert!(matches!(
            decode_request(&bare),
            Ok((ids, Forward::Get { id: got })) if got == id && ids.is_empty()
        ));
        let marked = encode_request(Forward::Get { id }, &[0xDEAD_BEEF]);
        assert_eq!(marked[0], REQUEST_ID_MARK);
        assert_eq!(
            &marked[marked.len() - bare.len()..],
            &bare[..],
            "the body is unchanged"
        );
        assert!(matches!(
            decode_request(&marked),
            Ok((ids, Forward::Get { id: got })) if got == id && ids == [0xDEAD_BEEF]
        ));
    }

    #[test]
    fn a_forward_for_several_requests_carries_every_id_up_to_the_bound() {
        let body = encode_request(Forward::KeyDigest, &[]);
        let several = encode_request(Forward::KeyDigest, &[3, u64::MAX, 5]);
        assert_eq!(several[0], REQUEST_IDS_MARK);
        assert_eq!(&several[several.len() - body.len()..], &body[..]);
        assert!(matches!(
            decode_request(&several),
            Ok((ids, Forward::KeyDigest)) if ids == [3, u64::MAX, 5]
        ));
        // A sender names the first MAX_REQUEST_IDS; a receiver refuses more.
        let many: Vec<u64> = (1..=MAX_REQUEST_IDS as u64 + 10).collect();
        let (ids, _) = decode_request(&encode_request(Forward::KeyDigest, &many)).unwrap();
        assert_eq!(ids, many[..MAX_REQUEST_IDS]);
        let too_many = [&[REQUEST_IDS_MARK][..], &encode_payload(&many), &body].concat();
        assert!(matches!(
            decode_request(&too_many),
            Err(ErrorCode::Invalid { .. })
        ));
    }

    #[test]
    fn function_stats_past_their_bounds_are_refused() {
        let long_name = WireRequest::FunctionStats {
            name: Some("n".repeat(MAX_FUNCTION_NAME_BYTES + 1)),
            after: None,
            limit: 10,
        };
        assert!(decode_request(&encode_payload(&long_name)).is_err());
        let function = FunctionRef {
            name: "f".into(),
            version: "1".into(),
        };
        let too_many = WireReply::FunctionStats(
            vec![(function.clone(), VersionStats::default()); MAX_FUNCTIONS_PAGE as usize + 1],
            vec![],
        );
        assert_eq!(
            decode_reply(&encode_payload(&Ok::<_, ErrorCode>(too_many))),
            None
        );
        let impossible = VersionStats {
            reported: 3,
            ..VersionStats::default()
        };
        let bad = WireReply::FunctionStats(vec![(function, impossible)], vec![]);
        assert_eq!(
            decode_reply(&encode_payload(&Ok::<_, ErrorCode>(bad))),
            None
        );
    }

    /// The `chorus-link/2` envelopes byte for byte: a peer of this release writes them,
    /// so a change must be a new layout, not an accident.
    #[test]
    fn the_request_id_envelopes_keep_their_bytes() {
        let one = encode_request(Forward::KeyDigest, &[0xDEAD_BEEF]);
        assert_eq!(hex::encode(one), "fffcefbeadde04");
        let several = encode_request(Forward::KeyDigest, &[3, u64::MAX, 5]);
        assert_eq!(hex::encode(several), "fe0303fdffffffffffffffff0504");
    }

    #[test]
    fn a_marked_forward_without_a_valid_id_or_body_is_refused() {
        let body = encode_request(Forward::KeyDigest, &[]);
        // Id 0 (never minted), a mark alone, an id without a body, a truncated id; and
        // the same for a list of ids, with a declared length far beyond what follows.
        for payload in [
            [&[REQUEST_ID_MARK, 0][..], &body].concat(),
            vec![REQUEST_ID_MARK],
            vec![REQUEST_ID_MARK, 5],
            vec![REQUEST_ID_MARK, 253, 1, 2],
            [&[REQUEST_IDS_MARK, 2, 7, 0][..], &body].concat(),
            vec![REQUEST_IDS_MARK],
            vec![REQUEST_IDS_MARK, 1, 5],
            vec![REQUEST_IDS_MARK, 252, 0, 0, 0, 16],
        ] {
            assert!(
                matches!(decode_request(&payload), Err(ErrorCode::Invalid { .. })),
                "{payload:?}"
            );
        }
    }

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
            let bytes = encode_request(request.clone(), &[3]);
            let (ids, decoded) = decode_request(&bytes).unwrap();
            assert_eq!(ids, [3]);
            assert_eq!(WireRequest::from(decoded), WireRequest::from(request));
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
        let good = encode_request(Forward::Get { id: ItemId(7) }, &[]);
        assert!(decode_request(&good[..good.len() - 1]).is_err());
        assert!(decode_request(&[0xff; 64]).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_request(&trailing).is_err());
        assert_eq!(decode_reply(&[0xff, 0xff, 0xff]), None);
        // A huge declared length is refused by the allocation limit, not allocated.
        assert!(decode_request(&[0x00, 0xfc, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    /// An item with fixed id and time, so that its encoding never changes.
    fn fixed_item() -> Item {
        let mut item = Item::new("u".to_string(), Kind::Text);
        item.id = ItemId(0x0190_0000_0000_1234_5678_9abc_def0_1234);
        item.client_ts = 1_765_000_000_000;
        item.text = "fixed".into();
        item
    }

    /// One value of every request variant, built the same way every time.
    fn sample_requests() -> Vec<(&'static str, WireRequest)> {
        let requests = vec![
            WireRequest::Submit {
                role: Role::Admin,
                key_id: "0123456789abcdef".into(),
                items: vec![fixed_item()],
            },
            WireRequest::Get { id: ItemId(9) },
            WireRequest::ListByUser {
                user_id: "u".into(),
                after: Some(PageToken(vec![1])),
                limit: 5,
            },
            WireRequest::Authenticate { key_hash: [3; 32] },
            WireRequest::KeyDigest,
            WireRequest::SyncKeys {
                set: key_set(2),
                complete: true,
            },
            WireRequest::Ship(vec![ShipBatch {
                partition: 7,
                epoch: 3,
                history: vec![(1, 1), (3, 40)],
                prev: 41,
                records: vec![record(7, 42, 9)],
            }]),
            WireRequest::Promise(vec![(1, 2), (65_535, u64::MAX)]),
            WireRequest::Fetch {
                partitions: vec![(3, 10), (4, 0)],
                max_bytes: 1 << 20,
            },
            WireRequest::Digests {
                partition: 9,
                expect_last: 300,
                ranges: vec![(0, 150), (150, 300)],
            },
            WireRequest::Repair {
                partition: 9,
                epoch: 4,
                expect_last: 300,
                after: 150,
            },
            WireRequest::Standings(standings()),
            WireRequest::Tips(vec![0, 7, 65_535]),
            WireRequest::FunctionStats {
                name: Some("resize".into()),
                after: Some(FunctionRef {
                    name: "resize".into(),
                    version: "1.0".into(),
                }),
                limit: 100,
            },
            WireRequest::EventHeads,
            WireRequest::EventsAfter(EventCursor(vec![(NodeId("node-a".into()), 4)])),
            WireRequest::PushEvents(vec![sample_event()]),
            WireRequest::ReviewPage {
                after: Some(PageToken(vec![0, 3, 1])),
                limit: 50,
            },
            WireRequest::Review {
                role: Role::Review,
                key_id: "0123abcd".into(),
                user_id: "user-1".into(),
                id: ItemId(0x0190_0000_0000_0000_0000_0000_0000_0042),
                approve: true,
            },
            WireRequest::DeleteUser {
                role: Role::Admin,
                key_id: "0123abcd".into(),
                user_id: "user-1".into(),
                after: Some(ItemId(0x0190_0000_0000_0000_0000_0000_0000_0043)),
            },
            WireRequest::ChargePrivacy {
                key_id: "0123abcd".into(),
                epsilon: 0.5,
                budget: 10.0,
            },
            WireRequest::FacetStats(Some((20_000, 20_030))),
        ];
        requests
            .into_iter()
            .map(|r| (Forward::from(r.clone()).kind(), r))
            .collect()
    }

    /// One value (or more) of every reply variant, built the same way every time.
    fn sample_replies() -> Vec<WireReply> {
        vec![
            WireReply::Submit(vec![Err(ErrorCode::Unauthorized)]),
            WireReply::Get(None),
            WireReply::List(vec![], Some(PageToken(vec![2]))),
            WireReply::Role(Some(Role::Submit)),
            WireReply::KeyDigest(u64::MAX),
            WireReply::Keys(key_set(3)),
            WireReply::Revoked,
            WireReply::Shipped(vec![
                ShipOutcome::Appended { last: 4 },
                ShipOutcome::Behind { last: 1 },
                ShipOutcome::Fenced { promised: 9 },
            ]),
            WireReply::Promised(vec![Promise {
                accepted: true,
                epochs: PartitionEpochs {
                    promised: 4,
                    history: vec![(2, 5), (4, 9)],
                },
                last: 12,
            }]),
            WireReply::Records(vec![record(1, 2, 3), record(1, 4, 0)]),
            WireReply::Digests(None),
            WireReply::Digests(Some(vec![PartitionDigest {
                records: 3,
                hash: u64::MAX,
            }])),
            WireReply::Repaired(RepairOutcome::Truncated { removed: 2 }),
            WireReply::Repaired(RepairOutcome::Fenced { promised: 5 }),
            WireReply::Repaired(RepairOutcome::Moved { last: 7 }),
            WireReply::Standings(WireStandings::default()),
            WireReply::Standings(standings()),
            WireReply::Tips(vec![0, u64::MAX]),
            WireReply::FunctionStats(
                vec![(
                    FunctionRef {
                        name: "resize".into(),
                        version: "2.0".into(),
                    },
                    {
                        let mut stats = VersionStats::default();
                        stats.add(&chorus_protocol::ItemFacts {
                            rating: Some(4),
                            metrics: Some((25_000, 1_500)),
                        });
                        stats
                    },
                )],
                vec![0b1011, 0, 1 << 63],
            ),
            WireReply::EventHeads(EventCursor(vec![(NodeId("node-a".into()), 9)])),
            WireReply::Events(vec![sample_event()]),
            WireReply::EventsTaken(1),
            WireReply::Deleted(
                4096,
                Some(ItemId(0x0190_0000_0000_0000_0000_0000_0000_0044)),
            ),
            WireReply::Charged(9.5, sample_event()),
            WireReply::FacetStats(
                vec![(
                    Facet {
                        kind: Kind::Rating,
                        tier: Tier::Priority,
                        day: 20_001,
                    },
                    Tally {
                        items: 3,
                        ratings: [0, 1, 0, 0, 2],
                    },
                )],
                vec![0b101],
            ),
        ]
    }

    fn sample_event() -> Event {
        Event {
            origin: NodeId("node-a".into()),
            seq: 5,
            at_ms: 1_765_000_000_000,
            kind: chorus_protocol::EventKind::UserDeleted {
                user_id: "user-1".into(),
                items: 12,
                by: "0123abcd".into(),
            },
        }
    }

    /// The encodings of [`sample_requests`] and [`sample_replies`] that this release's
    /// peers send, one `name hex` line each, kept in `wire_fixtures/`. A node must keep
    /// decoding them while it may share a cluster with them (a rolling upgrade), and an
    /// encoding that changes by accident fails here. `CHORUS_WRITE_WIRE_FIXTURES=1`
    /// writes the file afresh (for a deliberate change of format).
    const LINK_V1: &str = include_str!("wire_fixtures/link-v1.txt");

    fn fixture_lines() -> Vec<String> {
        let requests = sample_requests()
            .into_iter()
            .map(|(name, r)| format!("request.{name} {}", hex::encode(encode_payload(&r))));
        let replies = sample_replies()
            .into_iter()
            .enumerate()
            .map(|(i, r)| format!("reply.{i} {}", hex::encode(encode_payload(&r))));
        requests.chain(replies).collect()
    }

    #[test]
    fn the_previous_encodings_of_every_message_still_decode_to_the_same_values() {
        let lines = fixture_lines();
        if std::env::var_os("CHORUS_WRITE_WIRE_FIXTURES").is_some() {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/cluster/links/wire_fixtures/link-v1.txt"
            );
            std::fs::write(path, lines.join("\n") + "\n").unwrap();
            return;
        }
        let kept: Vec<&str> = LINK_V1.lines().collect();
        let requests = sample_requests();
        let replies = sample_replies();
        for line in &kept {
            let (name, bytes) = line.split_once(' ').unwrap();
            let bytes = hex::decode(bytes).unwrap();
            if let Some(name) = name.strip_prefix("request.") {
                let (_, want) = requests.iter().find(|(n, _)| *n == name).unwrap();
                assert_eq!(
                    &decode_payload::<WireRequest>(&bytes).unwrap(),
                    want,
                    "{name}"
                );
            } else {
                let at: usize = name.strip_prefix("reply.").unwrap().parse().unwrap();
                assert_eq!(
                    decode_payload::<WireReply>(&bytes).unwrap(),
                    replies[at],
                    "{name}"
                );
            }
        }
        assert_eq!(
            kept, lines,
            "an encoding changed: a peer of this release would not read it"
        );
    }

    /// The layout of every variant as bincode's derive would decode it: the hand-written
    /// decoders read what the derived encoders write.
    #[test]
    fn every_variant_round_trips_through_the_bounded_decoders() {
        for (_, request) in sample_requests() {
            let bytes = encode_payload(&request);
            assert_eq!(decode_payload::<WireRequest>(&bytes).unwrap(), request);
        }
        for reply in sample_replies() {
            let bytes = encode_payload(&reply);
            assert_eq!(decode_payload::<WireReply>(&bytes).unwrap(), reply);
        }
    }

    fn standings() -> WireStandings {
        let standing = |warming, cordoned| Standing {
            version: 12,
            warming,
            departed: false,
            cordoned,
        };
        WireStandings(vec![
            ("node-a".into(), standing(true, None)),
            (
                "node-b".into(),
                standing(false, Some(PartitionSet::of([3, 700]))),
            ),
        ])
    }

    #[test]
    fn standings_over_their_bounds_are_refused() {
        let mut long_name = standings();
        long_name.0[0].0 = "n".repeat(MAX_NODE_NAME_BYTES + 1);
        assert!(decode_request(&encode_payload(&WireRequest::Standings(long_name))).is_err());
        let mut wide = standings();
        wide.0[1].1.cordoned = Some(PartitionSet::from_words(vec![1; MAX_PARTITION_WORDS + 1]));
        assert!(decode_request(&encode_payload(&WireRequest::Standings(wide))).is_err());
    }

    #[test]
    fn counts_and_strings_over_their_bounds_are_refused_before_they_are_read() {
        let too_many = WireRequest::Submit {
            role: Role::Submit,
            key_id: "k".into(),
            items: vec![Item::new("u".to_string(), Kind::Text); MAX_BATCH_ITEMS + 1],
        };
        let error = decode_request(&encode_payload(&too_many)).unwrap_err();
        assert!(format!("{error:?}").contains("items"), "{error:?}");
        let long_key = WireRequest::Submit {
            role: Role::Submit,
            key_id: "k".repeat(MAX_KEY_ID_BYTES + 1),
            items: vec![],
        };
        assert!(decode_request(&encode_payload(&long_key)).is_err());
        let long_user = WireRequest::ListByUser {
            user_id: "u".repeat(MAX_USER_ID_BYTES + 1),
            after: None,
            limit: 1,
        };
        assert!(decode_request(&encode_payload(&long_user)).is_err());
        // A declared count of 2^60 items in a few bytes: refused, nothing allocated.
        // 0xfd: bincode's varint marker of a u64 that follows.
        let mut huge = vec![0u8, 1, 1, b'k', 0xfd];
        huge.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let error = decode_request(&huge).unwrap_err();
        assert!(format!("{error:?}").contains("items"), "{error:?}");
        let reply = WireReply::List(vec![], None);
        let mut bytes = encode_payload(&Ok::<_, ErrorCode>(reply));
        bytes.truncate(2);
        bytes.push(0xfd);
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(decode_reply(&bytes), None);
    }

    fn record(partition: u16, sequence: u64, len: usize) -> ReplicaRecord {
        ReplicaRecord {
            partition,
            sequence,
            body: vec![0xab; len],
        }
    }

    #[test]
    fn digest_ranges_over_their_bound_are_refused() {
        let many = WireRequest::Digests {
            partition: 1,
            expect_last: 9,
            ranges: (0..=MAX_DIGEST_RANGES as u64).map(|i| (i, i + 1)).collect(),
        };
        let error = decode_request(&encode_payload(&many)).unwrap_err();
        assert!(format!("{error:?}").contains("ranges"), "{error:?}");
        let digests = WireReply::Digests(Some(vec![
            PartitionDigest {
                records: 1,
                hash: 1
            };
            MAX_DIGEST_RANGES + 1
        ]));
        assert_eq!(
            decode_reply(&encode_payload(&Ok::<_, ErrorCode>(digests))),
            None
        );
    }

    #[test]
    fn histories_and_record_counts_over_their_bounds_are_refused() {
        let long_history = WireRequest::Ship(vec![ShipBatch {
            partition: 1,
            epoch: 1,
            history: (0..=MAX_EPOCH_HISTORY as u64).map(|e| (e, e)).collect(),
            prev: 0,
            records: vec![],
        }]);
        let error = decode_request(&encode_payload(&long_history)).unwrap_err();
        assert!(format!("{error:?}").contains("history"), "{error:?}");
        // A fetch answer declaring 2^40 records in a few bytes: refused unallocated.
        let mut huge = encode_payload(&Ok::<_, ErrorCode>(WireReply::Records(vec![])));
        huge.truncate(2);
        huge.push(0xfd);
        huge.extend_from_slice(&(1u64 << 40).to_le_bytes());
        assert_eq!(decode_reply(&huge), None);
    }

    /// `n` keys with the longest names, and a revocation for each.
    fn key_set(n: usize) -> WireKeySet {
        let hash = |i: usize| {
            let mut hash = [0u8; 32];
            hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
            hash
        };
        WireKeySet {
            keys: (0..n)
                .map(|i| {
                    let record = ApiKeyRecord {
                        role: Role::Admin,
                        name: "n".repeat(MAX_API_KEY_NAME_BYTES),
                        created_at: u64::MAX,
                    };
                    (hash(i), record)
                })
                .collect(),
            revocations: (0..n).map(|i| (hash(i), u64::MAX)).collect(),
        }
    }

    #[test]
    fn the_largest_key_set_fits_a_link_frame_and_one_more_key_is_refused() {
        let full = WireRequest::SyncKeys {
            set: key_set(MAX_API_KEYS),
            complete: true,
        };
        let bytes = encode_payload(&full);
        assert!(bytes.len() < LINK_LIMIT, "{} bytes", bytes.len());
        assert_eq!(decode_payload::<WireRequest>(&bytes).unwrap(), full);
        let mut over = key_set(MAX_API_KEYS);
        over.keys.push(over.keys[0].clone());
        let error = decode_request(&encode_payload(&WireRequest::SyncKeys {
            set: over,
            complete: false,
        }))
        .unwrap_err();
        assert!(format!("{error:?}").contains("keys"), "{error:?}");
        let mut long_name = key_set(1);
        long_name.keys[0].1.name.push('n');
        let reply = Ok::<_, ErrorCode>(WireReply::Keys(long_name));
        assert_eq!(decode_reply(&encode_payload(&reply)), None);
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
