//! Request ids: every request gets one at the first node it reaches, carried on the
//! request's tracing span there and on every node a forward of it reaches (links that
//! speak `chorus-link/2` carry it), and stamped on any `Internal` answer, so the id an
//! application reports from an error finds the request's lines in every node's log.

use std::future::Future;
use std::sync::Arc;

pub use chorus_actors::request::{current, serve};
use chorus_protocol::{ErrorCode, Response};

tokio::task_local! {
    /// The ids of the requests the current task works for together.
    static SEVERAL: Arc<[u64]>;
}

/// Runs `work` on behalf of several requests at once (a shipment of the records they
/// wrote): forwards it sends carry every id.
pub async fn serve_several<F: Future>(ids: Arc<[u64]>, work: F) -> F::Output {
    SEVERAL.scope(ids, work).await
}

/// The ids of the requests the current task serves: the one of [`serve`], those of
/// [`serve_several`], or none.
pub fn carried() -> Vec<u64> {
    match current() {
        Some(id) => vec![id],
        None => SEVERAL.try_with(|ids| ids.to_vec()).unwrap_or_default(),
    }
}

/// A fresh request id: random, never 0 (0 is what the write path puts in an `Internal`
/// error before the server stamps it).
pub fn mint() -> u64 {
    loop {
        let id = rand::random::<u64>();
        if id != 0 {
            return id;
        }
    }
}

/// Puts `id` into `error` if it is an unstamped `Internal` one; whether it was.
pub fn stamp_error(error: &mut ErrorCode, id: u64) -> bool {
    if let ErrorCode::Internal { request_id } = error
        && *request_id == 0
    {
        *request_id = id;
        return true;
    }
    false
}

/// Puts `id` into every unstamped `Internal` error of `result` (the whole answer's and a
/// batch's per-item ones); whether there was one.
pub fn stamp(result: &mut Result<Response, ErrorCode>, id: u64) -> bool {
    let mut stamped = false;
    let mut put = |error: &mut ErrorCode| stamped |= stamp_error(error, id);
    match result {
        Err(error) => put(error),
        Ok(Response::Batch(outcomes)) => outcomes
            .iter_mut()
            .filter_map(|o| o.as_mut().err())
            .for_each(put),
        Ok(_) => {}
    }
    stamped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_gets_the_id_and_others_are_left_alone() {
        let mut whole = Err(ErrorCode::Internal { request_id: 0 });
        assert!(stamp(&mut whole, 42));
        assert_eq!(whole, Err(ErrorCode::Internal { request_id: 42 }));
        // Already stamped (by the node that served a forward): kept.
        assert!(!stamp(&mut whole, 7));
        assert_eq!(whole, Err(ErrorCode::Internal { request_id: 42 }));
        let mut other = Err(ErrorCode::Timeout);
        assert!(!stamp(&mut other, 42));
        assert_eq!(other, Err(ErrorCode::Timeout));
    }

    #[test]
    fn a_batch_gets_the_id_on_each_internal_item() {
        let mut batch = Ok(Response::Batch(vec![
            Err(ErrorCode::Internal { request_id: 0 }),
            Err(ErrorCode::Timeout),
            Err(ErrorCode::Internal { request_id: 0 }),
        ]));
        assert!(stamp(&mut batch, 9));
        let Ok(Response::Batch(outcomes)) = batch else {
            panic!("still a batch");
        };
        assert_eq!(outcomes[0], Err(ErrorCode::Internal { request_id: 9 }));
        assert_eq!(outcomes[1], Err(ErrorCode::Timeout));
        assert_eq!(outcomes[2], Err(ErrorCode::Internal { request_id: 9 }));
    }

    #[tokio::test]
    async fn a_task_carries_the_ids_it_serves_and_no_others() {
        assert!(carried().is_empty());
        assert_eq!(serve(77, async { carried() }).await, [77]);
        let several: Arc<[u64]> = vec![3, 4].into();
        assert_eq!(serve_several(several, async { carried() }).await, [3, 4]);
        assert!(carried().is_empty());
    }

    #[test]
    fn minted_ids_are_never_zero_and_differ() {
        let ids: std::collections::BTreeSet<u64> = (0..1000).map(|_| mint()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(!ids.contains(&0));
    }
}
