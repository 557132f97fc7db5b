//! Conditions on live link state, with hysteresis: a rule with a [`Condition`] takes part in
//! lookups only while its condition is on.
//!
//! Owns: the condition model, the snapshot of link state the engine passes in
//! ([`LiveState`]) and the on/off state machine. Does not own measuring the links (the
//! [`crate::health`] monitor does) nor when to re-evaluate (the engine calls
//! [`super::RuleSet::update_conditions`] after link health changed, and at
//! [`super::RuleSet::poll_condition_timeout`]).
//!
//! # Hysteresis
//!
//! A condition watches one number derived from the links of its scope (worst or best loss in
//! permille, worst or best RTT in µs, or how many links are degraded or down) and has two
//! thresholds, `off_at < on_at`:
//!
//! - off → on when the value is **at or above `on_at`**;
//! - on → off when the value is **at or below `off_at`**;
//! - between the two it keeps its state, so a value that hovers around one threshold cannot
//!   make it flap;
//! - after a flip it keeps its new state for at least `min_hold`, so a value that swings
//!   across both thresholds flips at most once per `min_hold`. A flip the hold time held back
//!   happens at the first evaluation after the hold ends, if the value still asks for it.
//!
//! Every flip bumps the rule set's version, so flows re-look-up their rule: a flip costs one
//! slow-path lookup per active flow, which is why conditions must not flap.

use core::fmt;
use core::time::Duration;

use crate::health::{LinkState, LinkStats};
use crate::time::Instant;
use crate::types::{MAX_NICS, NicId, NicSet};

/// The number a condition watches.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Metric {
    /// Probe loss in permille (0..=1000), aggregated over the scope's links.
    LossPermille,
    /// Smoothed RTT in microseconds, aggregated over the scope's links.
    RttMicros,
    /// How many of the scope's links are Degraded or Down.
    LinksDegraded,
    /// How many of the scope's links are Down.
    LinksDown,
}

/// How per-link loss or RTT values become one number. Counts ignore it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Aggregate {
    /// The worst link (largest value): "loss on any of the links exceeds ...".
    #[default]
    Worst,
    /// The best link (smallest value): "loss on every one of the links exceeds ...".
    Best,
}

/// A condition on live link state with hysteresis (see the module doc).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Condition {
    /// What is watched.
    pub metric: Metric,
    /// Which links: the NICs the rule's flows use, or [`NicSet::ALL`] for any link. Links
    /// absent from the [`LiveState`] are ignored.
    pub links: NicSet,
    /// Worst or best link, for loss and RTT.
    pub aggregate: Aggregate,
    /// Switch on when the value is at or above this.
    pub on_at: u32,
    /// Switch off when the value is at or below this; must be below `on_at`.
    pub off_at: u32,
    /// Minimum time between two flips. Default zero.
    pub min_hold: Duration,
}

impl Condition {
    /// "While the loss on any of `links` is at least `on_permille`, until it is at most
    /// `off_permille`."
    #[must_use]
    pub const fn loss_above(links: NicSet, on_permille: u32, off_permille: u32) -> Self {
        Self {
            metric: Metric::LossPermille,
            links,
            aggregate: Aggregate::Worst,
            on_at: on_permille,
            off_at: off_permille,
            min_hold: Duration::ZERO,
        }
    }

    /// "While at least one of `links` is degraded or down."
    #[must_use]
    pub const fn any_degraded(links: NicSet) -> Self {
        Self {
            metric: Metric::LinksDegraded,
            links,
            aggregate: Aggregate::Worst,
            on_at: 1,
            off_at: 0,
            min_hold: Duration::ZERO,
        }
    }

    /// The same condition with a minimum hold time.
    #[must_use]
    pub const fn with_hold(mut self, min_hold: Duration) -> Self {
        self.min_hold = min_hold;
        self
    }

    /// The watched value under `live` (0 when no link of the scope is present).
    #[must_use]
    pub fn value(&self, live: &LiveState) -> u32 {
        let links = live
            .present
            .and(self.links)
            .iter()
            .filter_map(|n| live.links.get(n.index()).copied());
        let pick = |vals: &mut dyn Iterator<Item = u32>| match self.aggregate {
            Aggregate::Worst => vals.max().unwrap_or(0),
            Aggregate::Best => vals.min().unwrap_or(0),
        };
        match self.metric {
            Metric::LossPermille => pick(&mut links.map(|l| u32::from(l.loss_permille))),
            Metric::RttMicros => pick(&mut links.map(|l| l.rtt_us)),
            Metric::LinksDegraded => count(links.filter(|l| l.state != LinkState::Up)),
            Metric::LinksDown => count(links.filter(|l| l.state == LinkState::Down)),
        }
    }

    /// The first error of the condition, given the configured NICs.
    pub(super) fn check(&self, nics: NicSet) -> Result<(), ConditionError> {
        if self.off_at >= self.on_at {
            return Err(ConditionError::ThresholdsInverted);
        }
        if self.metric == Metric::LossPermille && self.on_at > 1000 {
            return Err(ConditionError::LossAbove1000);
        }
        if self.links.and(nics).is_empty() {
            return Err(ConditionError::NoLinks);
        }
        Ok(())
    }
}

fn count<I: Iterator>(it: I) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}

/// Why a condition is invalid.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[non_exhaustive]
pub enum ConditionError {
    /// `off_at` is not below `on_at`: no hysteresis band.
    ThresholdsInverted,
    /// A loss threshold above 1000 permille can never be reached.
    LossAbove1000,
    /// The scope names none of the configured NICs.
    NoLinks,
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ThresholdsInverted => f.write_str("off threshold must be below on threshold"),
            Self::LossAbove1000 => f.write_str("loss threshold above 1000 permille"),
            Self::NoLinks => f.write_str("condition names none of the configured nics"),
        }
    }
}

/// One link as a condition sees it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct LinkSnapshot {
    /// Up, Degraded or Down.
    pub state: LinkState,
    /// Probe loss, permille (0..=1000).
    pub loss_permille: u16,
    /// Smoothed RTT, µs (0 before the first sample).
    pub rtt_us: u32,
}

impl LinkSnapshot {
    /// A link that is up, with no loss and no RTT sample.
    pub const UP: Self = Self {
        state: LinkState::Up,
        loss_permille: 0,
        rtt_us: 0,
    };

    /// The snapshot of what link health knows (loss rounded to permille, SRTT in µs).
    #[must_use]
    pub fn from_stats(s: &LinkStats) -> Self {
        let loss = (s.loss.clamp(0.0, 1.0) * 1000.0 + 0.5) as u16;
        Self {
            state: s.state,
            loss_permille: loss.min(1000),
            rtt_us: u32::try_from(s.srtt.as_micros()).unwrap_or(u32::MAX),
        }
    }
}

/// The live state conditions are evaluated against: one [`LinkSnapshot`] per present link.
/// The engine keeps one, updates it from link health, and passes it to
/// [`super::RuleSet::update_conditions`]. `Copy`, no heap.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LiveState {
    links: [LinkSnapshot; MAX_NICS],
    present: NicSet,
}

impl Default for LiveState {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveState {
    /// No link present.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            links: [LinkSnapshot::UP; MAX_NICS],
            present: NicSet::EMPTY,
        }
    }

    /// Record `nic`'s state (ignored for an invalid id).
    pub fn set(&mut self, nic: NicId, link: LinkSnapshot) {
        if let Some(slot) = self.links.get_mut(nic.index()) {
            *slot = link;
            self.present.insert(nic);
        }
    }

    /// Forget `nic` (a removed link).
    pub fn remove(&mut self, nic: NicId) {
        self.present.remove(nic);
    }

    /// `nic`'s state, if present.
    #[must_use]
    pub fn get(&self, nic: NicId) -> Option<LinkSnapshot> {
        if self.present.contains(nic) {
            self.links.get(nic.index()).copied()
        } else {
            None
        }
    }

    /// The present links.
    #[must_use]
    pub const fn present(&self) -> NicSet {
        self.present
    }
}

/// The on/off state of one rule's condition.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct ConditionState {
    pub(super) on: bool,
    /// When it last flipped (`None`: never, so the first flip is not held back).
    last_flip: Option<Instant>,
    /// The last evaluation asked for a flip that `min_hold` held back.
    pub(super) held_back: bool,
}

impl ConditionState {
    /// Feed one value at `now`; `true` if the state flipped.
    pub(super) fn step(&mut self, cond: &Condition, value: u32, now: Instant) -> bool {
        let wants_flip = if self.on {
            value <= cond.off_at
        } else {
            value >= cond.on_at
        };
        if !wants_flip {
            self.held_back = false;
            return false;
        }
        let hold_over = self
            .last_flip
            .is_none_or(|t| now.saturating_duration_since(t) >= cond.min_hold);
        if !hold_over {
            self.held_back = true;
            return false;
        }
        self.on = !self.on;
        self.last_flip = Some(now);
        self.held_back = false;
        true
    }

    /// When a held-back flip may happen.
    pub(super) fn hold_ends(&self, cond: &Condition) -> Option<Instant> {
        if !self.held_back {
            return None;
        }
        self.last_flip.map(|t| t.saturating_add(cond.min_hold))
    }
}
