//! Templates: the parameters (and, with learning, the memory) agents are made from. The
//! defaults are the files in the repository's `templates/`, embedded at build time, each field
//! documented there. A template directory may hold any of `desk.toml`, `holder.toml` and
//! `trader.toml`; a missing file means the default.

use std::path::Path;

use crypy_core::event::TemplateScope;
use crypy_core::{Asset, Money, Pair};
use serde::Deserialize;
use thiserror::Error;

use crate::strategy::{Registry, Strategy, StrategyError, StrategySpec};

pub const DEFAULT_DESK: &str = include_str!("../../../templates/desk.toml");
pub const DEFAULT_HOLDER: &str = include_str!("../../../templates/holder.toml");
pub const DEFAULT_TRADER: &str = include_str!("../../../templates/trader.toml");

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TemplateError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: {source}")]
    Strategy { file: String, source: StrategyError },
    #[error("cannot read {file}: {message}")]
    Read { file: String, message: String },
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskTemplate {
    pub trusted_asset: Asset,
    #[serde(default)]
    pub divert: Vec<Asset>,
    /// What becomes of the orders still open when the desk stops (a signal, `quit`, the end
    /// of its data).
    #[serde(default)]
    pub on_stop: OnStop,
    pub limits: DeskLimits,
    #[serde(default)]
    pub learning: DeskLearning,
}

/// What a desk learns across its lifetimes (see `templates/desk.toml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskLearning {
    pub divert_after_losing_lifetimes: u32,
    pub evidence_days: u32,
}

impl Default for DeskLearning {
    fn default() -> Self {
        DeskLearning { divert_after_losing_lifetimes: 3, evidence_days: 90 }
    }
}

/// See [`DeskTemplate::on_stop`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStop {
    /// Cancel them at the venue, and record it: the books end flat of open orders.
    #[default]
    Cancel,
    /// Leave them working at the venue; the next start reconciles them.
    Keep,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskLimits {
    #[serde(default)]
    pub allowed_pairs: Vec<Pair>,
    pub max_order_notional: Money,
    pub max_open_orders: u32,
    #[serde(default)]
    pub kill_switch: bool,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderTemplate {
    #[serde(default)]
    pub pairs: Vec<Pair>,
    /// Strategy families or variants its traders never propose.
    #[serde(default)]
    pub avoid: Vec<String>,
    /// Learned: `FAMILY until TIME` — its traders do not propose the family until then.
    #[serde(default)]
    pub avoid_until: Vec<String>,
    pub criteria: Criteria,
    #[serde(default)]
    pub learning: HolderLearning,
    #[serde(default)]
    pub authorization: HolderAuthorization,
}

/// How a holder signs its allocations (see `templates/holder.toml`).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderAuthorization {
    #[serde(default)]
    pub key: crate::auth::KeyScope,
}

/// What a holder learns across its lifetimes (see `templates/holder.toml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderLearning {
    pub avoid_after_losing_pairs: u32,
    pub evidence_days: u32,
}

impl Default for HolderLearning {
    fn default() -> Self {
        HolderLearning { avoid_after_losing_pairs: 2, evidence_days: 30 }
    }
}

/// What a holder requires of a proposal. Thresholds on metrics are `f64` like the metrics.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Criteria {
    pub min_return: f64,
    pub min_sharpe: f64,
    pub max_drawdown: f64,
    pub min_trades: u32,
    pub max_fraction: f64,
    pub allocation_ttl_minutes: u32,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraderTemplate {
    pub look_back_bars: u32,
    pub evaluate_every_minutes: u32,
    pub strategies: Vec<String>,
    pub propose_min_return: f64,
    pub propose_min_trades: u32,
    pub stop_loss: f64,
    pub take_profit: f64,
    /// A fixed quantity per entry (exact decimal); zero buys all the allocation allows.
    #[serde(default, with = "crypy_core::money::decimal_serde")]
    pub order_qty: rust_decimal::Decimal,
    /// Variants (`sma_cross:10:40`) the pair's traders may propose; empty: any of the grid.
    #[serde(default)]
    pub focus: Vec<String>,
    /// Variants the pair's traders never propose.
    #[serde(default)]
    pub drop: Vec<String>,
    #[serde(default)]
    pub learning: TraderLearning,
}

/// What a pair's traders learn across their generations (see `templates/trader.toml`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraderLearning {
    pub min_positions: u32,
    pub neighbourhood: u32,
    pub drop_after_losses: u32,
    pub explore: f64,
    pub evidence_days: u32,
}

impl Default for TraderLearning {
    fn default() -> Self {
        TraderLearning { min_positions: 3, neighbourhood: 1, drop_after_losses: 2, explore: 0.1, evidence_days: 30 }
    }
}

fn parse<T: for<'de> Deserialize<'de>>(file: &str, text: &str) -> Result<T, TemplateError> {
    toml::from_str(text).map_err(|e| TemplateError::Invalid { file: file.into(), message: e.to_string() })
}

fn invalid(file: &str, message: String) -> TemplateError {
    TemplateError::Invalid { file: file.into(), message }
}

/// `sma_cross until 2024-01-30 14:30:00Z` → (`sma_cross`, ms).
fn parse_avoidance(entry: &str) -> Option<(String, i64)> {
    let (family, time) = entry.split_once(" until ")?;
    let family = family.trim();
    (!family.is_empty()).then_some(())?;
    Some((family.to_string(), crypy_core::time::parse_iso_utc(time.trim())?))
}

impl DeskTemplate {
    pub fn parse(file: &str, text: &str) -> Result<Self, TemplateError> {
        let t: DeskTemplate = parse(file, text)?;
        if t.limits.max_order_notional.is_sign_negative() {
            return Err(invalid(file, "limits.max_order_notional must not be negative".into()));
        }
        Ok(t)
    }
}

impl HolderTemplate {
    /// The learned avoidances: (family, until when in ms).
    pub fn avoidances(&self) -> Vec<(String, i64)> {
        self.avoid_until.iter().filter_map(|e| parse_avoidance(e)).collect()
    }

    pub fn parse(file: &str, text: &str) -> Result<Self, TemplateError> {
        let t: HolderTemplate = parse(file, text)?;
        if let Some(bad) = t.avoid_until.iter().find(|e| parse_avoidance(e).is_none()) {
            return Err(invalid(file, format!("avoid_until entry {bad:?} is not `FAMILY until YYYY-MM-DD HH:MM:SSZ`")));
        }
        let c = &t.criteria;
        if !(c.max_fraction > 0.0 && c.max_fraction <= 1.0) {
            return Err(invalid(file, format!("criteria.max_fraction {} must be in (0, 1]", c.max_fraction)));
        }
        if !(0.0..=1.0).contains(&c.max_drawdown) {
            return Err(invalid(file, format!("criteria.max_drawdown {} must be in [0, 1]", c.max_drawdown)));
        }
        if c.allocation_ttl_minutes == 0 {
            return Err(invalid(file, "criteria.allocation_ttl_minutes must be at least 1".into()));
        }
        Ok(t)
    }
}

impl TraderTemplate {
    pub fn parse(file: &str, text: &str) -> Result<Self, TemplateError> {
        let t: TraderTemplate = parse(file, text)?;
        if t.look_back_bars < 2 || t.evaluate_every_minutes == 0 {
            return Err(invalid(
                file,
                "look_back_bars must be at least 2 and evaluate_every_minutes at least 1".into(),
            ));
        }
        if !(t.stop_loss > 0.0 && t.stop_loss <= 1.0 && t.take_profit > 0.0) {
            return Err(invalid(file, "stop_loss must be in (0, 1] and take_profit positive (or inf)".into()));
        }
        if t.order_qty.is_sign_negative() {
            return Err(invalid(file, format!("order_qty must not be negative, not {}", t.order_qty)));
        }
        if !(0.0..=1.0).contains(&t.learning.explore) {
            return Err(invalid(file, format!("learning.explore {} must be in [0, 1]", t.learning.explore)));
        }
        t.build_strategies(&Registry::default(), file)?;
        Ok(t)
    }

    /// The strategy grids this template names, built from `registry`.
    pub fn build_strategies(&self, registry: &Registry, file: &str) -> Result<Vec<Box<dyn Strategy>>, TemplateError> {
        self.strategies
            .iter()
            .map(|text| StrategySpec::parse(text).and_then(|spec| registry.build(&spec)))
            .collect::<Result<_, _>>()
            .map_err(|source| TemplateError::Strategy { file: file.into(), source })
    }
}

/// The three templates agents are made from.
#[derive(Clone, Debug, PartialEq)]
pub struct Templates {
    pub desk: DeskTemplate,
    pub holder: HolderTemplate,
    pub trader: TraderTemplate,
    /// The texts they were parsed from, in [`FILES`] order: what a setting edits.
    pub texts: [String; 3],
}

impl Default for Templates {
    fn default() -> Self {
        Templates::parse_texts(&FILES.map(|(_, text)| text.to_string()), Path::new(""))
            .expect("the default templates are valid")
    }
}

/// The template files, in the order every list of them follows, with their defaults.
pub const FILES: [(&str, &str); 3] =
    [("desk.toml", DEFAULT_DESK), ("holder.toml", DEFAULT_HOLDER), ("trader.toml", DEFAULT_TRADER)];

/// The texts of the three templates in `dir` (in [`FILES`] order), the default for a file
/// it lacks.
///
/// # Errors
/// A file that exists but cannot be read.
pub fn read_texts(dir: &Path) -> Result<[String; 3], TemplateError> {
    let read = |(name, default): (&str, &str)| {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(default.to_string()),
            Err(e) => Err(TemplateError::Read { file: path.display().to_string(), message: e.to_string() }),
        }
    };
    Ok([read(FILES[0])?, read(FILES[1])?, read(FILES[2])?])
}

/// The file of a template directory holding `scope`'s template: `desk.toml`, and for one
/// holder or one pair `holder.EUR.toml` or `trader.XBT-EUR.toml` (a whole template: the
/// shared file's text with that scope's changes).
pub fn scope_file(scope: &TemplateScope) -> String {
    match scope {
        TemplateScope::Desk => FILES[0].0.to_string(),
        TemplateScope::Holder(asset) => format!("holder.{asset}.toml"),
        TemplateScope::Trader(pair) => format!("trader.{}-{}.toml", pair.base, pair.quote),
    }
}

/// The scope a per-holder or per-pair file name stands for (see [`scope_file`]).
pub fn file_scope(name: &str) -> Option<TemplateScope> {
    let stem = name.strip_suffix(".toml")?;
    if let Some(asset) = stem.strip_prefix("holder.") {
        return asset.parse().ok().map(TemplateScope::Holder);
    }
    let (base, quote) = stem.strip_prefix("trader.")?.split_once('-')?;
    format!("{base}/{quote}").parse().ok().map(TemplateScope::Trader)
}

/// The per-holder and per-pair templates in `dir` (see [`scope_file`]), in scope order, each
/// checked by parsing it as its template.
///
/// # Errors
/// An unreadable or invalid file, or a `holder.*.toml` / `trader.*.toml` whose name names no
/// asset or pair.
pub fn read_scoped(dir: &Path) -> Result<Vec<(TemplateScope, String)>, TemplateError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TemplateError::Read { file: dir.display().to_string(), message: e.to_string() }),
    };
    let mut scoped = Vec::new();
    for entry in entries {
        let path =
            entry.map_err(|e| TemplateError::Read { file: dir.display().to_string(), message: e.to_string() })?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let file = path.display().to_string();
        if !(name.starts_with("holder.") || name.starts_with("trader.")) || FILES.iter().any(|(f, _)| *f == name) {
            continue;
        }
        if !name.ends_with(".toml") {
            continue;
        }
        let Some(scope) = file_scope(name) else {
            return Err(invalid(
                &file,
                "not a template file name: holder.ASSET.toml (holder.EUR.toml) or trader.BASE-QUOTE.toml \
                 (trader.XBT-EUR.toml)"
                    .into(),
            ));
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| TemplateError::Read { file: file.clone(), message: e.to_string() })?;
        match scope {
            TemplateScope::Holder(_) => drop(HolderTemplate::parse(&file, &text)?),
            _ => drop(TraderTemplate::parse(&file, &text)?),
        }
        scoped.push((scope, text));
    }
    scoped.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(scoped)
}

impl Templates {
    /// Parses the three texts (in [`FILES`] order); errors name the files under `origin`.
    pub fn parse_texts(texts: &[String; 3], origin: &Path) -> Result<Self, TemplateError> {
        let file = |i: usize| origin.join(FILES[i].0).display().to_string();
        Ok(Templates {
            desk: DeskTemplate::parse(&file(0), &texts[0])?,
            holder: HolderTemplate::parse(&file(1), &texts[1])?,
            trader: TraderTemplate::parse(&file(2), &texts[2])?,
            texts: texts.clone(),
        })
    }

    /// Reads the templates in `dir`, using the default for any file it lacks.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        Templates::parse_texts(&read_texts(dir)?, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_seeds_initial_configuration() {
        let t = Templates::default();
        assert_eq!(t.desk.trusted_asset.as_str(), "EUR");
        assert_eq!(t.trader.build_strategies(&Registry::default(), "trader.toml").unwrap().len(), 2);
        assert!(t.trader.evaluate_every_minutes <= 60, "re-evaluates at least hourly");
    }

    #[test]
    fn mistakes_name_the_file_and_the_field() {
        let cases = [
            (
                TraderTemplate::parse("t.toml", &DEFAULT_TRADER.replace("look_back_bars", "lookback_bars"))
                    .unwrap_err()
                    .to_string(),
                "unknown field `lookback_bars`",
            ),
            (
                TraderTemplate::parse("t.toml", &DEFAULT_TRADER.replace("sma_cross fast", "smma_cross fast"))
                    .unwrap_err()
                    .to_string(),
                "unknown strategy family",
            ),
            (
                HolderTemplate::parse("h.toml", &DEFAULT_HOLDER.replace("max_fraction = 1.0", "max_fraction = 1.5"))
                    .unwrap_err()
                    .to_string(),
                "max_fraction 1.5",
            ),
            (
                DeskTemplate::parse("d.toml", &DEFAULT_DESK.replace("\"100000\"", "100000.5")).unwrap_err().to_string(),
                "decimal number as a string",
            ),
        ];
        for (msg, needle) in cases {
            assert!(msg.contains(needle), "{needle:?} not in {msg}");
        }
    }

    #[test]
    fn a_directory_overrides_only_what_it_holds() {
        let dir = std::env::temp_dir().join(format!("crypy-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("holder.toml"), DEFAULT_HOLDER.replace("min_sharpe = 0.5", "min_sharpe = 2.0"))
            .unwrap();
        let t = Templates::load(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(t.holder.criteria.min_sharpe, 2.0);
        assert_eq!(t.desk, Templates::default().desk);
    }
}

/// One field that differs between two versions of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldChange {
    /// Dotted path, e.g. `criteria.min_sharpe`.
    pub key: String,
    /// TOML text of the old value; `None` when the field is new.
    pub old: Option<String>,
    /// TOML text of the new value; `None` when the field was removed.
    pub new: Option<String>,
}

/// A template's fields as dotted paths and TOML value texts.
///
/// # Errors
/// When `text` is not TOML.
pub fn flatten(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut std::collections::BTreeMap<String, String>) {
        for (k, v) in table {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(t) => walk(&key, t, out),
                other => {
                    out.insert(key, other.to_string());
                }
            }
        }
    }
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = std::collections::BTreeMap::new();
    walk("", &table, &mut out);
    Ok(out)
}

/// One field of a template text set to a new value: `key` is dotted (`criteria.min_sharpe`),
/// `value` is TOML (`0.9`, `"100000"`, `["XBT/EUR"]`); a bare word, or a number where the
/// field holds text (decimals are strings), is taken as text, and an integer where the field
/// holds a float as that float. Returns the change (old and new value as TOML) and the new
/// text, which the caller validates by parsing it as its template.
///
/// # Errors
/// An unknown key (the message lists the keys there are), a table instead of a value, or a
/// value of another type than the field's.
pub fn set_field(text: &str, key: &str, value: &str) -> Result<(FieldChange, String), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let known = || flatten(text).map(|f| f.into_keys().collect::<Vec<_>>().join(", ")).unwrap_or_default();
    let mut slot: &mut toml::Table = &mut table;
    let mut parts = key.split('.').peekable();
    let old = loop {
        let Some(part) = parts.next() else { return Err(format!("empty key; keys: {}", known())) };
        let Some(v) = slot.get_mut(part) else { return Err(format!("no key {key:?}; keys: {}", known())) };
        if parts.peek().is_none() {
            break v;
        }
        match v {
            toml::Value::Table(t) => slot = t,
            _ => return Err(format!("no key {key:?}; keys: {}", known())),
        }
    };
    let parsed: Option<toml::Value> =
        toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut t| t.remove("v"));
    let new = match (&*old, parsed) {
        (toml::Value::Table(_), _) => return Err(format!("{key} is a table; set one of its keys")),
        (toml::Value::String(_), Some(toml::Value::String(s))) => toml::Value::String(s),
        (toml::Value::String(_), _) => toml::Value::String(value.to_string()),
        (toml::Value::Float(_), Some(toml::Value::Integer(i))) => toml::Value::Float(i as f64),
        (old, Some(new)) if old.same_type(&new) => new,
        (old, _) => return Err(format!("{key} takes a {}, not {value:?}", old.type_str())),
    };
    let change = FieldChange { key: key.to_string(), old: Some(old.to_string()), new: Some(new.to_string()) };
    *old = new;
    Ok((change, toml::to_string(&table).map_err(|e| e.to_string())?))
}

/// `items` as a TOML list of strings (`["a", "b"]`): the value a learned list is set to.
pub fn toml_list<T: std::fmt::Display>(items: &[T]) -> String {
    format!("[{}]", items.iter().map(|i| format!("{:?}", i.to_string())).collect::<Vec<_>>().join(", "))
}

/// [`set_field`] for a list that learning keeps (`focus`, `drop`, `avoid_until`, `divert`): a
/// template written before the key existed gets it (empty) first, since serde's default
/// already gives such a template that empty list.
///
/// # Errors
/// As [`set_field`].
pub fn set_learned(text: &str, key: &str, value: &str) -> Result<(FieldChange, String), String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    if key.contains('.') || table.contains_key(key) {
        return set_field(text, key, value);
    }
    table.insert(key.to_string(), toml::Value::Array(Vec::new()));
    let with_key = toml::to_string(&table).map_err(|e| e.to_string())?;
    set_field(&with_key, key, value)
}

/// The fields that differ from `old` to `new`, in key order.
///
/// # Errors
/// When either text is not TOML.
pub fn diff(old: &str, new: &str) -> Result<Vec<FieldChange>, String> {
    let (a, b) = (flatten(old)?, flatten(new)?);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    Ok(keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| FieldChange { key: k.clone(), old: a.get(k).cloned(), new: b.get(k).cloned() })
        .collect())
}

#[cfg(test)]
mod scope_file_tests {
    use super::*;

    #[test]
    fn a_scope_and_its_file_name_round_trip() {
        for scope in [
            TemplateScope::Holder("EUR".parse().unwrap()),
            TemplateScope::Trader("XBT/EUR".parse().unwrap()),
            TemplateScope::Trader("ETH/XBT".parse().unwrap()),
        ] {
            assert_eq!(file_scope(&scope_file(&scope)), Some(scope));
        }
        assert_eq!(scope_file(&TemplateScope::Trader("XBT/EUR".parse().unwrap())), "trader.XBT-EUR.toml");
        for name in ["trader.XBT.toml", "holder..toml", "trader.XBT-XBT.toml", "holder.EUR.txt", "desk.toml"] {
            assert_eq!(file_scope(name), None, "{name}");
        }
    }
}

#[cfg(test)]
mod diff_tests {
    use super::*;

    #[test]
    fn a_field_is_set_by_its_dotted_key_with_its_type() {
        let (change, text) = set_field(DEFAULT_HOLDER, "criteria.min_sharpe", "0.9").unwrap();
        assert_eq!((change.old.as_deref(), change.new.as_deref()), (Some("0.5"), Some("0.9")));
        assert_eq!(HolderTemplate::parse("h", &text).unwrap().criteria.min_sharpe, 0.9);
        let (_, text) = set_field(DEFAULT_HOLDER, "criteria.min_sharpe", "2").unwrap();
        assert_eq!(HolderTemplate::parse("h", &text).unwrap().criteria.min_sharpe, 2.0);
        let (change, text) = set_field(DEFAULT_DESK, "limits.max_order_notional", "2500.5").unwrap();
        assert_eq!(change.new.as_deref(), Some("\"2500.5\""));
        assert_eq!(DeskTemplate::parse("d", &text).unwrap().limits.max_order_notional.to_string(), "2500.5");
        let (_, text) = set_field(DEFAULT_DESK, "divert", "[\"XBT\"]").unwrap();
        assert_eq!(DeskTemplate::parse("d", &text).unwrap().divert, vec!["XBT".parse().unwrap()]);
        for (key, value, needle) in [
            (
                "criteria.min_sharp",
                "1",
                "no key \"criteria.min_sharp\"; keys: authorization.key, avoid, avoid_until, criteria.allocation_ttl_minutes",
            ),
            ("criteria", "1", "is a table"),
            ("criteria.min_trades", "many", "takes a integer"),
            ("limits.kill_switch", "maybe", "takes a boolean"),
        ] {
            let template = if key.starts_with("limits") { DEFAULT_DESK } else { DEFAULT_HOLDER };
            let err = set_field(template, key, value).unwrap_err();
            assert!(err.contains(needle), "{key}: {err}");
        }
        // The shipped holder signs with one key per asset; a template written before the
        // setting existed keeps a key per lifetime, as its logs were recorded.
        assert_eq!(HolderTemplate::parse("h", DEFAULT_HOLDER).unwrap().authorization.key, crate::auth::KeyScope::Asset);
        let before = &DEFAULT_HOLDER[..DEFAULT_HOLDER.find("[authorization]").unwrap()];
        assert_eq!(HolderTemplate::parse("h", before).unwrap().authorization.key, crate::auth::KeyScope::Lifetime);
        // A holder's key scope is one of two words; the template refuses any other.
        let (_, text) = set_field(DEFAULT_HOLDER, "authorization.key", "lifetime").unwrap();
        assert_eq!(HolderTemplate::parse("h", &text).unwrap().authorization.key, crate::auth::KeyScope::Lifetime);
        let (_, text) = set_field(DEFAULT_HOLDER, "authorization.key", "trader").unwrap();
        let err = HolderTemplate::parse("h", &text).unwrap_err().to_string();
        assert!(err.contains("unknown variant `trader`, expected `asset` or `lifetime`"), "{err}");
    }

    #[test]
    fn field_changes_name_the_dotted_key() {
        let new = DEFAULT_HOLDER
            .replace("min_sharpe = 0.5", "min_sharpe = 1.5")
            .replace("pairs = []", "pairs = [\"XBT/EUR\"]");
        let changes = diff(DEFAULT_HOLDER, &new).unwrap();
        assert_eq!(
            changes,
            vec![
                FieldChange { key: "criteria.min_sharpe".into(), old: Some("0.5".into()), new: Some("1.5".into()) },
                FieldChange { key: "pairs".into(), old: Some("[]".into()), new: Some("[\"XBT/EUR\"]".into()) },
            ]
        );
        assert!(diff(DEFAULT_TRADER, DEFAULT_TRADER).unwrap().is_empty(), "comments and layout do not count");
        assert!(diff("a = ", "a = 1").is_err());
    }
}
