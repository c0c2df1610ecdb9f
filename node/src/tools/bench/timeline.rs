//! What a scenario measured: per tier, per second of due time, per phase and over the
//! whole load window. A request is counted in the second (and the phase) it fell due,
//! so a late answer shows where the load that caused it was offered.

use std::collections::BTreeMap;
use std::time::Duration;

use chorus_client::Tier;
use hdrhistogram::{Counter, Histogram};

use super::stats::Percentiles;

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered successfully.
    Ok,
    /// Refused with `Overloaded` (or by the SDK's throttle, under `--client-throttle`).
    Refused,
    /// Any other failure, by kind.
    Error(String),
}

/// Counters of one tier over some stretch of due time.
#[derive(Clone, Debug)]
pub struct Counts<C: Counter> {
    /// Requests that fell due.
    pub offered: u64,
    /// Answered successfully.
    pub ok: u64,
    /// Answered successfully within the tier's budget.
    pub ok_in_budget: u64,
    /// Refused with `Overloaded`.
    pub refused: u64,
    /// Other failures, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latencies of the successful requests, microseconds from the due time.
    pub latency: Histogram<C>,
}

impl<C: Counter> Counts<C> {
    fn new(significant_digits: u8) -> Self {
        Counts {
            offered: 0,
            ok: 0,
            ok_in_budget: 0,
            refused: 0,
            errors: BTreeMap::new(),
            // 1 µs .. 10 min.
            latency: Histogram::new_with_bounds(1, 600_000_000, significant_digits)
                .expect("valid histogram bounds"),
        }
    }

    fn answer(&mut self, latency: Duration, budget: Duration, outcome: &Outcome) {
        match outcome {
            Outcome::Ok => {
                self.ok += 1;
                if latency <= budget {
                    self.ok_in_budget += 1;
                }
                self.latency
                    .saturating_record((latency.as_micros() as u64).max(1));
            }
            Outcome::Refused => self.refused += 1,
            Outcome::Error(kind) => *self.errors.entry(kind.clone()).or_insert(0) += 1,
        }
    }

    /// Failures other than `Overloaded`.
    pub fn other_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Requests that fell due and have no answer yet.
    pub fn pending(&self) -> u64 {
        self.offered
            .saturating_sub(self.ok + self.refused + self.other_errors())
    }

    /// The p99 of the successful requests in milliseconds, if there were any.
    pub fn p99_ms(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.latency.value_at_quantile(0.99) as f64 / 1000.0)
    }

    /// Latency percentiles of the successful requests, milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.latency)
    }
}

/// Per-tier counters with fine histograms (phases, the whole window).
pub type Window = [Counts<u64>; 4];
/// Per-tier counters with coarse histograms (one second: there are many).
pub type Second = [Counts<u32>; 4];

fn window() -> Window {
    std::array::from_fn(|_| Counts::new(3))
}

fn second() -> Second {
    // Two significant digits: a p99 to 1 %, at a tenth of the memory of three.
    std::array::from_fn(|_| Counts::new(2))
}

/// Everything a scenario run measured.
#[derive(Debug)]
pub struct Timeline {
    budgets: [Duration; 4],
    phase_starts: Vec<Duration>,
    /// Per second of due time.
    pub seconds: Vec<Second>,
    /// The node's resident memory in each second, KiB, where sampled.
    pub rss_kib: Vec<Option<u64>>,
    /// Per phase.
    pub phases: Vec<Window>,
    /// Over the whole load window.
    pub total: Window,
    /// When the last answer came, from the start of the load.
    pub last_answer: Duration,
    /// How late each request was sent after it fell due, microseconds: a generator
    /// that cannot keep up measures the machine it runs on as much as the node.
    pub send_lag: Histogram<u64>,
    /// The longest send lag in each second of due time.
    pub send_lag_max: Vec<Duration>,
    /// When the last request was sent, from the start of the load.
    pub last_sent: Duration,
}

impl Timeline {
    /// An empty timeline for phases starting at `phase_starts`, judging each tier
    /// (indexed like `Tier::ALL`) against `budgets`.
    pub fn new(budgets: [Duration; 4], phase_starts: Vec<Duration>) -> Self {
        Timeline {
            budgets,
            phases: phase_starts.iter().map(|_| window()).collect(),
            phase_starts,
            seconds: Vec::new(),
            rss_kib: Vec::new(),
            total: window(),
            last_answer: Duration::ZERO,
            send_lag: Histogram::new_with_bounds(1, 600_000_000, 2)
                .expect("valid histogram bounds"),
            send_lag_max: Vec::new(),
            last_sent: Duration::ZERO,
        }
    }

    /// The latency budget of `tier`.
    pub fn budget(&self, tier: Tier) -> Duration {
        self.budgets[tier as usize]
    }

    fn phase_of(&self, due: Duration) -> usize {
        self.phase_starts
            .iter()
            .rposition(|start| *start <= due)
            .unwrap_or(0)
    }

    fn second_mut(&mut self, due: Duration) -> &mut Second {
        let s = due.as_secs() as usize;
        while self.seconds.len() <= s {
            self.seconds.push(second());
        }
        &mut self.seconds[s]
    }

    /// A request of `tier` fell due at `due` and was sent at `sent` (both from the start
    /// of the load).
    pub fn offered(&mut self, tier: Tier, due: Duration, sent: Duration) {
        let t = tier as usize;
        let lag = sent.saturating_sub(due);
        self.send_lag
            .saturating_record((lag.as_micros() as u64).max(1));
        let s = due.as_secs() as usize;
        if self.send_lag_max.len() <= s {
            self.send_lag_max.resize(s + 1, Duration::ZERO);
        }
        self.send_lag_max[s] = self.send_lag_max[s].max(lag);
        self.last_sent = self.last_sent.max(sent);
        let phase = self.phase_of(due);
        self.second_mut(due)[t].offered += 1;
        self.phases[phase][t].offered += 1;
        self.total[t].offered += 1;
    }

    /// The request of `tier` due at `due` was answered at `answered` with `outcome`.
    pub fn answered(&mut self, tier: Tier, due: Duration, answered: Duration, outcome: &Outcome) {
        let t = tier as usize;
        let budget = self.budgets[t];
        let latency = answered.saturating_sub(due);
        let phase = self.phase_of(due);
        self.second_mut(due)[t].answer(latency, budget, outcome);
        self.phases[phase][t].answer(latency, budget, outcome);
        self.total[t].answer(latency, budget, outcome);
        self.last_answer = self.last_answer.max(answered);
    }

    /// The node's resident memory at second `s`.
    pub fn rss(&mut self, s: usize, kib: u64) {
        if self.rss_kib.len() <= s {
            self.rss_kib.resize(s + 1, None);
        }
        self.rss_kib[s] = Some(kib);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn budgets() -> [Duration; 4] {
        [ms(100), ms(1_000), ms(10_000), ms(60_000)]
    }

    #[test]
    fn a_request_counts_in_the_second_and_phase_it_fell_due() {
        let mut t = Timeline::new(budgets(), vec![ms(0), ms(2_000)]);
        t.offered(Tier::Realtime, ms(1_999), ms(1_999));
        // Answered in the next second and phase: still counted where it fell due.
        t.answered(Tier::Realtime, ms(1_999), ms(2_050), &Outcome::Ok);
        t.offered(Tier::Batch, ms(2_000), ms(2_000));
        t.answered(Tier::Batch, ms(2_000), ms(2_001), &Outcome::Refused);
        t.offered(Tier::Batch, ms(3_500), ms(3_500));
        let r = Tier::Realtime as usize;
        let b = Tier::Batch as usize;
        assert_eq!(t.seconds.len(), 4);
        assert_eq!(t.seconds[1][r].ok, 1);
        assert_eq!(t.seconds[2][r].ok, 0);
        assert_eq!(t.seconds[2][b].refused, 1);
        assert_eq!(t.seconds[3][b].pending(), 1);
        assert_eq!(t.phases[0][r].ok, 1);
        assert_eq!(t.phases[1][b].offered, 2);
        assert_eq!(t.total[b].pending(), 1);
        assert_eq!(t.last_answer, ms(2_050));
        assert_eq!(t.last_sent, ms(3_500));
        assert_eq!(t.send_lag_max, [ms(0); 4]);
    }

    #[test]
    fn only_answers_within_the_budget_count_as_good() {
        let mut t = Timeline::new(budgets(), vec![ms(0)]);
        let r = Tier::Realtime;
        for (due, answered) in [(0, 100), (0, 101), (10, 50)] {
            t.offered(r, ms(due), ms(due));
            t.answered(r, ms(due), ms(answered), &Outcome::Ok);
        }
        t.offered(r, ms(20), ms(20));
        t.answered(r, ms(20), ms(30), &Outcome::Error("timeout".into()));
        let c = &t.total[r as usize];
        assert_eq!((c.ok, c.ok_in_budget, c.other_errors()), (3, 2, 1));
        assert_eq!(c.pending(), 0);
        let p99 = c.p99_ms().unwrap();
        assert!((100.0..=102.0).contains(&p99), "{p99}");
        assert_eq!(t.total[Tier::Batch as usize].p99_ms(), None);
    }

    #[test]
    fn a_late_send_is_charged_to_the_second_it_fell_due() {
        let mut t = Timeline::new(budgets(), vec![ms(0)]);
        t.offered(Tier::Standard, ms(1_900), ms(2_400));
        t.offered(Tier::Standard, ms(1_950), ms(2_000));
        assert_eq!(t.send_lag_max, [ms(0), ms(500)]);
        assert_eq!(t.last_sent, ms(2_400));
        assert!(t.send_lag.equivalent(t.send_lag.max(), 500_000));
    }

    #[test]
    fn memory_samples_land_in_their_second() {
        let mut t = Timeline::new(budgets(), vec![ms(0)]);
        t.rss(2, 1024);
        assert_eq!(t.rss_kib, [None, None, Some(1024)]);
    }
}
