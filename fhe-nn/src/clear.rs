//! Clear mode: exact integer inference, the reference the other modes are held to
//! (Concrete ML's `fhe="disable"`).

use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::error::InputError;
use crate::model::{QuantModel, Source, WeightedStage};

impl QuantModel {
    /// Number of input features per sample.
    pub fn input_features(&self) -> usize {
        self.input.features
    }

    /// Number of outputs per sample.
    pub fn output_features(&self) -> usize {
        self.layers.last().map(|l| l.out_features).unwrap_or(0)
    }

    /// Quantizes a batch of real inputs (one sample per row) with the input quantizer, after
    /// any activations declared before it.
    pub fn quantize_inputs(&self, inputs: ArrayView2<f64>) -> Result<Array2<i64>, InputError> {
        let (rows, cols) = inputs.dim();
        self.input.check_width(cols)?;
        let mut out = Array2::zeros((rows, cols));
        for ((sample, feature), &x) in inputs.indexed_iter() {
            out[(sample, feature)] = self.input.quantize(sample, feature, x)?;
        }
        Ok(out)
    }

    /// Checks a batch of already quantized inputs.
    pub(crate) fn check_quantized_inputs(&self, inputs: ArrayView2<i64>) -> Result<(), InputError> {
        self.input.check_width(inputs.ncols())?;
        inputs
            .indexed_iter()
            .try_for_each(|((sample, feature), &v)| self.input.check(sample, feature, v))
    }

    /// Checks one quantized sample: its width, and that its values are those the tables
    /// were built for.
    pub(crate) fn check_quantized_sample(&self, input: &[i64]) -> Result<(), InputError> {
        self.check_quantized_inputs(
            ArrayView2::from_shape((1, input.len()), input).expect("one row"),
        )
    }

    /// Integer inference of one quantized sample, recording every weighted layer's
    /// accumulators and every lookup's outputs: `trace[2k]` holds layer k's accumulators,
    /// `trace[2k+1]` the integers its lookup produces.
    pub fn clear_trace(&self, input: &[i64]) -> Result<Vec<Vec<i64>>, InputError> {
        self.check_quantized_sample(input)?;
        Ok(self.clear_trace_unchecked(input))
    }

    fn clear_trace_unchecked(&self, input: &[i64]) -> Vec<Vec<i64>> {
        let mut trace: Vec<Vec<i64>> = Vec::with_capacity(2 * self.layers.len());
        for stage in &self.layers {
            let x = gather(stage, input, &trace);
            let acc = accumulate(stage, &x);
            if let Some(lookup) = &stage.lookup {
                let out = acc
                    .iter()
                    .enumerate()
                    .map(|(j, &a)| lookup.read(stage.group(j), a))
                    .collect();
                trace.push(acc);
                trace.push(out);
            } else {
                trace.push(acc);
            }
        }
        trace
    }

    /// Integer inference of one quantized sample: the output layer's accumulators.
    pub fn clear_int(&self, input: &[i64]) -> Result<Vec<i64>, InputError> {
        self.check_quantized_sample(input)?;
        Ok(self.clear_int_unchecked(input))
    }

    pub(crate) fn clear_int_unchecked(&self, input: &[i64]) -> Vec<i64> {
        self.clear_trace_unchecked(input).pop().unwrap_or_default()
    }

    /// De-quantizes output accumulators and applies the trailing activations.
    pub fn dequantize_outputs(&self, accumulators: &[i64]) -> Result<Vec<f64>, InputError> {
        if accumulators.len() != self.output_features() {
            return Err(InputError::Width {
                expected: self.output_features(),
                found: accumulators.len(),
            });
        }
        Ok(self.dequantize_unchecked(accumulators))
    }

    pub(crate) fn dequantize_unchecked(&self, accumulators: &[i64]) -> Vec<f64> {
        let last = self.layers.last().expect("a model has a weighted layer");
        accumulators
            .iter()
            .enumerate()
            .map(|(j, &a)| {
                self.output_activations
                    .iter()
                    .fold(last.dequantize(j, a), |y, f| f.apply(y))
            })
            .collect()
    }

    /// De-quantizes a batch of output accumulators (rows), with the trailing activations.
    pub(crate) fn dequantize_batch(
        &self,
        accumulators: ArrayView2<i64>,
    ) -> Result<Array2<f64>, InputError> {
        if accumulators.ncols() != self.output_features() {
            return Err(InputError::Width {
                expected: self.output_features(),
                found: accumulators.ncols(),
            });
        }
        let rows: Vec<Vec<f64>> = accumulators
            .axis_iter(Axis(0))
            .map(|r| self.dequantize_unchecked(&r.to_vec()))
            .collect();
        Ok(rows_to_array(rows, self.output_features()))
    }

    /// Clear inference of a batch of quantized inputs (rows), in parallel: output accumulators.
    pub(crate) fn clear_int_batch(
        &self,
        inputs: ArrayView2<i64>,
    ) -> Result<Array2<i64>, InputError> {
        self.check_quantized_inputs(inputs)?;
        let rows: Vec<Vec<i64>> = (0..inputs.nrows())
            .into_par_iter()
            .map(|i| self.clear_int_unchecked(&inputs.row(i).to_vec()))
            .collect();
        Ok(rows_to_array(rows, self.output_features()))
    }

    /// Clear inference of a batch of real inputs: de-quantized outputs, one row per sample.
    pub fn predict_clear(&self, inputs: ArrayView2<f64>) -> Result<Array2<f64>, InputError> {
        let q = self.quantize_inputs(inputs)?;
        let rows: Vec<Vec<f64>> = (0..q.nrows())
            .into_par_iter()
            .map(|i| self.dequantize_unchecked(&self.clear_int_unchecked(&q.row(i).to_vec())))
            .collect();
        Ok(rows_to_array(rows, self.output_features()))
    }
}

/// The inputs of `stage`: its sources' values one after another, from the sample's
/// `input` and the `trace` so far (stage `k`'s lookup outputs at `2k + 1`).
pub(crate) fn gather<'a, T: Clone>(
    stage: &WeightedStage,
    input: &'a [T],
    trace: &'a [Vec<T>],
) -> std::borrow::Cow<'a, [T]> {
    let of = |s: &Source| -> &'a [T] {
        match *s {
            Source::Input => input,
            Source::Stage(k) => &trace[2 * k + 1],
        }
    };
    match stage.sources.as_slice() {
        [one] => std::borrow::Cow::Borrowed(of(one)),
        many => std::borrow::Cow::Owned(many.iter().flat_map(|s| of(s).iter().cloned()).collect()),
    }
}

/// The accumulators of a weighted layer; zero weights cost nothing.
pub(crate) fn accumulate(stage: &WeightedStage, x: &[i64]) -> Vec<i64> {
    (0..stage.out_features)
        .map(|j| stage.accumulate_one(j, x))
        .collect()
}

pub(crate) fn rows_to_array<T: Clone + Default>(rows: Vec<Vec<T>>, width: usize) -> Array2<T> {
    let n = rows.len();
    let flat: Vec<T> = rows.into_iter().flatten().collect();
    Array2::from_shape_vec((n, width), flat).expect("every row has the output width")
}

/// Index of the largest value (the first on ties; 0 when empty): the predicted class.
pub fn argmax<'a, T: PartialOrd + Copy + 'a>(values: impl IntoIterator<Item = &'a T>) -> usize {
    let mut best: Option<(usize, T)> = None;
    for (i, &v) in values.into_iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// Index of the largest value of each row (first on ties).
pub fn argmax_rows<T: PartialOrd + Copy>(values: ArrayView2<T>) -> Vec<usize> {
    values.axis_iter(Axis(0)).map(|row| argmax(row)).collect()
}
