//! Gradient clipping by the global L2 norm over all parameters, as PyTorch's
//! `clip_grad_norm_` does. (burn 0.21's `GradientClipping::Norm` clips each tensor on its own,
//! which changes the direction of the update.)

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = kernels::sum_of_squares(g);
            self.sum = Some(match self.sum.take() {
                Some(s) => s + sq,
                None => sq,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The global L2 norm of the gradients of `model`'s parameters.
pub fn grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &GradientsParams) -> f64 {
    let mut v = SquaredNorm::<B> { grads, sum: None };
    model.visit(&mut v);
    v.sum.map_or(0.0, |s| s.into_scalar().elem::<f64>().sqrt())
}

/// Scales all gradients down so that their global norm is at most `max_norm` (no-op when
/// `max_norm` is 0 or the norm is within it). Returns the norm before clipping.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let norm = grad_norm::<B, M>(model, grads);
    if max_norm > 0.0 && norm > max_norm {
        let mut v = Scale { grads, factor: max_norm / (norm + 1e-6) };
        model.visit(&mut v);
    }
    norm
}
