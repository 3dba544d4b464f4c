//! The wrapping placement (see [`Wrap`]): on the shipped networks, at the resolutions the
//! optimizer picks, every noise-free reading is Clear's, a reading anywhere within the
//! margins of a group's extreme accumulators still is, and wrapping groups really spread
//! further than the half torus allows.

use super::*;
use crate::datasets::{digits_cnn_weights, digits_seed_weights, mnist_card_weights};
use crate::datasets::{Card, Cnn, Seed};

fn shipped() -> Vec<(&'static str, QuantModel)> {
    vec![
        (
            "seed",
            QuantModel::from_tensors(Seed::architecture(), &digits_seed_weights().unwrap())
                .unwrap(),
        ),
        (
            "card",
            QuantModel::from_tensors(Card::architecture(), &mnist_card_weights().unwrap()).unwrap(),
        ),
        (
            "cnn",
            QuantModel::from_tensors(Cnn::architecture(), &digits_cnn_weights().unwrap()).unwrap(),
        ),
    ]
}

#[test]
fn wrapped_readings_equal_clear_within_the_margins() {
    let mut wrapping = 0;
    for (name, model) in shipped() {
        for (precision, resolution) in [(4, 11), (5, 12), (7, 12), (6, 13)] {
            let tables = model.with_reading(Reading::Table {
                precision,
                resolution,
            });
            for stage in tables.layers() {
                let Some(lookup) = stage.lookup() else {
                    continue;
                };
                let margin = lookup.encoding().margin;
                for (g, range) in stage.exact_ranges.iter().enumerate() {
                    let at = |acc| lookup.index(g, acc);
                    for acc in range.min..=range.max {
                        assert_eq!(
                            lookup.bootstrap_output(g, at(acc)),
                            lookup.read(g, acc),
                            "{name} layer {} group {g} acc {acc}",
                            stage.layer
                        );
                    }
                    let (low, high) = lookup.reach(g);
                    assert!(low <= at(range.min) - margin && at(range.max) + margin <= high);
                    for d in 0..=margin {
                        let context = || {
                            format!(
                                "{name} at 2^{resolution}, layer {} group {g}, {d} positions out: {:?}, {:?}, range {range}, at {}..{}",
                                stage.layer,
                                lookup.encoding(),
                                lookup.groups[g],
                                at(range.min),
                                at(range.max)
                            )
                        };
                        assert_eq!(
                            lookup.bootstrap_output(g, at(range.min) - d),
                            lookup.read(g, range.min),
                            "{}",
                            context()
                        );
                        assert_eq!(
                            lookup.bootstrap_output(g, at(range.max) + d),
                            lookup.read(g, range.max),
                            "{}",
                            context()
                        );
                    }
                    if lookup.groups[g].wrap.is_some() {
                        wrapping += 1;
                        let positions = 1i64 << lookup.encoding().precision();
                        assert!(at(range.max) + margin >= positions, "wraps without need");
                    }
                }
            }
        }
    }
    assert!(wrapping > 100, "only {wrapping} groups wrap");
}

#[test]
fn layers_share_the_largest_integer_spread_that_fits() {
    let mut uneven = 0;
    for (name, model) in shipped() {
        for (precision, resolution) in [(4, 11), (5, 12), (3, 10)] {
            let tables = model.with_reading(Reading::Table {
                precision,
                resolution,
            });
            for (k, stage) in tables.layers().iter().enumerate() {
                let Some(lookup) = stage.lookup() else {
                    continue;
                };
                let spread = lookup.spread;
                let e = lookup.encoding();
                if e.exact || e.shift > 0 {
                    assert_eq!(spread, 1, "{name} layer {k}");
                    continue;
                }
                uneven += usize::from(!(spread as u64).is_power_of_two());
                let fits = |g: usize, r: IntRange, m: i64| {
                    let t = tails(r, |a| lookup.read(g, a));
                    GroupEncoding::place_at(e, r, m, Some(t)).is_some()
                };
                // One more position per value leaves some group without room.
                assert!(
                    !stage
                        .exact_ranges
                        .iter()
                        .enumerate()
                        .all(|(g, &r)| fits(g, r, spread + 1)),
                    "{name} layer {k}: spread {spread} is not the largest"
                );
                for (g, &r) in stage.exact_ranges.iter().enumerate() {
                    let w = lookup.weight_multiplier(g);
                    assert_eq!(lookup.groups[g].multiplier, spread * w, "{name} layer {k}");
                    if k == 0 {
                        // Fresh inputs: each group's weights take the largest factor left
                        // (up to the cap on multipliers).
                        let more = spread * (w + 1);
                        assert!(
                            more > MAX_MULTIPLIER || !fits(g, r, more),
                            "{name} layer {k} group {g}"
                        );
                    } else {
                        // A bootstrap's noise is not worth scaling.
                        assert_eq!(w, 1, "{name} layer {k}");
                    }
                }
            }
        }
    }
    assert!(uneven > 0, "no spread was other than a power of two");
}

/// The optimizer bounds each lookup layer's noise before compiling, from the exact model:
/// the weight multipliers compilation gives must stay within that bound, and the positions
/// each value gets must be at least what it counts on, or a candidate's `p_error` would be
/// understated.
#[test]
fn compiled_tables_stay_within_the_optimizers_bounds() {
    for (name, model) in shipped() {
        let demand = model.demand();
        for (precision, resolution) in [(2, 10), (4, 11), (5, 12), (3, 12), (6, 13)] {
            let tables = model.with_reading(Reading::Table {
                precision,
                resolution,
            });
            let compiled = tables.demand();
            assert_eq!(compiled.lookups.len(), demand.lookups.len());
            let lookups = tables.layers().iter().filter_map(|s| s.lookup());
            for (k, (lookup, layer)) in lookups.zip(&demand.lookups).enumerate() {
                let e = lookup.encoding();
                if e.exact || e.shift > 0 {
                    continue;
                }
                let fewest = lookup.positions_per_value().0;
                let counted = layer.positions_per_value(1 << resolution, precision);
                assert!(
                    fewest >= counted as f64,
                    "{name} at 2^{resolution}, {precision}-bit boxes, lookup layer {k}: \
                     {fewest} positions per value, the optimizer counts on {counted}"
                );
            }
            for (k, (got, layer)) in compiled.lookups.iter().zip(&demand.lookups).enumerate() {
                let got = got.norm2_squared;
                let bound = layer.norm2_squared_at(1 << resolution);
                assert!(
                    got <= bound * (1.0 + 1e-12),
                    "{name} at 2^{resolution}, {precision}-bit boxes, lookup layer {k}: \
                     compiled norm² {got} above the bound {bound}"
                );
            }
        }
    }
}
