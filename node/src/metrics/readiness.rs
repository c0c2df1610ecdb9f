//! Whether this node should be sent new clients: the answer of `/health/ready`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Shared readiness flags; clones share them. Reading is two atomic loads, so a probe
/// never waits on an actor.
#[derive(Clone, Debug)]
pub struct Readiness {
    flags: Arc<Flags>,
}

#[derive(Debug)]
struct Flags {
    /// Set once for good: a draining node never becomes ready again.
    draining: AtomicBool,
    store_available: AtomicBool,
    /// Set once for good: the store stopped taking writes until restart.
    store_failed: AtomicBool,
}

/// Why the node is not ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// Shutdown began; requests in flight are finishing.
    Draining,
    /// The store has not started yet, or its circuit breaker is open.
    StoreUnavailable,
    /// The store failed (a log write or sync) and takes no writes until the node is
    /// restarted; the log names the failure.
    StoreFailed,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NotReady::Draining => "draining: shutting down",
            NotReady::StoreUnavailable => "store unavailable",
            NotReady::StoreFailed => {
                "store failed: no writes until restart (the node's log says why)"
            }
        })
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// A node that is starting: not draining, store not yet available.
    pub fn new() -> Self {
        Readiness {
            flags: Arc::new(Flags {
                draining: AtomicBool::new(false),
                store_available: AtomicBool::new(false),
                store_failed: AtomicBool::new(false),
            }),
        }
    }

    /// Marks the node as draining, for good.
    pub fn set_draining(&self) {
        self.flags.draining.store(true, Ordering::Release);
    }

    /// Records whether the store can take writes (started, breaker closed).
    pub fn set_store_available(&self, available: bool) {
        self.flags
            .store_available
            .store(available, Ordering::Release);
    }

    /// Marks the store as failed, for good (until the process restarts).
    pub fn set_store_failed(&self) {
        self.flags.store_failed.store(true, Ordering::Release);
    }

    /// `Ok` when the node should get new clients; otherwise why not (draining first).
    pub fn check(&self) -> Result<(), NotReady> {
        if self.flags.draining.load(Ordering::Acquire) {
            Err(NotReady::Draining)
        } else if self.flags.store_failed.load(Ordering::Acquire) {
            Err(NotReady::StoreFailed)
        } else if !self.flags.store_available.load(Ordering::Acquire) {
            Err(NotReady::StoreUnavailable)
        } else {
            Ok(())
        }
    }

    /// Marks the node draining as soon as `shutdown` is cancelled, whoever cancels it.
    pub async fn drain_on(self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        self.set_draining();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_the_store_and_before_draining() {
        let r = Readiness::new();
        assert_eq!(r.check(), Err(NotReady::StoreUnavailable));
        r.set_store_available(true);
        assert_eq!(r.check(), Ok(()));
        r.set_store_available(false);
        assert_eq!(r.check(), Err(NotReady::StoreUnavailable));
        r.set_store_available(true);
        r.clone().set_draining();
        assert_eq!(r.check(), Err(NotReady::Draining));
        // Draining outranks the store: a node shutting down never reports ready again.
        r.set_store_available(true);
        assert_eq!(r.check(), Err(NotReady::Draining));
    }

    #[test]
    fn a_failed_store_is_not_ready_even_with_its_breaker_closed() {
        let r = Readiness::new();
        r.set_store_available(true);
        r.set_store_failed();
        assert_eq!(r.check(), Err(NotReady::StoreFailed));
        r.set_store_available(true);
        assert_eq!(r.check(), Err(NotReady::StoreFailed));
    }
}
