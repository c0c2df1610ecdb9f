//! Scenarios as a rate over time, in multiples of the saturation rate, and the due times
//! of an open loop that follows such a rate.

use std::time::Duration;

use serde::Serialize;

/// A named load scenario of `chorus bench --scenario`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// 1× the saturation rate for `--duration`.
    Baseline,
    /// 1.5× the saturation rate for `--duration`.
    #[value(name = "150")]
    #[serde(rename = "150")]
    OneFifty,
    /// Steps of 0.5× to 6× until the node stops serving within its budgets.
    Stress,
    /// 1×, then 5×, then 1× again; how long the latencies take to recover.
    Spike,
    /// 1.5× for ten minutes; errors and memory at the start and the end.
    Soak,
    /// `--multiple` × the saturation rate for `--duration`.
    Overload,
}

impl Scenario {
    /// The name on the command line and in the JSON summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::OneFifty => "150",
            Scenario::Stress => "stress",
            Scenario::Spike => "spike",
            Scenario::Soak => "soak",
            Scenario::Overload => "overload",
        }
    }
}

/// The stress ramp, in multiples of the saturation rate.
pub const STRESS_STEPS: [f64; 8] = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0];

/// The lengths and multiples a scenario is built from.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioParams {
    /// The load window of the single-phase scenarios (baseline, 150, soak, overload).
    pub duration: Duration,
    /// The multiple of the overload scenario.
    pub multiple: f64,
    /// The length of one stress step.
    pub step: Duration,
    /// The spike's lengths: before, during, after.
    pub spike: [Duration; 3],
    /// The multiple during the spike.
    pub spike_multiple: f64,
}

/// One stretch of constant rate.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Phase {
    /// What the phase is called in tables and on the plot.
    pub name: String,
    /// The rate as a multiple of the saturation rate.
    pub multiple: f64,
    /// How long it lasts.
    #[serde(serialize_with = "seconds")]
    pub length: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A rate over time: phases one after the other from offset zero.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// The phases in order.
    pub phases: Vec<Phase>,
}

impl Profile {
    /// The profile of `scenario`.
    pub fn of(scenario: Scenario, p: &ScenarioParams) -> Profile {
        let phase = |multiple: f64, length: Duration, name: Option<&str>| Phase {
            name: name.map_or_else(|| format!("{multiple}x"), str::to_owned),
            multiple,
            length,
        };
        let phases = match scenario {
            Scenario::Baseline => vec![phase(1.0, p.duration, None)],
            Scenario::OneFifty | Scenario::Soak => vec![phase(1.5, p.duration, None)],
            Scenario::Overload => vec![phase(p.multiple, p.duration, None)],
            Scenario::Stress => STRESS_STEPS
                .iter()
                .map(|&m| phase(m, p.step, None))
                .collect(),
            Scenario::Spike => vec![
                phase(1.0, p.spike[0], Some("before")),
                phase(p.spike_multiple, p.spike[1], Some("spike")),
                phase(1.0, p.spike[2], Some("after")),
            ],
        };
        Profile { phases }
    }

    /// The whole load window.
    pub fn length(&self) -> Duration {
        self.phases.iter().map(|p| p.length).sum()
    }

    /// When each phase starts.
    pub fn starts(&self) -> Vec<Duration> {
        let mut at = Duration::ZERO;
        self.phases
            .iter()
            .map(|p| {
                let start = at;
                at += p.length;
                start
            })
            .collect()
    }

    /// The phase that `t` falls in; the last one for `t` at or past the end.
    pub fn phase_at(&self, t: Duration) -> usize {
        let mut end = Duration::ZERO;
        for (i, p) in self.phases.iter().enumerate() {
            end += p.length;
            if t < end {
                return i;
            }
        }
        self.phases.len().saturating_sub(1)
    }

    /// The due times of a generator sending `rate` × each phase's multiple requests per
    /// second.
    pub fn schedule(&self, rate: f64) -> Schedule {
        let mut segments = Vec::with_capacity(self.phases.len());
        let (mut start, mut count) = (0.0, 0.0);
        for p in &self.phases {
            let len = p.length.as_secs_f64();
            let r = (rate * p.multiple).max(0.0);
            segments.push(Segment {
                start,
                end: start + len,
                rate: r,
                count_before: count,
            });
            start += len;
            count += r * len;
        }
        Schedule {
            segments,
            current: 0,
            k: 0,
        }
    }
}

/// A stretch of constant rate, with how many requests fell due before it.
#[derive(Clone, Debug)]
struct Segment {
    start: f64,
    end: f64,
    rate: f64,
    count_before: f64,
}

/// Due times of an open loop: request `k` (from 0) falls due when the integral of the
/// rate reaches `k`, so the count offered follows the rate however it changes and does
/// not drift with the generator's own delays.
#[derive(Clone, Debug)]
pub struct Schedule {
    segments: Vec<Segment>,
    current: usize,
    k: u64,
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let k = self.k as f64;
        while let Some(s) = self.segments.get(self.current) {
            if s.rate > 0.0 && k < s.count_before + s.rate * (s.end - s.start) {
                let t = (s.start + (k - s.count_before) / s.rate).clamp(s.start, s.end);
                self.k += 1;
                return Some(Duration::from_secs_f64(t));
            }
            self.current += 1;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn params() -> ScenarioParams {
        ScenarioParams {
            duration: Duration::from_secs(60),
            multiple: 3.0,
            step: Duration::from_secs(10),
            spike: [
                Duration::from_secs(30),
                Duration::from_secs(20),
                Duration::from_secs(40),
            ],
            spike_multiple: 5.0,
        }
    }

    #[test]
    fn scenarios_have_their_multiples_and_lengths() {
        let p = params();
        let multiples = |s| {
            Profile::of(s, &p)
                .phases
                .iter()
                .map(|ph| ph.multiple)
                .collect::<Vec<_>>()
        };
        assert_eq!(multiples(Scenario::Baseline), [1.0]);
        assert_eq!(multiples(Scenario::OneFifty), [1.5]);
        assert_eq!(multiples(Scenario::Overload), [3.0]);
        assert_eq!(multiples(Scenario::Stress), STRESS_STEPS);
        assert_eq!(multiples(Scenario::Spike), [1.0, 5.0, 1.0]);
        let spike = Profile::of(Scenario::Spike, &p);
        assert_eq!(spike.length(), Duration::from_secs(90));
        assert_eq!(
            spike.starts(),
            [0, 30, 50].map(Duration::from_secs).to_vec()
        );
        assert_eq!(spike.phase_at(Duration::from_secs(49)), 1);
        assert_eq!(spike.phase_at(Duration::from_secs(50)), 2);
        assert_eq!(spike.phase_at(Duration::from_secs(500)), 2);
        assert_eq!(
            Profile::of(Scenario::Stress, &p).length(),
            Duration::from_secs(80)
        );
    }

    #[test]
    fn a_constant_rate_is_evenly_spaced_from_zero() {
        let profile = Profile::of(Scenario::Baseline, &params());
        let dues: Vec<Duration> = profile.schedule(10.0).collect();
        assert_eq!(dues.len(), 600);
        assert_eq!(dues[0], Duration::ZERO);
        assert_eq!(dues[1], Duration::from_millis(100));
        assert_eq!(dues[599], Duration::from_secs_f64(59.9));
    }

    #[test]
    fn the_rate_follows_each_phase() {
        let profile = Profile::of(Scenario::Spike, &params());
        let dues: Vec<Duration> = profile.schedule(100.0).collect();
        let between = |a: u64, b: u64| {
            dues.iter()
                .filter(|d| **d >= Duration::from_secs(a) && **d < Duration::from_secs(b))
                .count()
        };
        assert_eq!(between(0, 30), 3_000);
        assert_eq!(between(30, 50), 10_000);
        assert_eq!(between(50, 90), 4_000);
        assert_eq!(dues.len(), 17_000);
    }

    proptest! {
        #[test]
        fn due_times_follow_the_integral_of_the_rate(
            phases in prop::collection::vec((0.0f64..8.0, 0u64..20_000), 1..6),
            rate in 0.5f64..300.0,
        ) {
            let profile = Profile {
                phases: phases
                    .iter()
                    .map(|&(multiple, ms)| Phase {
                        name: String::new(),
                        multiple,
                        length: Duration::from_millis(ms),
                    })
                    .collect(),
            };
            let dues: Vec<Duration> = profile.schedule(rate).collect();
            prop_assert!(dues.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(dues.iter().all(|d| *d <= profile.length()));
            let integral: f64 = profile
                .phases
                .iter()
                .map(|p| rate * p.multiple * p.length.as_secs_f64())
                .sum();
            prop_assert!((dues.len() as f64 - integral).abs() <= 1.0 + 1e-6);
            for (p, start) in profile.phases.iter().zip(profile.starts()) {
                let end = start + p.length;
                let n = dues.iter().filter(|d| **d >= start && **d < end).count() as f64;
                let expected = rate * p.multiple * p.length.as_secs_f64();
                prop_assert!((n - expected).abs() <= 1.0 + 1e-6, "{n} vs {expected}");
            }
        }
    }
}
