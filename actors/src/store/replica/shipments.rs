//! A follower's group commit: shipments that arrive while the append lock is held
//! queue here, and the next caller to take the lock writes every queued shipment (its
//! own among them), in the order they came, with one log append and one sync, then
//! answers each. Leaders that
//! keep several shipments in flight, and several leaders shipping to one follower,
//! thus share syncs instead of each waiting for its own in turn.
//!
//! The queue only hands work over; the caller holds the append lock while it takes
//! and answers jobs, so a caller that gets the lock after its job was taken finds the
//! answer already there.

use std::sync::{Arc, Mutex, MutexGuard};

/// One caller's shipment waiting to be written, then its answer.
pub(crate) struct Job<W, A> {
    work: Mutex<Option<W>>,
    answer: Mutex<Option<A>>,
    /// The shipment's size, for the cap on what one append takes.
    bytes: usize,
}

impl<W, A> Job<W, A> {
    /// Records the answer for the job's caller.
    pub(crate) fn answer(&self, answer: A) {
        *lock(&self.answer) = Some(answer);
    }

    /// The answer, if another caller wrote the job.
    pub(crate) fn take_answer(&self) -> Option<A> {
        lock(&self.answer).take()
    }
}

/// Shipments waiting for the append lock, oldest first.
pub(crate) struct Queue<W, A> {
    jobs: Mutex<Vec<Arc<Job<W, A>>>>,
    /// Most bytes one append takes; a job bigger than that still goes, alone.
    max_bytes: usize,
}

impl<W, A> Queue<W, A> {
    /// An empty queue whose groups carry at most `max_bytes` (beyond the taker's own).
    pub(crate) fn new(max_bytes: usize) -> Self {
        Queue {
            jobs: Mutex::new(Vec::new()),
            max_bytes,
        }
    }

    /// Queues a shipment of `bytes`; the caller then takes the append lock.
    pub(crate) fn push(&self, work: W, bytes: usize) -> Arc<Job<W, A>> {
        let job = Arc::new(Job {
            work: Mutex::new(Some(work)),
            answer: Mutex::new(None),
            bytes,
        });
        lock(&self.jobs).push(Arc::clone(&job));
        job
    }

    /// With the append lock held: the queued jobs in the order they came, `own`
    /// always among them and the others while the group stays within the byte cap.
    /// Jobs left stay queued for their own callers. Empty if `own` was taken already.
    pub(crate) fn take_group(&self, own: &Arc<Job<W, A>>) -> Vec<(Arc<Job<W, A>>, W)> {
        let mut jobs = lock(&self.jobs);
        if !jobs.iter().any(|j| Arc::ptr_eq(j, own)) {
            return Vec::new();
        }
        let mut bytes = own.bytes;
        let mut group = Vec::new();
        let mut left = Vec::new();
        for job in jobs.drain(..) {
            if Arc::ptr_eq(&job, own) {
                group.push(job);
            } else if bytes.saturating_add(job.bytes) <= self.max_bytes {
                bytes += job.bytes;
                group.push(job);
            } else {
                left.push(job);
            }
        }
        *jobs = left;
        drop(jobs);
        group
            .into_iter()
            .filter_map(|job| {
                let work = lock(&job.work).take()?;
                Some((job, work))
            })
            .collect()
    }

    /// Withdraws `own` if no other caller took it (the caller could not get the lock).
    pub(crate) fn withdraw(&self, own: &Arc<Job<W, A>>) {
        lock(&self.jobs).retain(|j| !Arc::ptr_eq(j, own));
    }

    /// Jobs waiting now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.jobs).len()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_the_jobs_in_the_order_they_came_with_the_takers_within_the_cap() {
        let queue: Queue<&str, ()> = Queue::new(10);
        let a = queue.push("a", 4);
        let b = queue.push("b", 4);
        let c = queue.push("c", 4);
        let d = queue.push("d", 1);
        let group: Vec<&str> = queue.take_group(&b).into_iter().map(|(_, w)| w).collect();
        // b (4) counts first; a (4) makes 8; c would make 12; d fits.
        assert_eq!(group, ["a", "b", "d"]);
        assert_eq!(queue.len(), 1);
        assert!(queue.take_group(&a).is_empty(), "a was taken with b");
        let group: Vec<&str> = queue.take_group(&c).into_iter().map(|(_, w)| w).collect();
        assert_eq!(group, ["c"]);
        let _ = d;
    }

    #[test]
    fn a_job_bigger_than_the_cap_goes_alone() {
        let queue: Queue<u8, ()> = Queue::new(10);
        let big = queue.push(1, 50);
        let _small = queue.push(2, 1);
        let group: Vec<u8> = queue.take_group(&big).into_iter().map(|(_, w)| w).collect();
        assert_eq!(group, [1]);
        assert_eq!(queue.len(), 1);
    }

    #[test]
    fn an_answer_reaches_the_job_it_was_given_to_once() {
        let queue: Queue<u8, &str> = Queue::new(10);
        let a = queue.push(1, 1);
        let b = queue.push(2, 1);
        for (job, _) in queue.take_group(&a) {
            job.answer("written");
        }
        assert_eq!(b.take_answer(), Some("written"));
        assert_eq!(b.take_answer(), None);
    }

    #[test]
    fn a_withdrawn_job_is_not_written_by_another() {
        let queue: Queue<u8, ()> = Queue::new(10);
        let a = queue.push(1, 1);
        let b = queue.push(2, 1);
        queue.withdraw(&a);
        let group: Vec<u8> = queue.take_group(&b).into_iter().map(|(_, w)| w).collect();
        assert_eq!(group, [2]);
    }
}
