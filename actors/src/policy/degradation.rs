//! Graceful degradation: from a load signal (how far the critical tiers are into their
//! latency budgets) pick a level that decides which tiers are admitted and whether
//! optional work runs.
//!
//! The signal is measured in time, as the queues are bounded: a queue's count or the
//! CPU's use says the node is busy, not that anyone is served late. With each tier
//! refused at its door past its budget, a node at full CPU with every tier inside its
//! budget is working at capacity, and shedding whole tiers then only lowers goodput
//! (simulations/README.md, `overload`). What degradation protects is the critical tiers' budgets, so their
//! expected wait is the signal; CPU use is reported with every change.
//!
//! Stepping up is immediate, because overload gets worse by waiting. Stepping down needs
//! hysteresis in both load and time: the load must stay below the level's threshold
//! minus `hysteresis` for `dwell`, and then the level drops one step only (the next
//! step needs another `dwell`). So every automatic step down is at least `dwell` after
//! the previous change, and a load oscillating around a threshold changes the level at
//! most once per `dwell` in the down direction. Every change comes back as a
//! [`LevelChange`] so the driver logs and counts it.

use std::time::{Duration, Instant};

use chorus_protocol::Tier;
use thiserror::Error;

/// Default load at which optional work and the batch tier are shed (80 %).
pub const DEFAULT_SHED_OPTIONAL_AT: f64 = 0.80;
/// Default load at which only realtime and priority are admitted (95 %).
pub const DEFAULT_CRITICAL_ONLY_AT: f64 = 0.95;
/// Default hysteresis band: step down only below threshold − 10 points.
pub const DEFAULT_HYSTERESIS: f64 = 0.10;
/// Default time the load must stay low before each step down.
pub const DEFAULT_DWELL: Duration = Duration::from_secs(5);

/// How much the node sheds, least first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Everything admitted, optional work runs.
    #[default]
    Normal,
    /// The batch tier and optional work (enrichment, aggregates) are shed.
    ShedOptional,
    /// Only realtime and priority are admitted; no optional work.
    CriticalOnly,
}

impl Level {
    /// Every level, least shedding first.
    pub const ALL: [Level; 3] = [Level::Normal, Level::ShedOptional, Level::CriticalOnly];

    /// Whether a new item of `tier` is admitted at this level; realtime always is.
    pub fn admits(self, tier: Tier) -> bool {
        match self {
            Level::Normal => true,
            Level::ShedOptional => tier != Tier::Batch,
            Level::CriticalOnly => matches!(tier, Tier::Realtime | Tier::Priority),
        }
    }

    /// Whether optional work (enrichment, aggregates) runs at this level.
    pub fn admits_optional_work(self) -> bool {
        self == Level::Normal
    }

    /// The lowercase name used in logs, metrics and `chorus ctl degrade`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::ShedOptional => "shed_optional",
            Level::CriticalOnly => "critical_only",
        }
    }

    /// One step less shedding, or `None` at `Normal`.
    fn lower(self) -> Option<Level> {
        match self {
            Level::Normal => None,
            Level::ShedOptional => Some(Level::Normal),
            Level::CriticalOnly => Some(Level::ShedOptional),
        }
    }
}

/// One measurement of how busy the node is (see `TierStage::load`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// How far the tiers the last level keeps (realtime, priority) are into their latency
    /// budgets: the larger of their expected waits over their budgets, 0.0..=1.0.
    pub critical_wait: f64,
    /// CPU utilisation of the node, 0.0..=1.0: logged with each change, not a signal.
    pub cpu: f64,
}

impl Load {
    /// The load signal under `config`: the critical tiers' wait, clamped to 0.0..=1.0. A
    /// NaN (a sensor that failed) counts as no load rather than trusted either way.
    pub fn signal(self, _config: &DegradationConfig) -> f64 {
        if self.critical_wait.is_nan() {
            0.0
        } else {
            self.critical_wait.clamp(0.0, 1.0)
        }
    }
}

/// Thresholds and hysteresis of the degradation policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DegradationConfig {
    /// Load (fraction, 0.0..=1.0) at or above which the level is at least
    /// `ShedOptional`; default 0.80.
    pub shed_optional_at: f64,
    /// Load (fraction) at or above which the level is `CriticalOnly`; above
    /// `shed_optional_at`, at most 1.0; default 0.95.
    pub critical_only_at: f64,
    /// How far (fraction points) below a level's threshold the load must fall before the
    /// level steps down; 0.0 <= hysteresis < `shed_optional_at`; default 0.10.
    pub hysteresis: f64,
    /// How long the load must stay below that before each one-level step down; default
    /// 5 s.
    pub dwell: Duration,
}

impl Default for DegradationConfig {
    /// 80 % and 95 %, 10 points of hysteresis, 5 s dwell.
    fn default() -> Self {
        DegradationConfig {
            shed_optional_at: DEFAULT_SHED_OPTIONAL_AT,
            critical_only_at: DEFAULT_CRITICAL_ONLY_AT,
            hysteresis: DEFAULT_HYSTERESIS,
            dwell: DEFAULT_DWELL,
        }
    }
}

impl DegradationConfig {
    /// Checks the ranges and ordering of the thresholds; run once at start.
    pub fn validate(&self) -> Result<(), DegradationConfigError> {
        let in_range = |x: f64, lo: f64, hi: f64| x.is_finite() && lo <= x && x <= hi;
        if !in_range(self.shed_optional_at, f64::MIN_POSITIVE, 1.0) {
            return Err(DegradationConfigError::ShedOptionalAt(
                self.shed_optional_at,
            ));
        }
        if !in_range(self.critical_only_at, self.shed_optional_at, 1.0)
            || self.critical_only_at == self.shed_optional_at
        {
            return Err(DegradationConfigError::CriticalOnlyAt(
                self.critical_only_at,
            ));
        }
        if !in_range(self.hysteresis, 0.0, self.shed_optional_at)
            || self.hysteresis == self.shed_optional_at
        {
            return Err(DegradationConfigError::Hysteresis(self.hysteresis));
        }
        Ok(())
    }

    /// The level the load alone calls for (no hysteresis).
    fn level_for(&self, signal: f64) -> Level {
        if signal >= self.critical_only_at {
            Level::CriticalOnly
        } else if signal >= self.shed_optional_at {
            Level::ShedOptional
        } else {
            Level::Normal
        }
    }

    /// The load below which `level` may step down (after `dwell`).
    fn step_down_below(&self, level: Level) -> f64 {
        match level {
            Level::Normal => f64::NEG_INFINITY,
            Level::ShedOptional => self.shed_optional_at - self.hysteresis,
            Level::CriticalOnly => self.critical_only_at - self.hysteresis,
        }
    }
}

/// A degradation config that must not be used; nothing was built from it.
#[derive(Clone, Copy, Debug, Error, PartialEq)]
pub enum DegradationConfigError {
    /// Not a fraction in (0.0, 1.0].
    #[error("degradation.shed_optional_at is {0}; it must be in (0.0, 1.0]")]
    ShedOptionalAt(f64),
    /// Not above `shed_optional_at`, or above 1.0.
    #[error("degradation.critical_only_at is {0}; it must be above shed_optional_at, at most 1.0")]
    CriticalOnlyAt(f64),
    /// Negative, or so large that the level could never step down.
    #[error("degradation.hysteresis is {0}; it must be in [0.0, shed_optional_at)")]
    Hysteresis(f64),
}

/// The level changed; the driver logs and counts every one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LevelChange {
    /// The level before.
    pub from: Level,
    /// The level now.
    pub to: Level,
}

/// The degradation level of one node, driven by load observations or set by hand.
#[derive(Clone, Debug)]
pub struct DegradationPolicy {
    config: DegradationConfig,
    level: Level,
    /// Set by `chorus ctl degrade`: observations no longer move the level.
    manual: bool,
    /// Since when the load has stayed below the current level's step-down threshold;
    /// reset on every change so a step down always follows the last change by `dwell`.
    calm_since: Option<Instant>,
}

impl DegradationPolicy {
    /// A policy at `Normal`, in automatic mode, for a validated `config`.
    pub fn new(config: DegradationConfig) -> Result<Self, DegradationConfigError> {
        config.validate()?;
        Ok(DegradationPolicy {
            config,
            level: Level::Normal,
            manual: false,
            calm_since: None,
        })
    }

    /// The config it runs with.
    pub fn config(&self) -> &DegradationConfig {
        &self.config
    }

    /// Takes `config` from now on; the level in force stays until observations (or an
    /// operator) move it. An invalid `config` changes nothing.
    pub fn reconfigure(&mut self, config: DegradationConfig) -> Result<(), DegradationConfigError> {
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The current level.
    pub fn level(&self) -> Level {
        self.level
    }

    /// Whether the level is pinned by [`set`](Self::set).
    pub fn is_manual(&self) -> bool {
        self.manual
    }

    /// Whether a new item of `tier` is admitted now; realtime always is.
    pub fn admits(&self, tier: Tier) -> bool {
        self.level.admits(tier)
    }

    /// Whether optional work (enrichment, aggregates) runs now.
    pub fn admits_optional_work(&self) -> bool {
        self.level.admits_optional_work()
    }

    /// Feed one load measurement taken at `now`; returns the change if the level moved.
    /// In manual mode the level does not move.
    pub fn observe(&mut self, now: Instant, load: Load) -> Option<LevelChange> {
        if self.manual {
            return None;
        }
        let signal = load.signal(&self.config);
        let wanted = self.config.level_for(signal);
        if wanted > self.level {
            self.calm_since = None;
            return self.change_to(wanted);
        }
        let lower = self.level.lower()?;
        if signal >= self.config.step_down_below(self.level) {
            self.calm_since = None;
            return None;
        }
        let since = *self.calm_since.get_or_insert(now);
        if now.saturating_duration_since(since) < self.config.dwell {
            return None;
        }
        // Stepped down at `now`: the next step needs its own full dwell from here.
        self.calm_since = (signal < self.config.step_down_below(lower)).then_some(now);
        self.change_to(lower)
    }

    /// Pin the level (manual override, `chorus ctl degrade <level>`); returns the change
    /// if it differs from the current level.
    pub fn set(&mut self, level: Level) -> Option<LevelChange> {
        self.manual = true;
        self.calm_since = None;
        self.change_to(level)
    }

    /// Back to automatic mode. The level stays where it is until observations move it:
    /// up at once if the load calls for it, down only after a full `dwell`.
    pub fn auto(&mut self) {
        self.manual = false;
        self.calm_since = None;
    }

    fn change_to(&mut self, to: Level) -> Option<LevelChange> {
        let from = std::mem::replace(&mut self.level, to);
        (from != to).then_some(LevelChange { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn load(x: f64) -> Load {
        Load {
            critical_wait: x,
            cpu: 0.0,
        }
    }

    fn policy() -> DegradationPolicy {
        DegradationPolicy::new(DegradationConfig::default()).unwrap()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    use Level::{CriticalOnly as C, Normal as N, ShedOptional as S};

    /// Runs `(seconds after t0, load, expected level)` rows through a fresh policy.
    fn run_table(rows: &[(f64, f64, Level)]) {
        let mut p = policy();
        let t0 = Instant::now();
        for (i, &(at, l, want)) in rows.iter().enumerate() {
            let before = p.level();
            let change = p.observe(t0 + secs(at), load(l));
            assert_eq!(p.level(), want, "row {i}: t={at} load={l}");
            let expected_change = (before != want).then_some(LevelChange {
                from: before,
                to: want,
            });
            assert_eq!(change, expected_change, "row {i}: change reported");
        }
    }

    #[test]
    fn steps_up_immediately_by_threshold() {
        run_table(&[
            (0.0, 0.10, N),
            (0.1, 0.79, N),
            (0.2, 0.80, S),
            (0.3, 0.94, S),
            (0.4, 0.95, C),
        ]);
        // A spike jumps straight to the top.
        run_table(&[(0.0, 0.5, N), (0.1, 1.0, C)]);
    }

    #[test]
    fn steps_down_one_level_per_dwell_below_threshold_minus_hysteresis() {
        run_table(&[
            (0.0, 0.99, C),
            (1.0, 0.30, C),  // calm from here
            (5.9, 0.30, C),  // 4.9 s calm
            (6.0, 0.30, S),  // 5 s calm: one step only
            (10.9, 0.30, S), // the next step needs its own dwell
            (11.0, 0.30, N),
        ]);
    }

    #[test]
    fn load_inside_the_hysteresis_band_holds_the_level() {
        run_table(&[
            (0.0, 0.96, C),
            (1.0, 0.86, C), // below 95 % but not below 85 %
            (100.0, 0.86, C),
            (101.0, 0.84, C),
            (106.0, 0.84, S),
            (107.0, 0.75, S), // below 80 % but not below 70 %
            (200.0, 0.71, S),
            (201.0, 0.69, S),
            (206.0, 0.69, N),
        ]);
    }

    #[test]
    fn a_blip_above_the_band_restarts_the_dwell() {
        run_table(&[
            (0.0, 0.85, S),
            (1.0, 0.50, S),
            (4.0, 0.72, S), // back above 70 %: calm period resets
            (5.0, 0.50, S),
            (9.0, 0.50, S), // only 4 s since the reset
            (10.0, 0.50, N),
        ]);
    }

    #[test]
    fn step_up_resets_the_dwell() {
        run_table(&[
            (0.0, 0.85, S),
            (1.0, 0.10, S),
            (5.0, 0.97, C), // calm was 4 s; the step up starts over
            (5.5, 0.10, C),
            (10.0, 0.10, C),
            (10.5, 0.10, S),
        ]);
    }

    #[test]
    fn the_signal_is_the_critical_wait_clamped_and_cpu_never_moves_the_level() {
        let config = DegradationConfig::default();
        // (critical wait, cpu, signal)
        let cases = [
            (0.2, 0.9, 0.2),
            (0.9, 0.2, 0.9),
            (1.7, 0.0, 1.0),
            (-0.5, 0.3, 0.0),
            (f64::NAN, 0.6, 0.0),
            (f64::NAN, f64::NAN, 0.0),
        ];
        for (critical_wait, cpu, want) in cases {
            let load = Load { critical_wait, cpu };
            assert_eq!(load.signal(&config), want, "{load:?}");
        }
        let (mut p, t0) = (policy(), Instant::now());
        let busy = Load {
            critical_wait: 0.1,
            cpu: 1.0,
        };
        assert_eq!(p.observe(t0, busy), None);
        assert_eq!(p.observe(t0 + secs(60.0), busy), None);
        assert_eq!(p.level(), N);
    }

    #[test]
    fn admission_by_level() {
        let t = [Tier::Realtime, Tier::Priority, Tier::Standard, Tier::Batch];
        let table = [
            (N, [true, true, true, true], true),
            (S, [true, true, true, false], false),
            (C, [true, true, false, false], false),
        ];
        for (level, tiers, optional) in table {
            let admitted: Vec<bool> = t.iter().map(|&tier| level.admits(tier)).collect();
            assert_eq!(admitted, tiers, "{level:?}");
            assert_eq!(level.admits_optional_work(), optional, "{level:?}");
        }
    }

    #[test]
    fn manual_override_pins_the_level_until_auto() {
        let mut p = policy();
        let t0 = Instant::now();
        assert_eq!(p.set(C), Some(LevelChange { from: N, to: C }));
        assert_eq!(p.set(C), None);
        assert!(p.is_manual());
        assert_eq!(p.observe(t0 + secs(60.0), load(0.0)), None);
        assert_eq!(p.level(), C);
        p.auto();
        assert!(!p.is_manual());
        // Back in auto the level steps down only after a full dwell from here on.
        assert_eq!(p.observe(t0 + secs(61.0), load(0.0)), None);
        assert_eq!(
            p.observe(t0 + secs(66.0), load(0.0)),
            Some(LevelChange { from: C, to: S })
        );
        // A manual lower level is kept even under overload.
        assert_eq!(p.set(N), Some(LevelChange { from: S, to: N }));
        assert_eq!(p.observe(t0 + secs(67.0), load(1.0)), None);
        assert!(p.admits(Tier::Batch));
        p.auto();
        assert_eq!(
            p.observe(t0 + secs(67.0), load(1.0)),
            Some(LevelChange { from: N, to: C })
        );
    }

    #[test]
    fn validate_names_the_bad_field() {
        let d = DegradationConfig::default();
        let cases = [
            (
                DegradationConfig {
                    shed_optional_at: 0.0,
                    ..d
                },
                "degradation.shed_optional_at",
            ),
            (
                DegradationConfig {
                    shed_optional_at: f64::NAN,
                    ..d
                },
                "degradation.shed_optional_at",
            ),
            (
                DegradationConfig {
                    critical_only_at: 0.80,
                    ..d
                },
                "degradation.critical_only_at",
            ),
            (
                DegradationConfig {
                    critical_only_at: 1.01,
                    ..d
                },
                "degradation.critical_only_at",
            ),
            (
                DegradationConfig {
                    hysteresis: -0.01,
                    ..d
                },
                "degradation.hysteresis",
            ),
            (
                DegradationConfig {
                    hysteresis: 0.80,
                    ..d
                },
                "degradation.hysteresis",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert!(
                err.to_string().starts_with(field),
                "{err} should name {field}"
            );
            assert!(DegradationPolicy::new(config).is_err());
        }
        assert_eq!(d.validate(), Ok(()));
    }

    /// Loads that straddle the thresholds and band edges, plus anything.
    fn any_load() -> impl Strategy<Value = f64> {
        prop_oneof![
            prop::sample::select(vec![
                0.0, 0.69, 0.70, 0.79, 0.80, 0.84, 0.85, 0.94, 0.95, 1.0
            ]),
            0.0..=1.0f64,
        ]
    }

    /// Observation gaps from zero (several observations at one instant) to past a dwell.
    fn gap() -> impl Strategy<Value = Duration> {
        (0u64..7_000).prop_map(Duration::from_millis)
    }

    proptest! {
        /// After any history, a constant load moves the level in one direction only,
        /// and a higher constant load never yields a lower level at any time.
        #[test]
        fn level_is_monotone_under_constant_load(
            history in proptest::collection::vec((gap(), any_load()), 0..20),
            lo in any_load(),
            hi in any_load(),
            gaps in proptest::collection::vec(gap(), 1..40),
        ) {
            let (lo, hi) = if lo <= hi { (lo, hi) } else { (hi, lo) };
            let t0 = Instant::now();
            let mut now = t0;
            let mut p = policy();
            for (g, l) in history {
                now += g;
                p.observe(now, load(l));
            }
            let mut a = p.clone();
            let mut b = p.clone();
            let mut direction = None;
            for g in gaps {
                now += g;
                let before = a.level();
                a.observe(now, load(lo));
                b.observe(now, load(hi));
                prop_assert!(a.level() <= b.level(), "load {} gave {:?} but {} gave {:?}", lo, a.level(), hi, b.level());
                if a.level() != before {
                    let up = a.level() > before;
                    prop_assert!(direction.is_none_or(|d| d == up), "reversed under constant load {}", lo);
                    direction = Some(up);
                }
            }
        }

        /// Under any load sequence: every reported change matches the level, every step
        /// down is a single step at least `dwell` after the previous change (so at most
        /// one step down per dwell and no up-down flapping faster than that), and
        /// realtime is always admitted.
        #[test]
        fn no_flapping(
            steps in proptest::collection::vec((gap(), any_load()), 1..200),
        ) {
            let dwell = DegradationConfig::default().dwell;
            let t0 = Instant::now();
            let mut now = t0;
            let mut p = policy();
            let mut last_change: Option<Instant> = None;
            for (g, l) in steps {
                now += g;
                let before = p.level();
                let change = p.observe(now, load(l));
                prop_assert!(p.admits(Tier::Realtime));
                match change {
                    None => prop_assert_eq!(p.level(), before),
                    Some(LevelChange { from, to }) => {
                        prop_assert_eq!(from, before);
                        prop_assert_eq!(to, p.level());
                        prop_assert_ne!(from, to);
                        if to < from {
                            prop_assert_eq!(from.lower(), Some(to));
                            if let Some(last) = last_change {
                                prop_assert!(now - last >= dwell, "stepped down {:?} after the last change", now - last);
                            }
                        }
                        last_change = Some(now);
                    }
                }
            }
        }

        /// Manual overrides included, realtime is admitted at every level.
        #[test]
        fn realtime_always_admitted(
            ops in proptest::collection::vec((gap(), any_load(), 0usize..5), 1..100),
        ) {
            let mut now = Instant::now();
            let mut p = policy();
            for (g, l, action) in ops {
                now += g;
                match action {
                    0..=2 => { p.set(Level::ALL[action]); }
                    3 => p.auto(),
                    _ => { p.observe(now, load(l)); }
                }
                prop_assert!(p.admits(Tier::Realtime));
            }
        }
    }

    #[test]
    fn a_reconfigured_policy_keeps_its_level_and_moves_on_the_new_thresholds() {
        let t0 = Instant::now();
        let mut p = policy();
        assert!(p.observe(t0, load(0.85)).is_some());
        assert_eq!(p.level(), Level::ShedOptional);
        let config = DegradationConfig {
            shed_optional_at: 0.5,
            critical_only_at: 0.6,
            ..DegradationConfig::default()
        };
        p.reconfigure(config).unwrap();
        assert_eq!(p.level(), Level::ShedOptional);
        p.observe(t0 + secs(0.1), load(0.65));
        assert_eq!(p.level(), Level::CriticalOnly);
        let invalid = DegradationConfig {
            critical_only_at: 0.4,
            ..config
        };
        assert!(p.reconfigure(invalid).is_err());
        assert_eq!(p.config(), &config);
    }
}
