//! Convolution geometries of `tests/conv.rs`: the CPU reference cases ([`CASES`],
//! [`BIG_CASES`]) and the device parity cases ([`CONV_CASES`], also run with bf16
//! activations).

/// One test geometry.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: (usize, usize),
    pub stride: (usize, usize),
    pub pad: (usize, usize),
    pub dil: (usize, usize),
    pub groups: usize,
}

#[allow(clippy::too_many_arguments)]
pub const fn case(
    name: &'static str,
    n: usize,
    c_in: usize,
    hw: (usize, usize),
    c_out: usize,
    k: (usize, usize),
    stride: (usize, usize),
    pad: (usize, usize),
    dil: (usize, usize),
    groups: usize,
) -> Case {
    Case {
        name,
        n,
        c_in,
        h: hw.0,
        w: hw.1,
        c_out,
        k,
        stride,
        pad,
        dil,
        groups,
    }
}

#[rustfmt::skip]
pub const CASES: &[Case] = &[
    //   name, n, c_in, (h, w), c_out, k, stride, pad, dil, groups
    case("plain_3x3", 2, 3, (7, 6), 4, (3, 3), (1, 1), (0, 0), (1, 1), 1),
    case("stride2_pad1", 2, 3, (9, 11), 4, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    case("stem_1ch_s2", 3, 1, (13, 12), 5, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    case("dilation2_pad2", 2, 3, (10, 9), 5, (3, 3), (1, 1), (2, 2), (2, 2), 1),
    case("asym_s12_p21_d21", 1, 2, (9, 10), 3, (3, 2), (1, 2), (2, 1), (2, 1), 1),
    case("groups2", 2, 4, (7, 8), 6, (3, 2), (1, 1), (1, 0), (1, 1), 2),
    case("groups2_s2_d2", 2, 6, (11, 9), 4, (3, 3), (2, 2), (2, 1), (2, 2), 2),
    case("depthwise_k3_s1", 2, 5, (9, 10), 5, (3, 3), (1, 1), (1, 1), (1, 1), 5),
    case("depthwise_k3_s2", 2, 5, (9, 10), 5, (3, 3), (2, 2), (1, 1), (1, 1), 5),
    case("depthwise_k5_s1", 2, 3, (9, 11), 3, (5, 5), (1, 1), (2, 2), (1, 1), 3),
    case("depthwise_k5_s2", 2, 3, (11, 13), 3, (5, 5), (2, 2), (2, 2), (1, 1), 3),
    case("depthwise_k3_s3_d2", 1, 4, (12, 14), 4, (3, 2), (2, 3), (0, 2), (2, 2), 4),
    case("depthwise_nopad_s2", 2, 3, (8, 9), 3, (3, 3), (2, 2), (0, 0), (1, 1), 3),
    case("depthwise_1ch", 3, 1, (6, 7), 1, (3, 3), (1, 2), (1, 1), (1, 1), 1),
    case("depthwise_multiplier2", 2, 3, (7, 8), 6, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    case("pointwise", 2, 6, (5, 7), 4, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    case("pointwise_groups2", 2, 6, (5, 7), 4, (1, 1), (1, 1), (0, 0), (1, 1), 2),
    case("pointwise_stride2", 2, 3, (7, 9), 4, (1, 1), (2, 2), (0, 0), (1, 1), 1),
    case("pointwise_pad1", 1, 3, (4, 5), 2, (1, 1), (1, 1), (1, 1), (1, 1), 1),
    case("kernel_fills_input", 2, 2, (5, 4), 3, (5, 4), (1, 1), (0, 0), (1, 1), 1),
];

/// Larger geometries that take the parallel and threaded-GEMM branches.
#[rustfmt::skip]
pub const BIG_CASES: &[Case] = &[
    //   name, n, c_in, (h, w), c_out, k, stride, pad, dil, groups
    case("big_depthwise_s1", 2, 8, (24, 70), 8, (3, 3), (1, 1), (1, 1), (1, 1), 8),
    case("big_depthwise_k5_s2", 2, 8, (25, 71), 8, (5, 5), (2, 2), (2, 2), (1, 1), 8),
    case("big_pointwise", 1, 16, (20, 31), 24, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    case("big_stem", 1, 1, (64, 41), 16, (3, 3), (2, 2), (1, 1), (1, 1), 1),
];

/// Depthwise 3x3 / 5x5 (unrolled kernels), the stem, pointwise (cuBLAS) and general
/// geometries (run-time-size kernels), with odd sizes, H or W = 1, batch 1 and 3.
#[rustfmt::skip]
pub const CONV_CASES: &[Case] = &[
    //   name, n, c_in, (h, w), c_out, k, stride, pad, dil, groups
    case("dw3 s1", 3, 8, (7, 13), 8, (3, 3), (1, 1), (1, 1), (1, 1), 8),
    case("dw3 s2", 1, 8, (13, 7), 8, (3, 3), (2, 2), (1, 1), (1, 1), 8),
    case("dw3 s2 odd", 3, 5, (13, 13), 5, (3, 3), (2, 2), (1, 1), (1, 1), 5),
    case("dw3 h=1", 3, 5, (1, 13), 5, (3, 3), (1, 1), (1, 1), (1, 1), 5),
    case("dw3 w=1 s2", 1, 5, (13, 1), 5, (3, 3), (2, 2), (1, 1), (1, 1), 5),
    case("dw3 dil2 s2", 1, 4, (13, 13), 4, (3, 3), (2, 2), (2, 2), (2, 2), 4),
    case("dw3 no pad s(2,1)", 3, 4, (7, 13), 4, (3, 3), (2, 1), (0, 0), (1, 1), 4),
    case("dw5 s1", 3, 6, (13, 13), 6, (5, 5), (1, 1), (2, 2), (1, 1), 6),
    case("dw5 s2", 3, 6, (7, 13), 6, (5, 5), (2, 2), (2, 2), (1, 1), 6),
    case("dw5 s2 h=1", 1, 6, (1, 7), 6, (5, 5), (2, 2), (2, 2), (1, 1), 6),
    // h_out * w_out > 8192: one batch entry per weight-gradient chunk (3 chunks).
    case("dw3 big", 3, 4, (64, 130), 4, (3, 3), (1, 1), (1, 1), (1, 1), 4),
    case("stem", 3, 1, (13, 29), 16, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    case("stem mel", 2, 1, (128, 100), 8, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    case("pw", 3, 24, (7, 13), 40, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    // Many channels, a small image: the weight gradient transposes both activations to
    // channel-major and runs one GEMM over the batch (C_in * C_out > HW * (C_in + C_out)).
    case("pw channel-major dW", 3, 48, (2, 3), 40, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    case("pw b1 h=1", 1, 16, (1, 13), 8, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    case("pw 1x1 plane", 3, 7, (1, 1), 5, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    case("grouped 3x3", 3, 8, (9, 11), 12, (3, 3), (2, 1), (1, 0), (1, 2), 2),
    case("grouped 1x1", 1, 8, (7, 7), 6, (1, 1), (1, 1), (0, 0), (1, 1), 2),
    case("dense 3x3", 1, 3, (9, 10), 5, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    case("dense 5x5 dil", 3, 2, (13, 7), 3, (5, 5), (1, 1), (4, 2), (2, 1), 1),
    case("dw 3x5", 3, 4, (9, 11), 4, (3, 5), (1, 2), (1, 2), (1, 1), 4),
    case("dw 1x1 s2", 1, 4, (7, 13), 4, (1, 1), (2, 2), (0, 0), (1, 1), 4),
    case("pw stride 2", 3, 6, (7, 13), 5, (1, 1), (2, 2), (0, 0), (1, 1), 1),
];
