//! Strategies: families of trading rules with a parameter grid; each grid point is a
//! [`Variant`] (`sma_cross:10:30`). A strategy turns cached indicator series into the
//! position a variant wants after each bar; the [`crate::evaluate`] engine does the rest.
//!
//! Built-in families (long-only):
//!
//! | family      | parameters   | wants to be long when          |
//! |-------------|--------------|--------------------------------|
//! | `sma_cross` | `fast, slow` | `sma(fast) > sma(slow)`        |
//! | `ema_cross` | `fast, slow` | `ema(fast) > ema(slow)`        |
//!
//! Only `fast < slow` points of a grid are variants.

use std::collections::BTreeMap;
use std::fmt;

use thiserror::Error;

use crate::indicator::{IndicatorCache, IndicatorKey};

/// One point of a strategy's parameter grid.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Variant {
    pub family: &'static str,
    /// Parameter values in the family's documented order.
    pub params: Vec<u32>,
}

impl fmt::Display for Variant {
    /// `family:p1:p2…`, the name used in events and reports.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.family)?;
        for p in &self.params {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// A family of trading rules and its grid.
pub trait Strategy: Send + Sync + fmt::Debug {
    fn family(&self) -> &'static str;
    /// Every variant of the grid.
    fn variants(&self) -> &[Variant];
    /// The indicator series `variant` reads, so that each is computed once per evaluation.
    fn needs(&self, variant: &Variant) -> Vec<IndicatorKey>;
    /// For each bar, whether `variant` wants to hold a long position once that bar has
    /// closed. Bars before its indicators are valid must say `false`.
    fn signals(&self, variant: &Variant, cache: &IndicatorCache, want_long: &mut [bool]);

    /// The same decision for the bar that just closed, for a trader following the market bar
    /// by bar: `latest` holds the current value of each of [`needs`](Self::needs) in order
    /// (`NaN` while warming up), `was_long` what it said after the bar before. Must agree with
    /// [`signals`](Self::signals) on the same closes.
    fn wants_now(&self, variant: &Variant, latest: &[f64], was_long: bool) -> bool;

    /// When `variant` is long exactly while one series is above another, those two: the
    /// evaluator then reads them directly instead of going through [`signals`](Self::signals).
    fn crossing(&self, _variant: &Variant) -> Option<(IndicatorKey, IndicatorKey)> {
        None
    }
}

/// Why a strategy could not be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StrategyError {
    #[error("unknown strategy family {family:?}; known: {known}")]
    UnknownFamily { family: String, known: String },
    #[error("{family}: missing parameter {param:?}")]
    MissingParam { family: String, param: &'static str },
    #[error("{family}: unknown parameter {param:?}; expected {expected}")]
    UnknownParam { family: String, param: String, expected: String },
    #[error("bad parameter range {0:?}: expected N, FROM..TO or FROM..TO/STEP with 1 <= FROM <= TO and STEP >= 1")]
    BadRange(String),
    #[error("cannot read strategy spec {0:?}: expected `family name=range …`, e.g. `sma_cross fast=5..50/5 slow=20..200/20`")]
    BadSpec(String),
    #[error("{family}: the grid has no variant with fast < slow")]
    EmptyGrid { family: String },
}

/// An inclusive range of parameter values: `10`, `5..50`, `5..50/5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamRange {
    pub from: u32,
    pub to: u32,
    pub step: u32,
}

impl ParamRange {
    pub fn values(self) -> impl Iterator<Item = u32> {
        (self.from..=self.to).step_by(self.step as usize)
    }
}

impl std::str::FromStr for ParamRange {
    type Err = StrategyError;
    fn from_str(s: &str) -> Result<Self, StrategyError> {
        let bad = || StrategyError::BadRange(s.to_owned());
        let (range, step) = match s.split_once('/') {
            Some((r, st)) => (r, st.parse().map_err(|_| bad())?),
            None => (s, 1),
        };
        let (from, to) = match range.split_once("..") {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let v = range.parse().map_err(|_| bad())?;
                (v, v)
            }
        };
        if from == 0 || from > to || step == 0 {
            return Err(bad());
        }
        Ok(ParamRange { from, to, step })
    }
}

impl fmt::Display for ParamRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.from == self.to {
            write!(f, "{}", self.from)
        } else {
            write!(f, "{}..{}/{}", self.from, self.to, self.step)
        }
    }
}

/// Which family to build and over which grid, as a template states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrategySpec {
    pub family: String,
    pub params: BTreeMap<String, ParamRange>,
}

impl StrategySpec {
    /// `sma_cross fast=5..50/5 slow=20..200/20`.
    pub fn parse(text: &str) -> Result<Self, StrategyError> {
        let mut words = text.split_whitespace();
        let family = words.next().ok_or_else(|| StrategyError::BadSpec(text.to_owned()))?.to_owned();
        let mut params = BTreeMap::new();
        for word in words {
            let (name, range) = word.split_once('=').ok_or_else(|| StrategyError::BadSpec(text.to_owned()))?;
            params.insert(name.to_owned(), range.parse()?);
        }
        Ok(StrategySpec { family, params })
    }
}

impl fmt::Display for StrategySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.family)?;
        for (name, range) in &self.params {
            write!(f, " {name}={range}")?;
        }
        Ok(())
    }
}

type Builder = fn(&StrategySpec) -> Result<Box<dyn Strategy>, StrategyError>;

/// The strategy families crypy knows, by name. Plugins add theirs with [`Registry::register`].
#[derive(Clone)]
pub struct Registry {
    builders: BTreeMap<&'static str, Builder>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry").field("families", &self.builders.keys().collect::<Vec<_>>()).finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        let mut r = Registry { builders: BTreeMap::new() };
        r.register("sma_cross", |spec| MaCross::build(spec, MaKind::Sma));
        r.register("ema_cross", |spec| MaCross::build(spec, MaKind::Ema));
        r
    }
}

impl Registry {
    pub fn register(&mut self, family: &'static str, build: Builder) {
        self.builders.insert(family, build);
    }

    pub fn families(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.builders.keys().copied()
    }

    pub fn build(&self, spec: &StrategySpec) -> Result<Box<dyn Strategy>, StrategyError> {
        match self.builders.get(spec.family.as_str()) {
            Some(build) => build(spec),
            None => Err(StrategyError::UnknownFamily {
                family: spec.family.clone(),
                known: self.families().collect::<Vec<_>>().join(", "),
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MaKind {
    Sma,
    Ema,
}

/// Long while the fast moving average is above the slow one.
#[derive(Debug)]
struct MaCross {
    kind: MaKind,
    variants: Vec<Variant>,
}

impl MaCross {
    fn family(kind: MaKind) -> &'static str {
        match kind {
            MaKind::Sma => "sma_cross",
            MaKind::Ema => "ema_cross",
        }
    }

    fn build(spec: &StrategySpec, kind: MaKind) -> Result<Box<dyn Strategy>, StrategyError> {
        let family = Self::family(kind);
        for name in spec.params.keys() {
            if name != "fast" && name != "slow" {
                return Err(StrategyError::UnknownParam {
                    family: family.into(),
                    param: name.clone(),
                    expected: "fast, slow".into(),
                });
            }
        }
        let get = |param: &'static str| {
            spec.params.get(param).copied().ok_or(StrategyError::MissingParam { family: family.into(), param })
        };
        let (fast, slow) = (get("fast")?, get("slow")?);
        let variants: Vec<Variant> = fast
            .values()
            .flat_map(|f| slow.values().filter(move |s| f < *s).map(move |s| Variant { family, params: vec![f, s] }))
            .collect();
        if variants.is_empty() {
            return Err(StrategyError::EmptyGrid { family: family.into() });
        }
        Ok(Box::new(MaCross { kind, variants }))
    }

    fn key(&self, period: u32) -> IndicatorKey {
        match self.kind {
            MaKind::Sma => IndicatorKey::Sma(period),
            MaKind::Ema => IndicatorKey::Ema(period),
        }
    }
}

impl Strategy for MaCross {
    fn family(&self) -> &'static str {
        Self::family(self.kind)
    }

    fn variants(&self) -> &[Variant] {
        &self.variants
    }

    fn needs(&self, variant: &Variant) -> Vec<IndicatorKey> {
        variant.params.iter().map(|p| self.key(*p)).collect()
    }

    fn wants_now(&self, _variant: &Variant, latest: &[f64], _was_long: bool) -> bool {
        latest[0] > latest[1]
    }

    fn crossing(&self, variant: &Variant) -> Option<(IndicatorKey, IndicatorKey)> {
        Some((self.key(variant.params[0]), self.key(variant.params[1])))
    }

    fn signals(&self, variant: &Variant, cache: &IndicatorCache, want_long: &mut [bool]) {
        let fast = cache.get(self.key(variant.params[0]));
        let slow = cache.get(self.key(variant.params[1]));
        // NaN during warm-up compares false: flat until both averages exist.
        for ((w, f), s) in want_long.iter_mut().zip(fast).zip(slow) {
            *w = f > s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_keep_only_fast_below_slow() {
        let r = Registry::default();
        let s = r.build(&StrategySpec::parse("sma_cross fast=10..30/10 slow=20..40/10").unwrap()).unwrap();
        let names: Vec<String> = s.variants().iter().map(|v| v.to_string()).collect();
        assert_eq!(
            names,
            [
                "sma_cross:10:20",
                "sma_cross:10:30",
                "sma_cross:10:40",
                "sma_cross:20:30",
                "sma_cross:20:40",
                "sma_cross:30:40"
            ]
        );
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let r = Registry::default();
        let err = |text: &str| match StrategySpec::parse(text) {
            Ok(spec) => r.build(&spec).map(|_| ()).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        let cases = [
            ("macd fast=1 slow=2", "known: ema_cross, sma_cross"),
            ("sma_cross fast=5", "missing parameter \"slow\""),
            ("sma_cross fast=5 slow=10 signal=3", "unknown parameter \"signal\""),
            ("sma_cross fast=30 slow=10..20", "no variant with fast < slow"),
            ("sma_cross fast=0..5 slow=10", "bad parameter range"),
            ("sma_cross fast=5..10/0 slow=20", "bad parameter range"),
            ("sma_cross fast:5", "cannot read strategy spec"),
        ];
        for (text, needle) in cases {
            let msg = err(text);
            assert!(msg.contains(needle), "{text}: {msg}");
        }
        let spec = StrategySpec::parse("ema_cross fast=5..50/5 slow=100").unwrap();
        assert_eq!(spec.to_string(), "ema_cross fast=5..50/5 slow=100");
    }
}
