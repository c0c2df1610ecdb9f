//! The intake actor: the front door of the write path.
//!
//! It checks a submission's shape and each item's schema, then hands the valid items to
//! the store actor together with the reply port, so the store answers the caller
//! directly (no extra hop back through intake). Invalid items get their own `Invalid`
//! outcome in place while the rest of the batch proceeds. Later stages (auth, limits,
//! owner lookup) slot in here.

use chorus_protocol::{ErrorCode, Item, Request};
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};
use tokio::sync::watch;
use tracing::debug;

use crate::store_actor::{BatchOutcome, StoreMsg, merge};
use crate::supervisor::Children;

/// Messages of the intake actor.
pub enum IntakeMsg {
    /// Store a batch of items (a single submit is a batch of one).
    Submit {
        /// The items, 1..=`MAX_BATCH_ITEMS`.
        items: Vec<Item>,
        /// One outcome per item, or one error for the whole batch.
        reply: RpcReplyPort<BatchOutcome>,
    },
}

/// The intake actor.
#[derive(Debug, Default)]
pub struct IntakeActor;

/// The intake actor's state: where to find the current store actor.
pub struct IntakeState {
    children: watch::Receiver<Children>,
}

impl IntakeState {
    /// Validates a submission and forwards it; answers the caller itself only when
    /// nothing reaches the store.
    fn submit(&self, items: Vec<Item>, reply: RpcReplyPort<BatchOutcome>) {
        let request = Request::SubmitBatch(items);
        if let Err(e) = request.validate_shape() {
            let _ = reply.send(Err(e));
            return;
        }
        let Request::SubmitBatch(items) = request else {
            unreachable!("built as SubmitBatch above")
        };
        let mut valid = Vec::with_capacity(items.len());
        let mut rejected = Vec::new();
        for (index, item) in items.into_iter().enumerate() {
            match item.validate() {
                Ok(()) => valid.push(item),
                Err(e) => {
                    debug!(item = %item.id, error = %e, "invalid item");
                    rejected.push((index, e));
                }
            }
        }
        if valid.is_empty() {
            let _ = reply.send(Ok(merge(Vec::new(), rejected)));
            return;
        }
        let Some(store) = self.children.borrow().store.clone() else {
            let _ = reply.send(Err(store_unavailable()));
            return;
        };
        let write = StoreMsg::Write {
            items: valid,
            rejected,
            reply,
        };
        if let Err(MessagingErr::SendErr(StoreMsg::Write { reply, .. })) = store.cast(write) {
            let _ = reply.send(Err(store_unavailable()));
        }
    }
}

fn store_unavailable() -> ErrorCode {
    ErrorCode::Unavailable {
        reason: "store restarting".into(),
    }
}

impl Actor for IntakeActor {
    type Msg = IntakeMsg;
    type State = IntakeState;
    type Arguments = watch::Receiver<Children>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        children: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(IntakeState { children })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            IntakeMsg::Submit { items, reply } => state.submit(items, reply),
        }
        Ok(())
    }
}
