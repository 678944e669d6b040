//! Pricing glue: the in-memory [`PriceTable`] (configured entries plus those edited at runtime,
//! which the database keeps) and the pricing of a record when it is stored. An unknown model is
//! recorded at cost 0 and flagged `unpriced`, never dropped.
use std::sync::RwLock;

use retort_pricing::{Price, PriceTable, Tokens};

use crate::{
    error::MeteringError,
    store::{Record, Store},
    time,
};

/// The highest price accepted, in USD per million tokens (a hundred times today's dearest model):
/// above it an entry is a typo or an attack, and its costs would overflow the sums.
pub const MAX_PRICE_USD_PER_MTOK: f64 = 10_000.0;
/// The most one event may cost (USD 1M in micro-dollars): a stored cost never overflows a sum of
/// billions of events.
pub const MAX_EVENT_COST_MICROS: i64 = 1_000_000_000_000;

/// Checks an entry before it is stored: a model name, finite non-negative prices up to
/// [`MAX_PRICE_USD_PER_MTOK`], a real date (the table checks the date and the sign).
pub fn validate(p: &Price) -> Result<(), MeteringError> {
    let bad = |m: String| Err(MeteringError::Invalid(m));
    if p.model.trim().is_empty() {
        return bad("price: model must not be empty".into());
    }
    if p.model.len() > 256 || p.model.chars().any(char::is_control) {
        return bad("price: model must be at most 256 printable characters".into());
    }
    if p.tier
        .as_ref()
        .is_some_and(|t| t.len() > 64 || t.chars().any(char::is_control))
    {
        return bad("price: tier must be at most 64 printable characters".into());
    }
    for (field, v) in [
        ("input", Some(p.input)),
        ("output", Some(p.output)),
        ("reasoning", p.reasoning),
        ("cache_read", p.cache_read),
        ("cache_write", p.cache_write),
    ] {
        if let Some(v) = v
            && !(v.is_finite() && (0.0..=MAX_PRICE_USD_PER_MTOK).contains(&v))
        {
            return bad(format!(
                "price for {}: {field} must be a number of dollars per million tokens from 0 to {MAX_PRICE_USD_PER_MTOK}",
                p.model
            ));
        }
    }
    PriceTable::new(vec![p.clone()])?;
    Ok(())
}

pub struct Prices {
    table: RwLock<PriceTable>,
}

impl Prices {
    /// Inserts the configured entries the database does not have yet (runtime edits win), then
    /// loads the whole table.
    pub async fn load(store: &Store, configured: Vec<Price>) -> Result<Prices, MeteringError> {
        PriceTable::new(configured.clone())?;
        for p in &configured {
            validate(p)?;
            store.put_price(p, false).await?;
        }
        // An entry stored before prices were bounded is left out (and said so), never applied.
        let stored = store.load_prices().await?;
        let table = PriceTable::new(
            stored
                .into_iter()
                .filter(|p| match validate(p) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "metering: a stored price is out of bounds and ignored");
                        false
                    }
                })
                .collect(),
        )?;
        Ok(Prices {
            table: RwLock::new(table),
        })
    }

    /// A table that is not persisted (tests, benches).
    pub fn fixed(table: PriceTable) -> Prices {
        Prices {
            table: RwLock::new(table),
        }
    }

    pub fn snapshot(&self) -> PriceTable {
        self.table.read().map(|t| t.clone()).unwrap_or_default()
    }

    /// Adds an entry or replaces the one for the same model and day; persisted before it applies.
    pub async fn set(&self, store: &Store, p: Price) -> Result<Price, MeteringError> {
        validate(&p)?;
        let mut entries: Vec<Price> = self
            .snapshot()
            .entries()
            .filter(|e| !(e.model == p.model && e.effective_from == p.effective_from))
            .cloned()
            .collect();
        entries.push(p.clone());
        let table = PriceTable::new(entries)?;
        store.put_price(&p, true).await?;
        if let Ok(mut t) = self.table.write() {
            *t = table;
        }
        Ok(p)
    }

    /// Fills `cost`, `price_version`, `tier` and `unpriced`.
    pub fn price(&self, table: &PriceTable, r: &mut Record) {
        let day = r.ts_ms.div_euclid(time::DAY_MS);
        let tokens = Tokens {
            input: r.input as u64,
            output: r.output as u64,
            reasoning: r.reasoning as u64,
            cache_read: r.cache_read as u64,
            cache_write: r.cache_write as u64,
        };
        match table.cost(&r.model, day, &tokens) {
            Some(p) => {
                r.cost = p.cost.clamp(0, MAX_EVENT_COST_MICROS);
                r.price_version = p.version;
                r.tier = p.tier;
                r.unpriced = false;
            }
            None => {
                r.cost = 0;
                r.price_version = String::new();
                r.tier = "unpriced".into();
                r.unpriced = true;
            }
        }
    }

    /// The tier names ranked from the most expensive (by the highest output price among its models).
    pub fn tiers_by_price(&self) -> Vec<String> {
        let t = self.snapshot();
        let mut best: Vec<(String, f64)> = Vec::new();
        for p in t.entries() {
            let tier = p.tier();
            match best.iter_mut().find(|(n, _)| *n == tier) {
                Some((_, v)) => *v = v.max(p.output),
                None => best.push((tier, p.output)),
            }
        }
        best.sort_by(|a, b| b.1.total_cmp(&a.1));
        best.into_iter().map(|(n, _)| n).collect()
    }
}
