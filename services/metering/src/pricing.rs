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

pub struct Prices {
    table: RwLock<PriceTable>,
}

impl Prices {
    /// Inserts the configured entries the database does not have yet (runtime edits win), then
    /// loads the whole table.
    pub async fn load(store: &Store, configured: Vec<Price>) -> Result<Prices, MeteringError> {
        PriceTable::new(configured.clone())?;
        for p in &configured {
            store.put_price(p, false).await?;
        }
        let table = PriceTable::new(store.load_prices().await?)?;
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
                r.cost = p.cost;
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
