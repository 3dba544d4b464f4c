//! Choosing the parameter set: the optimizer's feasible candidates (failure targets met,
//! cheapest first), then the accuracy constraint checked with Simulate on the calibration
//! inputs. Per ring (`k`, `N`) the candidates not dominated in cost and noise form a
//! frontier along which accuracy mostly improves with cost; a binary search finds its
//! cheapest accurate point, the cheapest over all rings wins, and cheaper candidates the
//! binary searches passed over are checked afterwards. Each candidate is screened on one
//! simulated run of the calibration samples first; only those the screen cannot decide, and
//! the one chosen, are simulated with every run.

use std::collections::HashMap;

use ndarray::ArrayView2;

use super::figures::{capped, clear_predictions, simulate, CheaperSet, FIGURES_SEED, REPORT_RUNS};
use super::{CompileError, FheOptions, ParameterChoice, DEFAULT_P_ERROR};
use crate::model::{QuantModel, Reading};
use crate::params::cost::{Work, FITTED};
use crate::params::noise::NoiseModel;
use crate::params::optimizer::{candidates, failure_probabilities, Candidate, Demand, Targets};
use crate::params::{security, vetted, ParameterSet, PRECISIONS};

/// The chosen parameter set, with the tables the search built for it (if it did), so that
/// compilation does not build them again.
pub(super) struct Chosen {
    pub set: ParameterSet,
    pub tables: Option<QuantModel>,
    /// What a looser `max_disagreement` would buy (see [`Accuracy::trade_offs`]).
    pub cheaper: Vec<CheaperSet>,
}

impl From<ParameterSet> for Chosen {
    fn from(set: ParameterSet) -> Chosen {
        Chosen {
            set,
            tables: None,
            cheaper: Vec::new(),
        }
    }
}

/// The parameter set `options` asks for.
pub(super) fn choose(
    model: &QuantModel,
    calibration: ArrayView2<i64>,
    options: &FheOptions,
) -> Result<Chosen, CompileError> {
    let demand = model.demand();
    let targets = Targets {
        p_error: options.p_error,
        global_p_error: options.global_p_error,
    };
    let forced = match &options.parameters {
        ParameterChoice::Fixed(set) => Some((**set).clone()),
        ParameterChoice::Vetted(p) => Some(vetted(*p).ok_or(CompileError::NoVettedSet(*p))?),
        ParameterChoice::Optimized | ParameterChoice::VettedOnly => None,
    };
    if let Some(set) = forced {
        security::check_set(&set)?;
        if set.precision < 2 || set.precision >= set.resolution() {
            return Err(CompileError::BadPrecision {
                precision: set.precision,
                polynomial_size: set.params.polynomial_size.0,
            });
        }
        check_exact(&demand, &set)?;
        if set.last_layer_pbs.is_some() && !demand.outputs.reads_last_lookups_only {
            return Err(CompileError::SecondKeyNotApplicable { set: set.label() });
        }
        let noise = NoiseModel::of(&set);
        let failures = failure_probabilities(&demand, &noise, set.precision);
        return match worst(&failures) {
            (p, layer) if p > targets.p_error => Err(too_noisy(&targets, &demand, set, p, layer)),
            _ if targets.global_p_error.is_some_and(|g| failures.2 > g) => {
                Err(too_noisy(&targets, &demand, set, failures.2, None))
            }
            _ => Ok(set.into()),
        };
    }
    let vetted_only = options.parameters == ParameterChoice::VettedOnly;
    let found = candidates(&demand, &targets, vetted_only);
    if found.is_empty() {
        // Report how close the most robust vetted set comes.
        let (set, (p, layer)) = PRECISIONS
            .filter_map(vetted)
            .map(|s| {
                let noise = NoiseModel::of(&s);
                let w = worst(&failure_probabilities(&demand, &noise, s.precision));
                (s, w)
            })
            .min_by(|a, b| a.1 .0.total_cmp(&b.1 .0))
            .expect("vetted sets exist");
        return Err(too_noisy(&targets, &demand, set, p, layer));
    }
    // The same samples, runs and seed as the reported figures: the chosen set's reported
    // disagreement with exact Clear is the one the search accepted.
    let calibration = capped(calibration);
    if calibration.nrows() == 0 {
        return Ok(found[0].set.clone().into());
    }
    let mut accuracy = Accuracy::new(model, calibration, options.max_disagreement);
    // A looser target must never cost more than the default one: the search over the
    // default target's candidates runs too (its boxes are narrower, its margins wider, which
    // a loose target's widest boxes may lack), and the cheaper accurate choice wins.
    let strict = (targets.p_error > DEFAULT_P_ERROR)
        .then(|| {
            let strict = Targets {
                p_error: DEFAULT_P_ERROR,
                ..targets
            };
            candidates(&demand, &strict, vetted_only)
        })
        .filter(|found| !found.is_empty());
    // A choice the one-run screen found accurate is simulated in full before it is taken;
    // where the full runs find it inaccurate, the search runs again (every set it simulated
    // is remembered, so again costs little).
    let best = loop {
        let mut best = accuracy.cheapest(found.clone());
        if let Some(strict) = &strict {
            if let Ok(other) = accuracy.cheapest(strict.clone()) {
                if best.as_ref().map_or(true, |b| other.cost < b.cost) {
                    best = Ok(other);
                }
            }
        }
        let best = best?;
        if accuracy.confirm(&best.set) {
            break best;
        }
    };
    let cheaper = accuracy.trade_offs(best.cost, &demand.work);
    let tables = accuracy
        .tables
        .remove(&(best.set.precision, best.set.resolution()));
    Ok(Chosen {
        set: best.set,
        tables,
        cheaper,
    })
}

/// The worst failure probability and the declared layer (1-based) where it happens.
fn worst((layers, output, _): &(Vec<f64>, f64, f64)) -> (f64, Option<usize>) {
    layers
        .iter()
        .enumerate()
        .map(|(i, &p)| (p, Some(i)))
        .fold((*output, None), |a, b| if b.0 > a.0 { b } else { a })
}

fn too_noisy(
    targets: &Targets,
    demand: &Demand,
    set: ParameterSet,
    best: f64,
    lookup: Option<usize>,
) -> CompileError {
    CompileError::TooNoisy {
        p_error: targets.p_error,
        global: targets.global_p_error,
        best_set: set.name,
        best,
        layer: lookup.map(|i| demand.lookups[i].layer + 1),
    }
}

/// Every `exact` lookup must fit the set's boxes, or spread each value over positions of its
/// own (the failure probabilities then bound a wrong reading).
fn check_exact(demand: &Demand, set: &ParameterSet) -> Result<(), CompileError> {
    let polynomial_size = set.params.polynomial_size.0;
    match demand.lookups.iter().find(|l| {
        l.must_be_exact
            && l.exact_bits > set.precision
            && l.positions_per_value(polynomial_size, set.precision) < 2
    }) {
        Some(l) => Err(CompileError::PrecisionTooLow {
            layer: l.layer + 1,
            needed: l.exact_bits,
            set: set.name.clone(),
            precision: set.precision,
        }),
        None => Ok(()),
    }
}

/// The accuracy check: Simulate's predictions on calibration inputs against exact Clear.
struct Accuracy<'a> {
    model: &'a QuantModel,
    calibration: ArrayView2<'a, i64>,
    reference: Vec<usize>,
    max_disagreement: f64,
    tables: HashMap<(u32, u32), QuantModel>,
    /// Every set simulated so far, by label.
    checked: HashMap<String, Checked>,
    /// The candidates found inaccurate so far (input key, noise per layer in accumulator
    /// values): a candidate with the same input key and at least as much noise at every
    /// layer is taken to be inaccurate too, and is not simulated.
    inaccurate: Vec<(crate::params::InputKey, Vec<f64>)>,
}

/// A set simulated by the search.
struct Checked {
    set: ParameterSet,
    /// The simulated fraction of predictions that differ from exact Clear.
    disagreement: f64,
    /// Whether it comes from all [`REPORT_RUNS`] (else from the one-run screen).
    full: bool,
}

/// Most trade-offs the plan reports (see [`Accuracy::trade_offs`]).
const TRADE_OFFS: usize = 3;

/// Most candidates cheaper than the binary searches' choice checked one by one, cheapest
/// first, after them: a frontier over several layers' noise is not ordered by accuracy.
const EXTRA_CHECKS: usize = 40;

impl<'a> Accuracy<'a> {
    fn new(model: &'a QuantModel, calibration: ArrayView2<'a, i64>, max: f64) -> Accuracy<'a> {
        Accuracy {
            model,
            calibration,
            reference: clear_predictions(model, calibration),
            max_disagreement: max,
            tables: HashMap::new(),
            checked: HashMap::new(),
            inaccurate: Vec::new(),
        }
    }

    /// Whether `c` is accurate: simulated, unless an inaccurate candidate with the same input
    /// key had no more noise at any layer, counted in accumulator values.
    fn accurate(&mut self, c: &Candidate) -> bool {
        let noise = self.value_noise(c);
        let quieter = |(key, bad): &(crate::params::InputKey, Vec<f64>)| {
            *key == c.set.inputs && bad.iter().zip(&noise).all(|(b, x)| b <= x)
        };
        if self.inaccurate.iter().any(quieter) {
            return false;
        }
        let ok = self.disagreement(&c.set) <= self.max_disagreement;
        if !ok {
            self.inaccurate.push((c.set.inputs, noise));
        }
        ok
    }

    /// Records `c` as inaccurate.
    fn reject(&mut self, c: &Candidate) {
        let noise = self.value_noise(c);
        self.inaccurate.push((c.set.inputs, noise));
    }

    /// The noise before each lookup layer in accumulator values: its standard deviation in
    /// table positions over the fewest positions any value of the layer gets (a whole box
    /// where the reading is exact).
    fn value_noise(&mut self, c: &Candidate) -> Vec<f64> {
        let tables = self.tables_for(&c.set);
        let per_value: Vec<f64> = tables
            .layers()
            .iter()
            .filter_map(|stage| stage.lookup())
            .map(|l| {
                let e = l.encoding();
                if e.exact {
                    2f64.powi(c.set.resolution() as i32 - c.set.precision as i32)
                } else {
                    l.positions_per_value().0
                }
            })
            .collect();
        c.sigma_positions
            .iter()
            .zip(&per_value)
            .map(|(s, v)| s / v)
            .collect()
    }

    /// The model's tables as `set` reads them (built once per precision and resolution).
    fn tables_for(&mut self, set: &ParameterSet) -> &QuantModel {
        let key = (set.precision, set.resolution());
        self.tables.entry(key).or_insert_with(|| {
            self.model.with_reading(Reading::Table {
                precision: key.0,
                resolution: key.1,
            })
        })
    }

    /// The simulated fraction of predictions that differ from exact Clear under `set`.
    ///
    /// Screened first on one run over the calibration samples (an eighth of the full
    /// simulation): `K` differing predictions of `n` decide alone where they are far from
    /// the bound `b = n · max_disagreement` — above `b + 3√b + 1` (were the set accurate, the
    /// count of independent samples would have mean at most `b` and variance at most `b`) or
    /// below `b − 3√(K + 1)`. Otherwise all [`REPORT_RUNS`] runs decide, as the figures
    /// report them; a set accepted by the screen is confirmed with all runs before it is
    /// chosen ([`confirm`](Self::confirm)).
    fn disagreement(&mut self, set: &ParameterSet) -> f64 {
        if let Some(c) = self.checked.get(&set.label()) {
            return c.disagreement;
        }
        let n = self.calibration.nrows() as f64;
        let one = self.simulated_disagreement(set, 1);
        let (count, bound) = (one * n, self.max_disagreement * n);
        let clear_cut = count > bound + 3.0 * bound.max(1.0).sqrt() + 1.0
            || count + 3.0 * (count + 1.0).sqrt() < bound;
        let (disagreement, full) = if clear_cut {
            (one, false)
        } else {
            (self.simulated_disagreement(set, REPORT_RUNS), true)
        };
        self.checked.insert(
            set.label(),
            Checked {
                set: set.clone(),
                disagreement,
                full,
            },
        );
        disagreement
    }

    /// Whether `set`, simulated with all [`REPORT_RUNS`] runs (as the reported figures are),
    /// meets the disagreement bound; remembers the full figure.
    fn confirm(&mut self, set: &ParameterSet) -> bool {
        self.disagreement(set);
        let label = set.label();
        if !self.checked[&label].full {
            let d = self.simulated_disagreement(set, REPORT_RUNS);
            if let Some(c) = self.checked.get_mut(&label) {
                c.disagreement = d;
                c.full = true;
            }
        }
        self.checked[&label].disagreement <= self.max_disagreement
    }

    /// What a looser `max_disagreement` would buy: of the simulated sets too inaccurate for
    /// it and cheaper than `limit` seconds (by the cost model, for `work`), those no cheaper
    /// one beats on disagreement, thinned to at most [`TRADE_OFFS`], each at most 0.8 times
    /// the time of the one before it (starting from `limit`); most expensive first.
    fn trade_offs(&self, limit: f64, work: &Work) -> Vec<CheaperSet> {
        let mut cheaper: Vec<CheaperSet> = self
            .checked
            .values()
            .filter(|c| c.disagreement > self.max_disagreement)
            .map(|c| CheaperSet {
                label: c.set.label(),
                modeled_seconds: FITTED.inference_seconds(&c.set, work),
                disagreement: c.disagreement,
            })
            .filter(|c| c.modeled_seconds < limit)
            .collect();
        // By cost, then disagreement, then label: the same list whatever the map's order.
        cheaper.sort_by(|a, b| {
            a.modeled_seconds
                .total_cmp(&b.modeled_seconds)
                .then(a.disagreement.total_cmp(&b.disagreement))
                .then_with(|| a.label.cmp(&b.label))
        });
        // The frontier: cheapest first, each less off Clear than every cheaper one.
        let mut frontier: Vec<CheaperSet> = Vec::new();
        for c in cheaper {
            if frontier
                .last()
                .is_none_or(|f| c.disagreement < f.disagreement)
            {
                frontier.push(c);
            }
        }
        let mut kept = Vec::new();
        let mut last = limit;
        for c in frontier.into_iter().rev() {
            if kept.len() < TRADE_OFFS && c.modeled_seconds <= 0.8 * last {
                last = c.modeled_seconds;
                kept.push(c);
            }
        }
        kept
    }

    /// The fraction of predictions that differ from exact Clear under `set` over `runs` runs
    /// of each calibration sample (the first `runs` of the reported figures' runs).
    fn simulated_disagreement(&mut self, set: &ParameterSet, runs: usize) -> f64 {
        self.tables_for(set);
        let tables = &self.tables[&(set.precision, set.resolution())];
        let noise = tables.simulation_noise(&NoiseModel::of(set));
        let sim = simulate(
            tables,
            &noise,
            self.calibration,
            &[&self.reference],
            runs,
            FIGURES_SEED,
        );
        sim.flips.iter().map(|f| f[0]).sum::<f64>() / sim.flips.len().max(1) as f64
    }

    /// The cheapest accurate candidate (`found` is sorted by cost).
    fn cheapest(&mut self, found: Vec<Candidate>) -> Result<Candidate, CompileError> {
        let all = found.clone();
        let mut rings: Vec<Vec<Candidate>> = Vec::new();
        for c in found {
            let ring = (
                c.set.params.glwe_dimension.0,
                c.set.params.polynomial_size.0,
            );
            let group = match rings.iter_mut().find(|g| {
                let p = &g[0].set.params;
                (p.glwe_dimension.0, p.polynomial_size.0) == ring
            }) {
                Some(g) => g,
                None => {
                    rings.push(Vec::new());
                    rings.last_mut().expect("just pushed")
                }
            };
            // Keep the frontier: a candidate no cheaper one beats on every layer's noise.
            let dominated = group.iter().any(|kept| {
                kept.sigma_positions
                    .iter()
                    .zip(&c.sigma_positions)
                    .all(|(a, b)| a <= b)
            });
            if !dominated {
                group.push(c);
            }
        }
        rings.sort_by(|a, b| a[0].cost.total_cmp(&b[0].cost));
        let mut best: Option<Candidate> = None;
        let mut closest: Option<(f64, ParameterSet)> = None;
        for frontier in &rings {
            let limit = best.as_ref().map_or(f64::INFINITY, |b| b.cost);
            let len = frontier.iter().take_while(|c| c.cost < limit).count();
            // Smallest index whose candidate is accurate (accuracy grows along the frontier).
            let (mut lo, mut hi) = (0, len);
            let mut hit = None;
            while lo < hi {
                let mid = (lo + hi) / 2;
                let d = self.disagreement(&frontier[mid].set);
                if closest.as_ref().is_none_or(|c| d < c.0) {
                    closest = Some((d, frontier[mid].set.clone()));
                }
                if d <= self.max_disagreement {
                    hit = Some(mid);
                    hi = mid;
                } else {
                    self.reject(&frontier[mid]);
                    lo = mid + 1;
                }
            }
            if let Some(i) = hit {
                best = Some(frontier[i].clone());
            }
        }
        if let Some(limit) = best.as_ref().map(|b| b.cost) {
            // Candidates cheaper than the choice, cheapest first, skipping those with at
            // least an inaccurate one's noise at every layer (a frontier over several
            // layers' noise is not ordered by accuracy, so the binary searches can miss).
            let mut cheaper: Vec<Candidate> = all
                .into_iter()
                .filter(|c| c.cost < limit && !self.checked.contains_key(&c.set.label()))
                .collect();
            cheaper.sort_by(|a, b| a.cost.total_cmp(&b.cost));
            let mut simulated = 0;
            for c in cheaper {
                if simulated == EXTRA_CHECKS {
                    break;
                }
                let known = self.checked.len();
                let ok = self.accurate(&c);
                simulated += self.checked.len() - known;
                if ok {
                    best = Some(c);
                    break;
                }
            }
        }
        match (best, closest) {
            (Some(b), _) => Ok(b),
            (None, Some((d, set))) => Err(CompileError::Inaccurate {
                max: self.max_disagreement,
                best: d,
                set: set.name,
            }),
            (None, None) => unreachable!("the frontier holds at least one candidate"),
        }
    }
}
