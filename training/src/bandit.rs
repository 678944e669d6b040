//! A neural contextual bandit: Neural-Linear with Thompson sampling (Riquelme, Tucker & Snoek, "Deep
//! Bayesian Bandits Showdown", ICLR 2018, where it was the most robust method at small data).
//!
//! A small network (trained with burn) learns a representation `z = φ(x)` of an input `x` — for the
//! selector, the features of a (task, student class and size) pair; for a learned route, of a
//! (request, candidate) pair — by regressing the observed outcomes. On top of `z`, one Bayesian linear
//! regression per outcome (accuracy, latency, cost, …) with a normal–inverse-gamma prior gives a
//! calibrated posterior: [`NeuralLinear::predict`] returns its mean and spread, and
//! [`NeuralLinear::sample`] draws one plausible weight vector per outcome and scores every candidate
//! with it (Thompson sampling: pick the best candidate under the draw, so uncertain candidates are
//! tried in proportion to their chance of being best).
//!
//! The network is refitted from all observations ([`NeuralLinear::fit`]); the linear posteriors are
//! exact given `z`, so an observation added with [`NeuralLinear::observe`] updates them at once. The
//! whole state is the configuration and the observations: a bandit rebuilt from them with the same seed
//! is the same bandit, which is how it persists.
use burn::module::AutodiffModule;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Gamma, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainingError};

/// Sizes and priors of a [`NeuralLinear`] bandit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BanditConfig {
    /// Length of every input vector.
    pub inputs: usize,
    /// Number of outcomes observed per input (each gets its own posterior).
    pub outcomes: usize,
    /// Hidden width of the representation network.
    pub hidden: usize,
    /// Width of the representation `z` the linear posteriors read.
    pub features: usize,
    /// Prior precision of the linear weights (ridge strength), per unit of noise variance.
    pub prior_precision: f64,
    /// Normal–inverse-gamma prior on the noise variance: shape and scale.
    pub noise_shape: f64,
    pub noise_scale: f64,
    /// Passes over the observations per [`NeuralLinear::fit`].
    pub epochs: usize,
    pub learning_rate: f64,
    pub batch_size: usize,
    pub seed: u64,
}

impl BanditConfig {
    pub fn new(inputs: usize, outcomes: usize) -> BanditConfig {
        BanditConfig {
            inputs,
            outcomes,
            hidden: 32,
            features: 16,
            prior_precision: 1.0,
            noise_shape: 3.0,
            noise_scale: 3.0,
            epochs: 60,
            learning_rate: 0.01,
            batch_size: 32,
            seed: 7,
        }
    }
}

/// One observed input and its outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub input: Vec<f32>,
    pub outcomes: Vec<f64>,
}

/// The representation network `φ` with one linear head per outcome (the heads exist only to train
/// `φ`; predictions come from the Bayesian posteriors on `φ`'s output).
#[derive(Module, Debug)]
struct Net<B: Backend> {
    hidden: Linear<B>,
    features: Linear<B>,
    heads: Linear<B>,
    relu: Relu,
}

impl<B: Backend> Net<B> {
    fn new(cfg: &BanditConfig, device: &B::Device) -> Net<B> {
        Net {
            hidden: LinearConfig::new(cfg.inputs, cfg.hidden).init(device),
            features: LinearConfig::new(cfg.hidden, cfg.features).init(device),
            heads: LinearConfig::new(cfg.features, cfg.outcomes).init(device),
            relu: Relu::new(),
        }
    }

    fn represent(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.relu.forward(
            self.features
                .forward(self.relu.forward(self.hidden.forward(x))),
        )
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.heads.forward(self.represent(x))
    }
}

/// Bayesian linear regression `y = wᵀz + ε`, `ε ~ N(0, σ²)`, with prior `w ~ N(0, σ²/λ · I)` and
/// `σ² ~ InvGamma(a₀, b₀)`: the posterior is normal–inverse-gamma, kept as sufficient statistics.
#[derive(Debug, Clone)]
struct Posterior {
    d: usize,
    /// Λ = λI + Σ zzᵀ (row-major d×d) and Σ z·y, Σ y², n.
    precision: Vec<f64>,
    zy: Vec<f64>,
    yy: f64,
    n: f64,
    a0: f64,
    b0: f64,
    /// Derived: the Cholesky factor L of Λ (lower, row-major), the mean μ = Λ⁻¹ Σ z·y, and b.
    chol: Vec<f64>,
    mean: Vec<f64>,
    b: f64,
}

impl Posterior {
    fn new(d: usize, lambda: f64, a0: f64, b0: f64) -> Posterior {
        let mut precision = vec![0.0; d * d];
        for i in 0..d {
            precision[i * d + i] = lambda;
        }
        let mut p = Posterior {
            d,
            precision,
            zy: vec![0.0; d],
            yy: 0.0,
            n: 0.0,
            a0,
            b0,
            chol: Vec::new(),
            mean: vec![0.0; d],
            b: b0,
        };
        p.solve();
        p
    }

    fn add(&mut self, z: &[f64], y: f64) {
        let d = self.d;
        for i in 0..d {
            for j in 0..d {
                self.precision[i * d + j] += z[i] * z[j];
            }
            self.zy[i] += z[i] * y;
        }
        self.yy += y * y;
        self.n += 1.0;
    }

    /// Recomputes L, μ and b from the statistics.
    fn solve(&mut self) {
        self.chol = cholesky(&self.precision, self.d);
        self.mean = cho_solve(&self.chol, self.d, &self.zy);
        let mu_lambda_mu: f64 = self.mean.iter().zip(&self.zy).map(|(m, zy)| m * zy).sum();
        self.b = self.b0 + 0.5 * (self.yy - mu_lambda_mu).max(0.0);
    }

    fn a(&self) -> f64 {
        self.a0 + 0.5 * self.n
    }

    /// Posterior predictive mean and standard deviation at `z` (Student-t, its scale).
    fn predict(&self, z: &[f64]) -> (f64, f64) {
        let mean: f64 = self.mean.iter().zip(z).map(|(m, v)| m * v).sum();
        // zᵀ Λ⁻¹ z = |L⁻¹ z|².
        let u = forward_sub(&self.chol, self.d, z);
        let quad: f64 = u.iter().map(|v| v * v).sum();
        let noise = self.b / (self.a() - 1.0).max(0.5);
        (mean, (noise * (1.0 + quad)).sqrt())
    }

    /// One draw of the weights: σ² ~ InvGamma(a, b), w ~ N(μ, σ² Λ⁻¹).
    fn sample(&self, rng: &mut StdRng) -> Vec<f64> {
        let sigma2 = match Gamma::new(self.a(), 1.0 / self.b.max(1e-12)) {
            Ok(g) => 1.0 / g.sample(rng).max(1e-12),
            Err(_) => self.b / self.a(),
        };
        let eps: Vec<f64> = (0..self.d).map(|_| StandardNormal.sample(rng)).collect();
        // w = μ + σ L⁻ᵀ ε has covariance σ² (L Lᵀ)⁻¹ = σ² Λ⁻¹.
        let v = back_sub_transposed(&self.chol, self.d, &eps);
        self.mean
            .iter()
            .zip(v)
            .map(|(m, v)| m + sigma2.sqrt() * v)
            .collect()
    }
}

/// Cholesky factor of a symmetric positive-definite matrix (row-major). Λ = λI + ZᵀZ with λ > 0 is
/// always positive definite; tiny pivots from rounding are clamped.
fn cholesky(a: &[f64], d: usize) -> Vec<f64> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
            if i == j {
                l[i * d + i] = (a[i * d + i] - s).max(1e-12).sqrt();
            } else {
                l[i * d + j] = (a[i * d + j] - s) / l[j * d + j];
            }
        }
    }
    l
}

/// Solves L u = b.
fn forward_sub(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut u = vec![0.0; d];
    for i in 0..d {
        let s: f64 = (0..i).map(|k| l[i * d + k] * u[k]).sum();
        u[i] = (b[i] - s) / l[i * d + i];
    }
    u
}

/// Solves Lᵀ x = b.
fn back_sub_transposed(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0; d];
    for i in (0..d).rev() {
        let s: f64 = (i + 1..d).map(|k| l[k * d + i] * x[k]).sum();
        x[i] = (b[i] - s) / l[i * d + i];
    }
    x
}

/// Solves (L Lᵀ) x = b.
fn cho_solve(l: &[f64], d: usize, b: &[f64]) -> Vec<f64> {
    back_sub_transposed(l, d, &forward_sub(l, d, b))
}

/// Per-outcome standardisation, so one learning rate and one prior fit outcomes of any scale.
#[derive(Debug, Clone)]
struct Scale {
    mean: Vec<f64>,
    std: Vec<f64>,
}

impl Scale {
    fn of(obs: &[Observation], outcomes: usize) -> Scale {
        let n = obs.len().max(1) as f64;
        let mean: Vec<f64> = (0..outcomes)
            .map(|k| obs.iter().map(|o| o.outcomes[k]).sum::<f64>() / n)
            .collect();
        let std = (0..outcomes)
            .map(|k| {
                let v = obs
                    .iter()
                    .map(|o| (o.outcomes[k] - mean[k]).powi(2))
                    .sum::<f64>()
                    / n;
                if v > 1e-12 { v.sqrt() } else { 1.0 }
            })
            .collect();
        Scale { mean, std }
    }

    /// Outcome `k` in standard units.
    fn standard(&self, k: usize, y: f64) -> f64 {
        (y - self.mean[k]) / self.std[k]
    }

    /// Outcome `k` back in its own units.
    fn original(&self, k: usize, v: f64) -> f64 {
        self.mean[k] + v * self.std[k]
    }
}

/// `rows` (each `width` long) as a `[rows, width]` tensor.
fn rows_tensor<'a, T: Backend>(
    rows: impl Iterator<Item = &'a Vec<f32>>,
    width: usize,
    device: &T::Device,
) -> Tensor<T, 2> {
    let flat: Vec<f32> = rows.flat_map(|r| r.iter().copied()).collect();
    let n = flat.len() / width.max(1);
    Tensor::from_data(TensorData::new(flat, [n, width]), device)
}

/// The bandit. `B` is an autodiff backend (the representation trains on it).
pub struct NeuralLinear<B: AutodiffBackend> {
    cfg: BanditConfig,
    device: B::Device,
    net: Net<B>,
    observations: Vec<Observation>,
    scale: Scale,
    posteriors: Vec<Posterior>,
}

impl<B: AutodiffBackend> NeuralLinear<B> {
    /// An untrained bandit: its predictions are the prior (every candidate equally uncertain).
    pub fn new(cfg: BanditConfig, device: &B::Device) -> Result<NeuralLinear<B>> {
        if cfg.inputs == 0 || cfg.outcomes == 0 || cfg.features == 0 || cfg.hidden == 0 {
            return Err(TrainingError::Config(
                "a bandit needs at least one input, one outcome, one hidden unit and one feature"
                    .into(),
            ));
        }
        let net = crate::rng::init_seeded::<B, _>(device, cfg.seed, || Ok(Net::new(&cfg, device)))?;
        let posteriors = (0..cfg.outcomes)
            .map(|_| {
                Posterior::new(
                    cfg.features,
                    cfg.prior_precision,
                    cfg.noise_shape,
                    cfg.noise_scale,
                )
            })
            .collect();
        Ok(NeuralLinear {
            scale: Scale {
                mean: vec![0.0; cfg.outcomes],
                std: vec![1.0; cfg.outcomes],
            },
            cfg,
            device: device.clone(),
            net,
            observations: Vec::new(),
            posteriors,
        })
    }

    /// A bandit fitted to `observations` (how a persisted bandit is restored).
    pub fn rebuild(
        cfg: BanditConfig,
        device: &B::Device,
        observations: Vec<Observation>,
    ) -> Result<NeuralLinear<B>> {
        let mut b = NeuralLinear::new(cfg, device)?;
        for o in &observations {
            b.check(o)?;
        }
        b.observations = observations;
        b.fit();
        Ok(b)
    }

    pub fn config(&self) -> &BanditConfig {
        &self.cfg
    }

    pub fn observations(&self) -> &[Observation] {
        &self.observations
    }

    fn check(&self, o: &Observation) -> Result<()> {
        if o.input.len() != self.cfg.inputs || o.outcomes.len() != self.cfg.outcomes {
            return Err(TrainingError::Config(format!(
                "an observation has {} inputs and {} outcomes; the bandit takes {} and {}",
                o.input.len(),
                o.outcomes.len(),
                self.cfg.inputs,
                self.cfg.outcomes
            )));
        }
        if o.input.iter().any(|v| !v.is_finite()) || o.outcomes.iter().any(|v| !v.is_finite()) {
            return Err(TrainingError::Config(
                "an observation holds a value that is not finite".into(),
            ));
        }
        Ok(())
    }

    /// Adds an observation to the linear posteriors at once (the representation is refitted by
    /// [`NeuralLinear::fit`]).
    pub fn observe(&mut self, o: Observation) -> Result<()> {
        self.check(&o)?;
        let z = self.represent(std::iter::once(&o.input));
        if let Some(z) = z.first() {
            for (k, p) in self.posteriors.iter_mut().enumerate() {
                p.add(z, self.scale.standard(k, o.outcomes[k]));
                p.solve();
            }
        }
        self.observations.push(o);
        Ok(())
    }

    /// Refits the representation on every observation (a fixed number of epochs, seeded), then the
    /// posteriors on the new representation.
    pub fn fit(&mut self) {
        self.scale = Scale::of(&self.observations, self.cfg.outcomes);
        let n = self.observations.len();
        if n > 0 {
            let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ n as u64);
            let mut optim = AdamConfig::new().init();
            let mut net = self.net.clone();
            let mut order: Vec<usize> = (0..n).collect();
            for _ in 0..self.cfg.epochs {
                for i in (1..n).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                for batch in order.chunks(self.cfg.batch_size.max(1)) {
                    let x = rows_tensor::<B>(
                        batch.iter().map(|&i| &self.observations[i].input),
                        self.cfg.inputs,
                        &self.device,
                    );
                    let y: Vec<f32> = batch
                        .iter()
                        .flat_map(|&i| {
                            let o = &self.observations[i];
                            (0..self.cfg.outcomes)
                                .map(|k| self.scale.standard(k, o.outcomes[k]) as f32)
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    let y = Tensor::<B, 2>::from_data(
                        TensorData::new(y, [batch.len(), self.cfg.outcomes]),
                        &self.device,
                    );
                    let loss = (net.forward(x) - y).powi_scalar(2).mean();
                    let grads = GradientsParams::from_grads(loss.backward(), &net);
                    net = optim.step(self.cfg.learning_rate, net, grads);
                }
            }
            self.net = net;
        }
        let zs = self.represent(self.observations.iter().map(|o| &o.input));
        self.posteriors = (0..self.cfg.outcomes)
            .map(|k| {
                let mut p = Posterior::new(
                    self.cfg.features,
                    self.cfg.prior_precision,
                    self.cfg.noise_shape,
                    self.cfg.noise_scale,
                );
                for (z, o) in zs.iter().zip(&self.observations) {
                    p.add(z, self.scale.standard(k, o.outcomes[k]));
                }
                p.solve();
                p
            })
            .collect();
    }

    /// `z = φ(x)` for each input, on the inference backend.
    fn represent<'a>(&self, inputs: impl ExactSizeIterator<Item = &'a Vec<f32>>) -> Vec<Vec<f64>> {
        if inputs.len() == 0 {
            return Vec::new();
        }
        let x = rows_tensor::<B::InnerBackend>(inputs, self.cfg.inputs, &self.device);
        let z = self.net.valid().represent(x);
        let values = z
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap_or_default();
        values
            .chunks(self.cfg.features)
            .map(|c| c.iter().map(|&v| f64::from(v)).collect())
            .collect()
    }

    /// Posterior mean and standard deviation of every outcome, per input, in the outcomes' units.
    pub fn predict(&self, inputs: &[Vec<f32>]) -> Vec<Vec<(f64, f64)>> {
        self.represent(inputs.iter())
            .iter()
            .map(|z| {
                self.posteriors
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        let (m, s) = p.predict(z);
                        (self.scale.original(k, m), s * self.scale.std[k])
                    })
                    .collect()
            })
            .collect()
    }

    /// One Thompson draw: a weight vector per outcome, applied to every input (so the inputs are
    /// compared under the same plausible world). Outcomes in their own units.
    pub fn sample(&self, inputs: &[Vec<f32>], rng: &mut StdRng) -> Vec<Vec<f64>> {
        let weights: Vec<Vec<f64>> = self.posteriors.iter().map(|p| p.sample(rng)).collect();
        self.represent(inputs.iter())
            .iter()
            .map(|z| {
                weights
                    .iter()
                    .enumerate()
                    .map(|(k, w)| {
                        let v: f64 = w.iter().zip(z).map(|(w, z)| w * z).sum();
                        self.scale.original(k, v)
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::backend::Training;

    #[test]
    fn the_linear_posterior_recovers_known_weights_and_shrinks() {
        let mut p = Posterior::new(2, 1.0, 3.0, 3.0);
        let (m0, s0) = p.predict(&[1.0, 0.0]);
        assert_eq!(m0, 0.0);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..500 {
            let z = [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)];
            let noise: f64 = StandardNormal.sample(&mut rng);
            p.add(&z, 2.0 * z[0] - 1.0 * z[1] + 0.1 * noise);
        }
        p.solve();
        assert!(
            (p.mean[0] - 2.0).abs() < 0.05 && (p.mean[1] + 1.0).abs() < 0.05,
            "{:?}",
            p.mean
        );
        let (_, s1) = p.predict(&[1.0, 0.0]);
        assert!(s1 < s0 / 5.0, "the spread shrinks with data: {s0} -> {s1}");
        let draws: Vec<f64> = (0..200).map(|_| p.sample(&mut rng)[0]).collect();
        let mean = draws.iter().sum::<f64>() / 200.0;
        assert!(
            (mean - 2.0).abs() < 0.05,
            "draws centre on the posterior mean: {mean}"
        );
        assert!(draws.iter().any(|d| (d - mean).abs() > 1e-4), "draws vary");
    }

    #[test]
    fn cholesky_solves_a_known_system() {
        let a = [4.0, 2.0, 2.0, 3.0];
        let l = cholesky(&a, 2);
        let x = cho_solve(&l, 2, &[2.0, 1.0]);
        assert!(
            (4.0 * x[0] + 2.0 * x[1] - 2.0).abs() < 1e-9
                && (2.0 * x[0] + 3.0 * x[1] - 1.0).abs() < 1e-9
        );
    }

    /// Four arms; the context decides which is best (arm k wins where feature k is largest), a
    /// nonlinear rule a linear model on the raw input could not express per arm.
    fn reward(x: &[f32], arm: usize) -> f64 {
        let best = (0..4).max_by(|&a, &b| x[a].total_cmp(&x[b])).unwrap_or(0);
        if arm == best {
            1.0
        } else {
            0.2 * f64::from(x[arm])
        }
    }

    fn input(x: &[f32], arm: usize) -> Vec<f32> {
        let mut v = x.to_vec();
        v.extend((0..4).map(|k| if k == arm { 1.0 } else { 0.0 }));
        v
    }

    #[test]
    fn thompson_sampling_learns_which_arm_wins_where_with_far_less_regret_than_chance() {
        let device = crate::backend::device();
        let mut cfg = BanditConfig::new(8, 1);
        cfg.epochs = 100;
        let mut bandit = NeuralLinear::<Training>::new(cfg, &device).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let (mut regret, mut random_regret) = (0.0, 0.0);
        let rounds = 400;
        let mut late_regret = 0.0;
        for t in 0..rounds {
            let x: Vec<f32> = (0..4).map(|_| rng.random_range(0.0..1.0)).collect();
            let candidates: Vec<Vec<f32>> = (0..4).map(|a| input(&x, a)).collect();
            let draw = bandit.sample(&candidates, &mut rng);
            let arm = (0..4)
                .max_by(|&a, &b| draw[a][0].total_cmp(&draw[b][0]))
                .unwrap();
            let best = (0..4).map(|a| reward(&x, a)).fold(f64::MIN, f64::max);
            let r = reward(&x, arm);
            regret += best - r;
            if t >= rounds - 60 {
                late_regret += best - r;
            }
            random_regret += best - (0..4).map(|a| reward(&x, a)).sum::<f64>() / 4.0;
            bandit
                .observe(Observation {
                    input: candidates[arm].clone(),
                    outcomes: vec![r],
                })
                .unwrap();
            if (t + 1) % 20 == 0 {
                bandit.fit();
            }
        }
        assert!(
            regret < 0.5 * random_regret,
            "regret {regret:.1} vs random {random_regret:.1}"
        );
        let random_late = random_regret / rounds as f64 * 60.0;
        assert!(
            late_regret < 0.35 * random_late,
            "late regret {late_regret:.1} vs random {random_late:.1}"
        );
    }

    #[test]
    fn a_bandit_rebuilt_from_its_observations_predicts_the_same() {
        let device = crate::backend::device();
        let cfg = BanditConfig::new(2, 2);
        let obs: Vec<Observation> = (0..30)
            .map(|i| {
                let x = i as f32 / 30.0;
                Observation {
                    input: vec![x, 1.0 - x],
                    outcomes: vec![f64::from(x) * 3.0, 100.0 - f64::from(x) * 50.0],
                }
            })
            .collect();
        let a = NeuralLinear::<Training>::rebuild(cfg.clone(), &device, obs.clone()).unwrap();
        let b = NeuralLinear::<Training>::rebuild(cfg, &device, obs).unwrap();
        let q = vec![vec![0.5, 0.5]];
        assert_eq!(a.predict(&q), b.predict(&q));
        let (m, s) = a.predict(&q)[0][1];
        assert!(
            (m - 75.0).abs() < 10.0 && s > 0.0,
            "{m} ± {s}: outcomes keep their units"
        );
        assert!(
            NeuralLinear::<Training>::rebuild(
                BanditConfig::new(3, 1),
                &crate::backend::device(),
                vec![Observation {
                    input: vec![1.0],
                    outcomes: vec![1.0]
                }]
            )
            .is_err()
        );
    }
}
