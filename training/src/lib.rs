//! Student model families, the trainer, evaluation and the bandit selector, built on burn.
//! This crate never talks to the network or a database: it trains and evaluates on data it is handed.
//! (Empty until the distillation issue lands; the workspace reserves its place.)
