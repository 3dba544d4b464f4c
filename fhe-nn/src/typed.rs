//! Typed models: the named form of `fhe_net!` fixes a network's input and output sizes, so
//! its per-sample calls take `&[f64; IN]` and return `[f64; OUT]`, and a wrong length is a
//! compile error. Batches stay `ndarray`, through the untyped model each typed one derefs to.

use std::marker::PhantomData;
use std::ops::Deref;
use std::path::Path;

use ndarray::ArrayView2;

use crate::fhe::FheError;
use crate::tensors::TensorFile;
use crate::{CompileError, CompiledModel, FheOptions, InputError, LoadError, Mode, QuantModel};

/// One sample of real values: `[f64; N]` where the declaration fixes `N`.
pub trait Sample: Sized {
    /// The values.
    fn values(&self) -> &[f64];
    /// From a vector of the right length (`None` otherwise).
    fn from_values(values: Vec<f64>) -> Option<Self>;
}

impl<const N: usize> Sample for [f64; N] {
    fn values(&self) -> &[f64] {
        self
    }
    fn from_values(values: Vec<f64>) -> Option<Self> {
        values.try_into().ok()
    }
}

impl Sample for Vec<f64> {
    fn values(&self) -> &[f64] {
        self
    }
    fn from_values(values: Vec<f64>) -> Option<Self> {
        Some(values)
    }
}

/// A network declared with the named form of `fhe_net!`.
pub trait Network {
    /// One sample's inputs (`[f64; IN]`).
    type Input: Sample;
    /// One sample's outputs (`[f64; OUT]`).
    type Output: Sample;
    /// The checked architecture.
    fn architecture() -> &'static crate::Architecture;
}

/// A loaded model of network `N` (immutable). Derefs to the untyped [`QuantModel`].
#[derive(Clone, Debug)]
pub struct Model<N: Network> {
    model: QuantModel,
    network: PhantomData<N>,
}

/// A compiled model of network `N`. Derefs to the untyped [`CompiledModel`].
#[derive(Clone, Debug)]
pub struct Compiled<N: Network> {
    compiled: CompiledModel,
    network: PhantomData<N>,
}

fn one_row(values: &[f64]) -> ArrayView2<'_, f64> {
    ArrayView2::from_shape((1, values.len()), values).expect("one row")
}

fn output<S: Sample>(values: Vec<f64>) -> S {
    S::from_values(values).expect("the architecture fixes the output width")
}

impl<N: Network> Model<N> {
    /// Loads integer (QAT) weights from a `.safetensors` or `.npz` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, LoadError> {
        Ok(Self::from_untyped(QuantModel::load(
            N::architecture(),
            path,
        )?))
    }

    /// Builds the model from named tensors (see [`QuantModel::from_tensors`]).
    pub fn from_tensors(file: &TensorFile) -> Result<Self, LoadError> {
        Ok(Self::from_untyped(QuantModel::from_tensors(
            N::architecture(),
            file,
        )?))
    }

    fn from_untyped(model: QuantModel) -> Self {
        Model {
            model,
            network: PhantomData,
        }
    }

    /// The same model for quantized inputs in `[min, max]` (see
    /// [`QuantModel::restrict_inputs`]).
    pub fn restrict_inputs(&self, min: i64, max: i64) -> Result<Self, InputError> {
        Ok(Self::from_untyped(self.model.restrict_inputs(min, max)?))
    }

    /// Exact Clear inference of one sample.
    pub fn predict(&self, input: &N::Input) -> Result<N::Output, InputError> {
        let out = self.model.predict_clear(one_row(input.values()))?;
        Ok(output(out.row(0).to_vec()))
    }

    /// Compiles the model (see [`QuantModel::compile`]).
    pub fn compile(
        &self,
        calibration: ArrayView2<f64>,
        options: &FheOptions,
    ) -> Result<Compiled<N>, CompileError> {
        Ok(Compiled {
            compiled: self.model.compile(calibration, options)?,
            network: PhantomData,
        })
    }

    /// The untyped model.
    pub fn untyped(&self) -> &QuantModel {
        &self.model
    }
}

impl<N: Network> Deref for Model<N> {
    type Target = QuantModel;
    fn deref(&self) -> &QuantModel {
        &self.model
    }
}

impl<N: Network> Compiled<N> {
    /// Runs one sample in `mode`: its de-quantized outputs.
    pub fn predict_one(&self, input: &N::Input, mode: Mode) -> Result<N::Output, FheError> {
        let out = self.compiled.predict(one_row(input.values()), mode)?;
        Ok(output(out.row(0).to_vec()))
    }

    /// The untyped compiled model.
    pub fn untyped(&self) -> &CompiledModel {
        &self.compiled
    }

    /// The untyped compiled model, by value (to hand to a server, for instance).
    pub fn into_untyped(self) -> CompiledModel {
        self.compiled
    }
}

impl<N: Network> From<Compiled<N>> for CompiledModel {
    fn from(compiled: Compiled<N>) -> CompiledModel {
        compiled.compiled
    }
}

impl<N: Network> Deref for Compiled<N> {
    type Target = CompiledModel;
    fn deref(&self) -> &CompiledModel {
        &self.compiled
    }
}
