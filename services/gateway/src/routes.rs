//! The route table: every name a client may call (alias or model) → its ordered targets. Built from
//! the configuration at start-up and rebuilt whole when students are deployed or undeployed, then
//! swapped in atomically ([`arc_swap::ArcSwap`]): a request resolves its route with one lock-free
//! load and one hash probe, and keeps the table it started with until it ends.
use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use crate::{
    circuit::{Circuit, Circuits},
    config::{Config, ModelConfig, RoutingConfig},
    metrics::{Metrics, ServedSeries},
};

/// One target: a model and the provider circuit it shares with every route that names it.
#[derive(Debug)]
pub struct Target {
    pub model: ModelConfig,
    pub circuit: Arc<Circuit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteKind {
    Alias,
    Model,
    Student,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Alias => "alias",
            RouteKind::Model => "model",
            RouteKind::Student => "student",
        }
    }
}

/// What a requested name resolves to.
#[derive(Debug)]
pub struct Route {
    pub name: String,
    pub kind: RouteKind,
    pub targets: Arc<[Arc<Target>]>,
    pub routing: RoutingConfig,
    /// Per target (same order): the metric series its successes update, looked up on first use.
    served: Box<[OnceLock<ServedSeries>]>,
}

impl Route {
    pub fn new(
        name: String,
        kind: RouteKind,
        targets: Arc<[Arc<Target>]>,
        routing: RoutingConfig,
    ) -> Route {
        let served = targets.iter().map(|_| OnceLock::new()).collect();
        Route {
            name,
            kind,
            targets,
            routing,
            served,
        }
    }

    /// The metric series of target `idx` of this route (`None` past the last target).
    pub fn served(&self, idx: usize, metrics: &Metrics) -> Option<&ServedSeries> {
        let t = self.targets.get(idx)?;
        Some(
            self.served[idx]
                .get_or_init(|| metrics.served(&self.name, &t.model.provider, &t.model.name)),
        )
    }
}

/// A deployed student as the table sees it.
#[derive(Debug, Clone)]
pub struct StudentRoute {
    pub target: Arc<Target>,
    /// The alias it was added to, and whether first.
    pub alias: Option<(String, bool)>,
}

/// Every routable name.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: HashMap<String, Arc<Route>>,
}

impl RouteTable {
    /// The configuration's models and aliases, plus `students` (in deploy order: a later student put
    /// first on an alias goes before an earlier one).
    pub fn build(cfg: &Config, circuits: &Circuits, students: &[StudentRoute]) -> RouteTable {
        let mut targets: HashMap<&str, Arc<Target>> = HashMap::new();
        for m in cfg.models.values() {
            if let Some(c) = circuits.get(&m.name) {
                targets.insert(
                    &m.name,
                    Arc::new(Target {
                        model: m.clone(),
                        circuit: Arc::clone(c),
                    }),
                );
            }
        }
        let mut routes = HashMap::new();
        let mut alias_targets: HashMap<&str, Vec<Arc<Target>>> = cfg
            .aliases
            .values()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.targets
                        .iter()
                        .filter_map(|t| targets.get(t.as_str()).cloned())
                        .collect(),
                )
            })
            .collect();
        for s in students {
            if let Some((alias, first)) = &s.alias
                && let Some(list) = alias_targets.get_mut(alias.as_str())
            {
                if *first {
                    list.insert(0, Arc::clone(&s.target));
                } else {
                    list.push(Arc::clone(&s.target));
                }
            }
        }
        for a in cfg.aliases.values() {
            let list = alias_targets.remove(a.name.as_str()).unwrap_or_default();
            routes.insert(
                a.name.clone(),
                Arc::new(Route::new(
                    a.name.clone(),
                    RouteKind::Alias,
                    list.into(),
                    a.routing,
                )),
            );
        }
        for (name, t) in targets {
            routes.insert(
                name.to_owned(),
                Arc::new(Route::new(
                    name.to_owned(),
                    RouteKind::Model,
                    Arc::new([t]) as Arc<[_]>,
                    cfg.routing,
                )),
            );
        }
        for s in students {
            let name = s.target.model.name.clone();
            let targets: Arc<[Arc<Target>]> = Arc::new([Arc::clone(&s.target)]);
            routes.insert(
                name.clone(),
                Arc::new(Route::new(name, RouteKind::Student, targets, cfg.routing)),
            );
        }
        RouteTable { routes }
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Route>> {
        self.routes.get(name)
    }

    /// Every route, aliases first, then models, then students, each sorted by name.
    pub fn sorted(&self) -> Vec<&Arc<Route>> {
        let mut v: Vec<&Arc<Route>> = self.routes.values().collect();
        v.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        v
    }
}
