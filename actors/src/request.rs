//! The id of the client request a task serves, known to the write path without being
//! passed through every call: the node's server and link receiver run a request's work
//! under [`serve`], [`crate::NodeHandle`] reads it with [`current`] when it takes a
//! submission in, and the submission's writes carry it to the store, which hands it to
//! replication with their records (so a follower's log names the request too).

use std::future::Future;

tokio::task_local! {
    /// The id of the request the current task serves.
    static CURRENT: u64;
}

/// Runs `work` as the serving of request `id`.
pub async fn serve<F: Future>(id: u64, work: F) -> F::Output {
    CURRENT.scope(id, work).await
}

/// The id of the request the current task serves, if it serves one.
pub fn current() -> Option<u64> {
    CURRENT.try_with(|id| *id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_id_is_known_inside_the_serving_and_nowhere_else() {
        assert_eq!(current(), None);
        let inside = serve(77, async { current() }).await;
        assert_eq!(inside, Some(77));
        assert_eq!(current(), None);
    }
}
