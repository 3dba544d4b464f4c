//! How a lookup reads an accumulator (encoding, rounding, margins) and the tables it reads.

use crate::arch::analysis::IntRange;

/// How the lookups of a model read their accumulators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Every accumulator read whole at its own width: the unrounded reference (Clear only;
    /// FHE cannot run lookups wider than its parameter sets).
    Exact,
    /// Read by a parameter set with `2^precision` boxes whose table has `2^resolution`
    /// positions (`N`).
    Table { precision: u32, resolution: u32 },
}

/// How a lookup reads an accumulator. The accumulator, shifted by `offset` to be
/// non-negative, is encoded on `bits` bits (Δ = 2^(63 - bits)); the table has
/// `2^precision()` positions and position `index(acc) = (acc + offset) · 2^-shift`
/// (rounded to nearest when `shift > 0`: the low bits are dropped; when `shift < 0` each
/// accumulator value spans `2^-shift` positions, so noise must move further to change it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccumulatorEncoding {
    /// Width of the encoded accumulator.
    pub bits: u32,
    /// Added so that every accumulator is non-negative, with the margins.
    pub offset: i64,
    /// Low bits dropped (> 0) or spread factor (< 0) between accumulator and position.
    pub shift: i32,
    /// Each value has a whole box of the parameter set: reading it fails only with
    /// probability `p_error`.
    pub exact: bool,
    /// Table positions kept free at both ends (half a box of the parameter set) so that
    /// noise never wraps around; 0 for exact readings.
    pub margin: i64,
}

/// Largest per-group multiplier (see [`GroupEncoding`]).
pub const MAX_MULTIPLIER: i64 = 256;

/// How one group's (neuron's, or channel's) accumulators are placed on the table: the
/// layer's encoding with the group's own offset and an integer multiplier, so that each value
/// spreads over as many positions as fit (noise then moves its reading less, in accumulator
/// units).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupEncoding {
    /// Added to the accumulator (before the multiplier).
    pub offset: i64,
    /// Positions per accumulator unit (1 where no room is left): the layer's `spread`, which
    /// the scaling factor of its inputs carries at no noise, times, on the first layer, a
    /// factor the group's weights are multiplied by.
    pub multiplier: i64,
    /// Set when the placement runs past the table's `N` positions into the negacyclic half
    /// (see [`Wrap`]).
    pub wrap: Option<Wrap>,
}

/// The saturated ends of a group's function of its accumulator: the output below and at
/// `low_end`, and from `high_start` on (accumulator values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tails {
    pub low: i64,
    pub low_end: i64,
    pub high: i64,
    pub high_start: i64,
}

/// A placement that uses the whole torus instead of the half the padding bit leaves.
///
/// The bootstrap reads position `x + N` as the negation of position `x`. With the table's
/// values centred on `c = (low + high) / 2` (added back after the bootstrap), the negation
/// of the low tail is the high tail: a reading that runs past `N` from the high end lands,
/// negated, on the low tail and still gives `high`, and symmetrically below 0. The
/// accumulators may then span up to `2N` positions less the transition between the tails,
/// so a group gets a larger multiplier and noise moves its reading less. Positions here
/// are table positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wrap {
    /// Output of the low tail, and the position of its last value.
    pub low: i64,
    pub low_end: i64,
    /// Output of the high tail, and the position of its first value.
    pub high: i64,
    pub high_start: i64,
}

impl GroupEncoding {
    /// The placement of a group with accumulators in `range` under `encoding`: the largest
    /// multiplier (at most `max_multiplier`) that keeps the range within the margins, on the
    /// half torus or, where the group's function saturates at both ends (`tails`), wrapping
    /// around it (see [`Wrap`]).
    pub fn new(
        encoding: &AccumulatorEncoding,
        range: IntRange,
        max_multiplier: i64,
        tails: Option<Tails>,
    ) -> Self {
        let plain = GroupEncoding {
            offset: encoding.offset,
            multiplier: 1,
            wrap: None,
        };
        if encoding.exact {
            return plain;
        }
        Self::place(encoding, range, max_multiplier, tails).unwrap_or(plain)
    }

    /// The placement [`new`](Self::new) finds, if any multiplier fits.
    pub(crate) fn place(
        encoding: &AccumulatorEncoding,
        range: IntRange,
        max_multiplier: i64,
        tails: Option<Tails>,
    ) -> Option<Self> {
        (1..=max_multiplier.max(1))
            .rev()
            .find_map(|m| Self::place_at(encoding, range, m, tails))
    }

    /// The placement of a group with accumulators in `range` at exactly `multiplier`
    /// positions per accumulator unit (before the encoding's own spread), if it fits.
    pub(crate) fn place_at(
        encoding: &AccumulatorEncoding,
        range: IntRange,
        multiplier: i64,
        tails: Option<Tails>,
    ) -> Option<Self> {
        let positions = 1i64 << encoding.precision();
        let margin = encoding.margin;
        let top = positions - 1 - margin;
        {
            // The smallest offset that keeps the minimum at or above the margin.
            let shift = encoding.shift;
            let need = if shift >= 0 {
                margin << shift
            } else {
                (margin + (1i64 << -shift) - 1) >> -shift
            };
            let mut g = GroupEncoding {
                offset: (need + multiplier - 1) / multiplier - range.min,
                multiplier,
                wrap: None,
            };
            if g.index(encoding, range.min) < margin {
                g.offset += 1;
            }
            let (first, last) = (g.index(encoding, range.min), g.index(encoding, range.max));
            if first < margin {
                return None;
            }
            if last <= top {
                return Some(g);
            }
            // Wrapping: the high end's reading may run up to the low tail's negated copy,
            // the low end's down to the high tail's (with the margins).
            let t = tails.filter(|_| shift <= 0)?;
            let wrap = Wrap {
                low: t.low,
                low_end: g.index(encoding, t.low_end),
                high: t.high,
                high_start: g.index(encoding, t.high_start),
            };
            (last + margin <= wrap.low_end + positions
                && first - margin >= wrap.high_start - positions
                && last + margin < 2 * positions)
                .then_some(GroupEncoding {
                    wrap: Some(wrap),
                    ..g
                })
        }
    }

    /// The table position of an accumulator value.
    pub fn index(&self, encoding: &AccumulatorEncoding, acc: i64) -> i64 {
        let v = (acc + self.offset) * self.multiplier;
        if encoding.shift >= 0 {
            (v + half(encoding.shift)) >> encoding.shift
        } else {
            v << -encoding.shift
        }
    }

    /// The accumulator value a table position stands for (the nearest one).
    pub fn value(&self, encoding: &AccumulatorEncoding, index: i64) -> i64 {
        let m = self.multiplier;
        if encoding.shift >= 0 {
            ((index << encoding.shift) + m / 2).div_euclid(m) - self.offset
        } else {
            let per_unit = m << -encoding.shift;
            (index + per_unit / 2).div_euclid(per_unit) - self.offset
        }
    }
}

impl AccumulatorEncoding {
    /// For accumulators in `range`, read as `reading` says: exactly, or by a lookup with
    /// `precision`-bit parameters whose table has `2^resolution` positions (`log2 N`).
    ///
    /// An accumulator that fits `precision` bits is read exactly: one box of the parameter
    /// set per value. A wider one is spread over (or rounded to) the table's full resolution,
    /// with a margin of half a box of the parameter set at both ends so that noise never
    /// wraps around the negacyclic table; noise then moves the reading by a few positions
    /// near a table step (approximate rounding, predicted by Simulate).
    pub fn new(range: IntRange, reading: Reading) -> AccumulatorEncoding {
        let offset = if range.min < 0 { -range.min } else { 0 };
        let span = range.max + offset;
        let needed = crate::arch::analysis::unsigned_bits(span as u64);
        let (precision, resolution) = match reading {
            Reading::Exact => (needed, needed),
            Reading::Table {
                precision,
                resolution,
            } => (precision, resolution),
        };
        if needed <= precision {
            return AccumulatorEncoding {
                bits: precision,
                offset,
                shift: 0,
                exact: true,
                margin: 0,
            };
        }
        let resolution = resolution.clamp(precision, 62) as i32;
        let margin = 1i64 << (resolution - precision as i32 - 1).max(0);
        let top = (1i64 << resolution) - 1 - margin;
        // Spread each value over as many positions as fit (shift <= 0), else round.
        let fits = |shift: i32| {
            let e = AccumulatorEncoding {
                bits: (resolution + shift) as u32,
                offset: offset + margin_units(margin, shift),
                shift,
                exact: false,
                margin,
            };
            (e.index(range.max) <= top).then_some(e)
        };
        let mut shift = 0;
        if fits(0).is_some() {
            while fits(shift - 1).is_some() && resolution + shift > 1 {
                shift -= 1;
            }
        } else {
            while fits(shift).is_none() {
                shift += 1;
            }
        }
        fits(shift).expect("a fitting shift was found")
    }

    /// The same reading without the power-of-two spread (`shift` 0: one table position per
    /// accumulator unit), for layers whose groups spread themselves with multipliers
    /// ([`GroupEncoding`]) at any integer factor.
    pub fn unspread(&self) -> AccumulatorEncoding {
        if self.exact || self.shift >= 0 {
            return *self;
        }
        let base_offset = self.offset - margin_units(self.margin, self.shift);
        AccumulatorEncoding {
            bits: self.precision(),
            offset: base_offset + self.margin,
            shift: 0,
            exact: false,
            margin: self.margin,
        }
    }

    /// Bits of the lookup index (log2 of the table positions).
    pub fn precision(&self) -> u32 {
        (self.bits as i32 - self.shift) as u32
    }

    /// The table position of an accumulator value, with the layer's offset and no
    /// multiplier (each group's own placement: [`GroupEncoding::index`]).
    pub fn index(&self, acc: i64) -> i64 {
        GroupEncoding {
            offset: self.offset,
            multiplier: 1,
            wrap: None,
        }
        .index(self, acc)
    }
}

/// The margin of `margin` positions in accumulator units (rounded up).
fn margin_units(margin: i64, shift: i32) -> i64 {
    if shift >= 0 {
        margin << shift
    } else {
        (margin + (1i64 << -shift) - 1) >> -shift
    }
}

/// Half of `2^shift` (0 for no shift): rounding to nearest.
fn half(shift: i32) -> i64 {
    if shift <= 0 {
        0
    } else {
        1i64 << (shift - 1)
    }
}

/// A neuron's table: `values[k - first]` for lookup index `k`.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub first: i64,
    pub values: Vec<i64>,
}

impl Table {
    /// The table entry of lookup index `k` (clamped to the table's span).
    pub fn get(&self, k: i64) -> i64 {
        let i = (k - self.first).clamp(0, self.values.len() as i64 - 1);
        self.values[i as usize]
    }
}
