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
                for (g, range) in stage.exact_ranges().iter().enumerate() {
                    let at = |acc| lookup.index(g, acc);
                    for acc in range.min..=range.max {
                        assert_eq!(
                            lookup.bootstrap_output(g, at(acc)),
                            lookup.read(g, acc),
                            "{name} layer {} group {g} acc {acc}",
                            stage.layer()
                        );
                    }
                    let (low, high) = lookup.reach(g);
                    assert!(low <= at(range.min) - margin && at(range.max) + margin <= high);
                    for d in 0..=margin {
                        let context = || {
                            format!(
                                "{name} at 2^{resolution}, layer {} group {g}, {d} positions out: {:?}, {:?}, range {range}, at {}..{}",
                                stage.layer(),
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
