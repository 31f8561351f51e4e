//! The op set every device implements. Front-end functions in [`crate::ops`] validate shapes,
//! dtypes and devices once, then call the backend of the operands' device through [`Backend`].
//! Backend methods may assume validated, contiguous inputs of one dtype on one device.
//!
//! The op set is split into families (one trait each, so each family lives in its own file);
//! [`Backend`] is all of them together.

use crate::storage::{CpuStorage, Storage};
use crate::{DType, Device, Result, Tensor};

/// Matrix-multiply geometry: `out[b] = alpha * op(a[b]) @ op(b[b])`, row-major,
/// `op(a)` is `m x k`, `op(b)` is `k x n`. A side with `*_batched == false` is one matrix
/// shared by every batch entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatmulSpec {
    /// Number of matrices.
    pub batch: usize,
    /// Rows of the output.
    pub m: usize,
    /// Columns of the output.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// `a` is stored `k x m` and used transposed.
    pub trans_a: bool,
    /// `b` is stored `n x k` and used transposed.
    pub trans_b: bool,
    /// `a` has one matrix per batch entry.
    pub a_batched: bool,
    /// `b` has one matrix per batch entry.
    pub b_batched: bool,
    /// Scale of the product.
    pub alpha: f64,
    /// Round f32 operands to bf16 first (f32 accumulation and result): see
    /// [`crate::autocast`].
    pub bf16_inputs: bool,
}

/// Matrix multiplication.
pub trait GemmOps {
    /// Batched GEMM; returns a tensor of shape `shape` (`batch * m * n` elements).
    fn matmul(&self, a: &Tensor, b: &Tensor, spec: &MatmulSpec, shape: &[usize]) -> Result<Tensor>;
}

/// Pointwise activation functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unary {
    /// max(x, 0).
    Relu,
    /// x * Phi(x) with the exact erf.
    Gelu,
    /// x * clamp(x + 3, 0, 6) / 6.
    Hardswish,
    /// 1 / (1 + exp(-x)).
    Sigmoid,
    /// tanh(x).
    Tanh,
    /// exp(x).
    Exp,
    /// ln(x).
    Log,
    /// sqrt(x).
    Sqrt,
}

impl Unary {
    /// Every activation, in declaration order.
    pub const ALL: [Unary; 8] = [
        Unary::Relu,
        Unary::Gelu,
        Unary::Hardswish,
        Unary::Sigmoid,
        Unary::Tanh,
        Unary::Exp,
        Unary::Log,
        Unary::Sqrt,
    ];
}

/// Broadcasting binary arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Binary {
    /// a + b.
    Add,
    /// a - b.
    Sub,
    /// a * b.
    Mul,
    /// a / b.
    Div,
}

/// Elementwise maths, broadcasting and dropout.
pub trait ElementwiseOps {
    /// `kind(x)`.
    fn unary(&self, kind: Unary, x: &Tensor) -> Result<Tensor>;
    /// `dx = dy * kind'(x)`.
    fn unary_bwd(&self, kind: Unary, x: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// `a op b` with numpy broadcasting to `out_shape` (both inputs already have its rank).
    fn binary(&self, kind: Binary, a: &Tensor, b: &Tensor, out_shape: &[usize]) -> Result<Tensor>;
    /// `x * mul + add`.
    fn affine(&self, x: &Tensor, mul: f64, add: f64) -> Result<Tensor>;
    /// `y += alpha * x` in place (same shape).
    fn axpy(&self, y: &mut Tensor, alpha: f64, x: &Tensor) -> Result<()>;
    /// Inverted dropout: returns `(y, scale)` with `scale[i]` in `{0, 1/(1-p)}` drawn from
    /// `counter_uniform(seed, i)`, and `y = x * scale`.
    fn dropout(&self, x: &Tensor, p: f64, seed: u64) -> Result<(Tensor, Tensor)>;
}

/// Reductions and their adjoint (broadcast).
pub trait ReduceOps {
    /// Sums over the axes where `out_shape` (same rank as `x`) has size 1 and `x` has not.
    fn sum_to(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor>;
    /// Broadcasts `x` (same rank, size-1 axes) to `out_shape`.
    fn broadcast_to(&self, x: &Tensor, out_shape: &[usize]) -> Result<Tensor>;
}

/// Per-plane ops over `(N, C, *spatial)` tensors (plane `p = n * C + c` of `S` = product of
/// the spatial axes elements): the squeeze-and-excitation block's pooling, gate gradient and
/// scaling in one pass each. Activations may be bf16; the per-plane values are f32 then.
pub trait PlaneOps {
    /// `out[n, c] = sum_s a[n, c, s]` (`* b[n, c, s]` when given, the product rounded in the
    /// compute dtype), accumulated in f64 and rounded once; shape `(N, C)`.
    fn plane_sum(&self, a: &Tensor, b: Option<&Tensor>) -> Result<Tensor>;
    /// `y[n, c, s] = x[n, c, s] * scale[n, c]` (`+ shift[n, c]` when given), rounded once to
    /// `x`'s dtype.
    fn plane_scale(&self, x: &Tensor, scale: &Tensor, shift: Option<&Tensor>) -> Result<Tensor>;
}

/// Layout: permutes, concatenation, slicing, gathers.
pub trait LayoutOps {
    /// `out[..] = x[perm applied]`: output dim i is input dim `perm[i]`.
    fn permute(&self, x: &Tensor, perm: &[usize]) -> Result<Tensor>;
    /// Concatenates along `axis`.
    fn concat(&self, xs: &[&Tensor], axis: usize) -> Result<Tensor>;
    /// `len` entries of `axis` starting at `start`.
    fn slice(&self, x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor>;
    /// Places `x` at `start` of a zero tensor whose `axis` has size `total` (slice backward).
    fn pad_axis(&self, x: &Tensor, axis: usize, start: usize, total: usize) -> Result<Tensor>;
    /// Rows of `table` (V, D) picked by `ids` -> (ids.len(), D).
    fn embedding(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor>;
    /// Scatter-add of `dy` (ids.len(), D) into a zero (vocab, D) gradient.
    fn embedding_bwd(&self, dy: &Tensor, ids: &[u32], vocab: usize) -> Result<Tensor>;
}

/// Saved statistics of a normalisation forward pass, in the dtype [`NormStats::dtype_for`]
/// gives for the input's dtype (f32 for bf16 inputs: the statistics are small, and rounding
/// `rstd` to bf16 would cost the backward pass precision for nothing).
#[derive(Debug, Clone)]
pub struct NormStats {
    /// Per-row (layer norm) or per-channel (batch norm) mean.
    pub mean: Tensor,
    /// Matching 1 / sqrt(var + eps).
    pub rstd: Tensor,
}

impl NormStats {
    /// The dtype of the statistics of an input of `dtype`: f32 for bf16 storage, `dtype`
    /// itself otherwise.
    pub fn dtype_for(dtype: DType) -> DType {
        match dtype {
            DType::BF16 => DType::F32,
            other => other,
        }
    }
}

/// Gradients of a normalisation with affine parameters.
#[derive(Debug, Clone)]
pub struct NormGrads {
    /// Gradient of the input.
    pub dx: Tensor,
    /// Gradient of the scale.
    pub dgamma: Tensor,
    /// Gradient of the shift.
    pub dbeta: Tensor,
}

/// The learned scale and shift of a normalisation and its variance epsilon.
#[derive(Debug, Clone, Copy)]
pub struct Affine<'a> {
    /// Scale, one per normalised channel or feature.
    pub gamma: &'a Tensor,
    /// Shift, like `gamma`.
    pub beta: &'a Tensor,
    /// Added to the variance.
    pub eps: f64,
}

/// What a normalisation's backward reads of its forward: the input, the scale and the
/// statistics the forward returned.
#[derive(Debug, Clone, Copy)]
pub struct NormSaved<'a> {
    /// The forward's input.
    pub x: &'a Tensor,
    /// The forward's scale.
    pub gamma: &'a Tensor,
    /// The statistics the forward returned.
    pub stats: &'a NormStats,
}

/// The last-axis normalisations: layer norm and L2 normalisation.
pub trait LayerNormOps {
    /// Layer norm over the last axis (size = gamma's length).
    fn layer_norm(&self, x: &Tensor, p: Affine) -> Result<(Tensor, NormStats)>;
    /// Layer norm backward.
    fn layer_norm_bwd(&self, s: NormSaved, dy: &Tensor) -> Result<NormGrads>;
    /// `y = x / max(||x||, eps)` over the last axis; returns `(y, norms)`.
    fn l2_normalize(&self, x: &Tensor, eps: f64) -> Result<(Tensor, Tensor)>;
    /// Backward of [`LayerNormOps::l2_normalize`].
    fn l2_normalize_bwd(&self, y: &Tensor, norms: &Tensor, dy: &Tensor, eps: f64)
        -> Result<Tensor>;
}

/// A batch norm's running statistics and the momentum a train-mode call updates them with.
#[derive(Debug)]
pub struct Running<'a> {
    /// Running mean (per channel).
    pub mean: &'a mut Tensor,
    /// Running (unbiased) variance (per channel).
    pub var: &'a mut Tensor,
    /// Weight of the new batch statistics.
    pub momentum: f64,
}

/// What a train-mode batch norm takes besides its input: the affine parameters, the running
/// statistics it updates and the activation fused after it, if any.
#[derive(Debug)]
pub struct BatchNormTrain<'a> {
    /// Scale, shift and variance epsilon.
    pub affine: Affine<'a>,
    /// The running statistics and their momentum.
    pub running: Running<'a>,
    /// The activation applied to the normalised output in the same pass.
    pub act: Option<Unary>,
}

/// Batch norm over axis 1 of (N, C, *spatial), optionally fused with an activation.
pub trait BatchNormOps {
    /// Batch norm over axis 1 of (N, C, ...) with batch statistics (biased variance), then
    /// `act` when given, without materialising the normalised tensor (the same statistics,
    /// running-stat update and output values as the two ops in sequence); updates the running
    /// stats with momentum and the unbiased variance.
    fn batch_norm_train(&self, x: &Tensor, p: BatchNormTrain) -> Result<(Tensor, NormStats)>;
    /// Batch norm with the running statistics `[mean, var]`.
    fn batch_norm_eval(&self, x: &Tensor, p: Affine, running: [&Tensor; 2]) -> Result<Tensor>;
    /// Backward of [`BatchNormOps::batch_norm_train`]. With `act` (the activation and `beta`):
    /// the batch norm backward of `dy * act'(z)`, with the normalised value recomputed per
    /// element as `z = (x - mean) * round(rstd * gamma) + beta` (the product in f64, rounded
    /// once).
    fn batch_norm_bwd(
        &self,
        s: NormSaved,
        dy: &Tensor,
        act: Option<(Unary, &Tensor)>,
    ) -> Result<NormGrads>;
}

/// Softmax family over the last axis.
pub trait SoftmaxOps {
    /// Softmax; with `mask` (shape (B, K) of 1 = keep / 0 = drop, x viewed as (B, R, K)),
    /// dropped entries get probability 0 and fully masked rows are all zero.
    fn softmax(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor>;
    /// `dx = y * (dy - sum(dy * y))`.
    fn softmax_bwd(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// Log-softmax.
    fn log_softmax(&self, x: &Tensor) -> Result<Tensor>;
    /// `dx = dy - exp(y) * sum(dy)`.
    fn log_softmax_bwd(&self, y: &Tensor, dy: &Tensor) -> Result<Tensor>;
    /// Negative log-likelihood: `logp` (rows, C) of log-probabilities and one target class per
    /// row (validated `< C`); returns the mean over rows of `-logp[row, target]`, shape `[]`.
    fn nll_loss(&self, logp: &Tensor, targets: &[u32]) -> Result<Tensor>;
    /// Backward of [`SoftmaxOps::nll_loss`]: zeros of `logp`'s shape with
    /// `-dloss / rows` at each row's target.
    fn nll_loss_bwd(&self, logp: &Tensor, targets: &[u32], dloss: f64) -> Result<Tensor>;
}

/// 2-D convolution geometry (NCHW input, OIHW weight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dSpec {
    /// Batch size.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (h, w).
    pub stride: (usize, usize),
    /// Zero padding (h, w) on both sides.
    pub padding: (usize, usize),
    /// Dilation (h, w).
    pub dilation: (usize, usize),
    /// Groups; `c_in` and `c_out` are multiples of it.
    pub groups: usize,
    /// Output height.
    pub h_out: usize,
    /// Output width.
    pub w_out: usize,
}

/// Convolutions.
pub trait ConvOps {
    /// Forward.
    fn conv2d(&self, x: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<Tensor>;
    /// Gradient of the input.
    fn conv2d_bwd_data(&self, dy: &Tensor, w: &Tensor, spec: &Conv2dSpec) -> Result<Tensor>;
    /// Gradient of the weight.
    fn conv2d_bwd_weight(&self, x: &Tensor, dy: &Tensor, spec: &Conv2dSpec) -> Result<Tensor>;
    /// Both gradients, `(dx, dw)`: the two methods above (a backend may share work between
    /// them; under autocast the CUDA backend's two GEMMs already read one bf16 copy of `dy`,
    /// cached with its storage).
    fn conv2d_bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        spec: &Conv2dSpec,
    ) -> Result<(Tensor, Tensor)> {
        Ok((
            self.conv2d_bwd_data(dy, w, spec)?,
            self.conv2d_bwd_weight(x, dy, spec)?,
        ))
    }
}

/// Hyper-parameters of one Adam/AdamW step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 = Adam.
    pub weight_decay: f64,
    /// 1-based step number (bias correction).
    pub step: u64,
}

impl AdamStep {
    /// Step `step` with learning rate `lr`, decoupled weight decay `weight_decay` and
    /// PyTorch's defaults for the rest: betas (0.9, 0.999), eps 1e-8.
    pub fn new(lr: f64, weight_decay: f64, step: u64) -> AdamStep {
        AdamStep {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step,
        }
    }
}

/// The tensors of one Adam update: parameters, their gradients and both moments, four lists of
/// equal length and matching shapes (validated by `ops`).
#[derive(Debug)]
pub struct AdamTensors<'a> {
    /// Parameters, updated in place.
    pub params: &'a mut [Tensor],
    /// Their gradients.
    pub grads: &'a [Tensor],
    /// First moments, updated in place.
    pub m: &'a mut [Tensor],
    /// Second moments, updated in place.
    pub v: &'a mut [Tensor],
}

/// Optimiser kernels.
pub trait OptimOps {
    /// One fused Adam/AdamW update of every `(params[i], grads[i], m[i], v[i])` in place with
    /// the same hyper-parameters (the CUDA backend updates several tensors in one launch).
    fn adam_step(&self, t: AdamTensors, hp: &AdamStep) -> Result<()>;
}

/// Framing geometry of [`AudioOps::frame_signal`] (validated by `ops::frame_signal`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSpec {
    /// Waveforms.
    pub batch: usize,
    /// Samples per waveform (the preemphasised signal has `samples - 1`).
    pub samples: usize,
    /// Frame length (and window length).
    pub n_fft: usize,
    /// Hop between frame starts.
    pub hop: usize,
    /// Reflect padding on each side (`n_fft / 2`; less than `samples - 1`).
    pub pad: usize,
    /// Frames per waveform: `1 + (samples - 1 + 2 pad - n_fft) / hop`.
    pub frames: usize,
    /// Preemphasis coefficient `c` of `y[n] = x[n+1] - c x[n]`.
    pub preemphasis: f64,
}

/// Audio preprocessing (forward only: the mel frontend has no parameters and no gradient
/// flows into waveforms).
pub trait AudioOps {
    /// Waveforms (B, N) -> windowed frames (B * frames, n_fft): preemphasis, numpy `reflect`
    /// padding by `pad`, framing every `hop` samples, times `window` (n_fft).
    fn frame_signal(&self, wav: &Tensor, window: &Tensor, spec: &FrameSpec) -> Result<Tensor>;
}

/// Geometry of fused scaled-dot-product attention (validated by `ops::attention`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionSpec {
    /// Batch entries.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Query positions.
    pub q_len: usize,
    /// Key (and value) positions.
    pub k_len: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Score scale (`1 / sqrt(head_dim)`).
    pub scale: f64,
    /// Dropout probability on the attention probabilities (0 = none).
    pub dropout: f64,
    /// Dropout seed: probability `(b, h, i, j)` is kept unless
    /// `counter_uniform(seed, ((b * heads + h) * q_len + i) * k_len + j) < dropout`, the mask
    /// `ops::dropout` draws for a (B, H, Tq, Tk) tensor.
    pub seed: u64,
}

/// The operands of attention: `q` (B, Tq, H, Dh), `k` and `v` (B, Tk, H, Dh), `mask` (B, Tk)
/// of 1 = keep / 0 = drop.
#[derive(Debug, Clone, Copy)]
pub struct Qkv<'a> {
    /// Queries.
    pub q: &'a Tensor,
    /// Keys.
    pub k: &'a Tensor,
    /// Values.
    pub v: &'a Tensor,
    /// Which keys each batch entry attends to (`None`: all).
    pub mask: Option<&'a Tensor>,
}

/// Fused attention: the (B, H, Tq, Tk) scores and probabilities never reach memory.
pub trait AttentionOps {
    /// Returns `out` (B, Tq, H, Dh) `= dropout(softmax(scale q k^T, mask)) v` and the row
    /// log-sum-exp `lse` (B, H, Tq) of the kept scaled scores (`-inf` for a row without keys,
    /// whose output is zero).
    fn attention(&self, x: Qkv, spec: &AttentionSpec) -> Result<(Tensor, Tensor)>;
    /// Gradients `[dq, dk, dv]` from the forward's operands and `t = [out, lse, dout]` (the
    /// forward's results and the gradient of `out`).
    fn attention_bwd(&self, x: Qkv, t: [&Tensor; 3], spec: &AttentionSpec) -> Result<[Tensor; 3]>;
}

/// Row and column log-sum-exps of a contrastive loss forward (saved for the backward).
#[derive(Debug, Clone)]
pub struct ContrastiveStats {
    /// Log-sum-exp of each row of the scores (N).
    pub row_lse: Tensor,
    /// Log-sum-exp of each column of the scores (N).
    pub col_lse: Tensor,
}

/// What the contrastive loss backward reads of its forward: the scores, the groups and the
/// statistics the forward returned.
#[derive(Debug, Clone, Copy)]
pub struct ContrastiveSaved<'a> {
    /// The forward's scores (N, N).
    pub scores: &'a Tensor,
    /// The clip group of each item (N).
    pub groups: &'a [u32],
    /// The statistics the forward returned.
    pub stats: &'a ContrastiveStats,
}

/// The fused symmetric contrastive (NT-Xent) loss on a square score matrix.
pub trait ContrastiveOps {
    /// `scores` (N, N) (already divided by the temperature); `groups[i]` is the clip of item
    /// i and positives are the pairs of one clip (`P[i, j] = groups[i] == groups[j]`).
    /// Returns `-1 / (2 |P|) sum_ij P_ij (log_softmax_row(S)_ij + log_softmax_col(S)_ij)`
    /// (shape `[]`) and the log-sum-exps.
    fn contrastive_loss(
        &self,
        scores: &Tensor,
        groups: &[u32],
    ) -> Result<(Tensor, ContrastiveStats)>;
    /// `dS = -dloss / (2 |P|) (2 P - r_i softmax_row(S) - c_j softmax_col(S))` with `r_i`,
    /// `c_j` the positives of row i and column j.
    fn contrastive_loss_bwd(&self, s: ContrastiveSaved, dloss: f64) -> Result<Tensor>;
}

/// Moving storage between the host and a backend's devices, and converting its dtype. The
/// host side of every transfer is [`CpuStorage`]; `Tensor`'s `to_device`, `to_dtype`,
/// `to_vec_*`, `zeros` and `upload_ahead` dispatch here like every other op.
pub trait TransferOps {
    /// A copy of host elements on `device` (one of this backend's devices).
    fn upload(&self, host: &CpuStorage, device: Device) -> Result<Storage>;
    /// Starts copying host f32 elements to `device` and returns at once, with the copy in
    /// flight when the backend overlaps copies with compute (`None`: already complete).
    fn upload_ahead(
        &self,
        host: &[f32],
        device: Device,
    ) -> Result<(Storage, Option<crate::cuda::Pending>)>;
    /// The first `numel` elements of `storage` in host memory, in their own dtype.
    fn download(&self, storage: &Storage, numel: usize) -> Result<CpuStorage>;
    /// A copy of the first `numel` elements of `storage` converted to `dtype`, on its device.
    fn cast(&self, storage: &Storage, numel: usize, dtype: DType) -> Result<Storage>;
    /// `n` zeros of `dtype` on `device`.
    fn zeros(&self, n: usize, dtype: DType, device: Device) -> Result<Storage>;
}

/// The whole op set of one device.
pub trait Backend:
    GemmOps
    + ElementwiseOps
    + ReduceOps
    + LayoutOps
    + LayerNormOps
    + BatchNormOps
    + SoftmaxOps
    + ConvOps
    + OptimOps
    + AudioOps
    + AttentionOps
    + ContrastiveOps
    + PlaneOps
    + TransferOps
    + Sync
{
}

/// The backend of `device`, for op `op` (named in the error when there is none).
pub(crate) fn backend_for(op: &'static str, device: Device) -> Result<&'static dyn Backend> {
    // Every device kind has a backend now; ops a backend lacks return
    // `Error::NotImplemented` from the backend itself.
    let _ = op;
    match device {
        Device::Cpu => Ok(&crate::cpu::CpuBackend),
        Device::Cuda(_) => Ok(&crate::cuda::CudaBackend),
    }
}
