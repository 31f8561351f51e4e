#!/usr/bin/env python3
"""PyTorch timings of the ops in crates/hr-tensor/benches/cuda_ops.rs, on the same card.

Same shapes, same byte counts, CUDA-event timing (median of 7 samples after warm-up), TF32 off
for the f32 GEMM. Prints a Markdown table. Run by tools/gpu_check.sh; needs torch with CUDA.
"""

import sys

try:
    import torch
except ImportError:
    print("skipped: torch not installed")
    sys.exit(0)

if not torch.cuda.is_available():
    print("skipped: no CUDA device")
    sys.exit(0)

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
# cuDNN picks its fastest algorithm on the first call of each shape (inside the warm-up).
torch.backends.cudnn.benchmark = True
dev = torch.device("cuda:0")


def time_ms(fn, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(7):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        e.synchronize()
        samples.append(s.elapsed_time(e) / reps)
    samples.sort()
    return samples[3]


rows = []


def gbs(nbytes, ms):
    return nbytes / (ms * 1e-3) / 1e9


print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}")

n_stream = 1 << 28
xs = torch.ones(n_stream, device=dev)
ms = time_ms(lambda: xs * 1.5 + 0.5, 5)  # two kernels in eager mode; also time a plain copy
ms_copy = time_ms(lambda: xs.clone(), 5)
ceiling = gbs(8.0 * n_stream, ms_copy)
rows.append(("stream ceiling (clone)", f"[{n_stream}]", ms_copy, f"{ceiling:.0f} GB/s", "1.00"))
rows.append(("affine (x*a+b, 2 kernels)", f"[{n_stream}]", ms, f"{gbs(8.0 * n_stream, ms):.0f} GB/s (1 pass counted)", "-"))
ys = torch.zeros(n_stream, device=dev)
ms_axpy = time_ms(lambda: ys.add_(xs, alpha=1e-3), 5)
rows.append(("axpy in place (y += a*x)", f"[{n_stream}]", ms_axpy, f"{gbs(12.0 * n_stream, ms_axpy):.0f} GB/s", f"{gbs(12.0 * n_stream, ms_axpy) / ceiling:.2f}"))
del xs, ys


def mem_row(op, shape, nbytes, ms):
    r = gbs(nbytes, ms)
    rows.append((op, shape, ms, f"{r:.0f} GB/s", f"{r / ceiling:.2f}"))


n = 4096
a = torch.rand(n, n, device=dev) * 4 - 2
b = torch.rand(n, n, device=dev) * 4 - 2
ms = time_ms(lambda: a @ b, 5)
gemm_peak = 2 * n**3 / (ms * 1e-3) / 1e12
rows.append(("matmul f32 (no TF32)", f"{n}x{n}x{n}", ms, f"{gemm_peak:.1f} TFLOP/s", "-"))
torch.backends.cuda.matmul.allow_tf32 = True
ms = time_ms(lambda: a @ b, 5)
rows.append(("matmul TF32 (reference only)", f"{n}x{n}x{n}", ms, f"{2 * n**3 / (ms * 1e-3) / 1e12:.1f} TFLOP/s", "-"))
torch.backends.cuda.matmul.allow_tf32 = False
del a, b

r, d = 32 * 97, 768
x = torch.rand(r, d, device=dev) * 4 - 2
ln = torch.nn.LayerNorm(d).to(dev)
with torch.no_grad():
    ms = time_ms(lambda: ln(x), 50)
mem_row("layer_norm", f"[{r}, {d}]", 2 * r * d * 4 + 2 * r * 4, ms)
xg = x.clone().requires_grad_(True)
y = ln(xg)
dy = torch.rand_like(y)
ms = time_ms(lambda: torch.autograd.grad(y, [xg, ln.weight, ln.bias], dy, retain_graph=True), 50)
mem_row("layer_norm_bwd", f"[{r}, {d}]", 5 * r * d * 4, ms)

bt, rr, k = 32, 12 * 97, 97
x = torch.rand(bt, rr, k, device=dev) * 4 - 2
keep = torch.tensor([[1.0 if j < k - 1 - (i % 40) else 0.0 for j in range(k)] for i in range(bt)], device=dev)
bias = torch.where(keep > 0, 0.0, float("-inf"))[:, None, :]


def masked_softmax():
    return torch.softmax(x + bias, dim=-1)


ms = time_ms(masked_softmax, 50)
mem_row("softmax masked (add + softmax)", f"[{bt * rr}, {k}]", 2 * bt * rr * k * 4, ms)
ms = time_ms(lambda: torch.softmax(x, dim=-1), 50)
mem_row("softmax (unmasked)", f"[{bt * rr}, {k}]", 2 * bt * rr * k * 4, ms)
del x

np_ = 100_000_000
p = torch.full((np_,), 0.5, device=dev, requires_grad=True)
p.grad = torch.full((np_,), 0.01, device=dev)
for fused in (True, False):
    try:
        opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, fused=fused, foreach=None if fused else True)
    except (TypeError, RuntimeError) as e:
        print(f"AdamW fused={fused}: {e}")
        continue
    ms = time_ms(opt.step, 5)
    mem_row(f"adamw step ({'fused' if fused else 'foreach'})", f"[{np_}]", 7 * np_ * 4, ms)
    del opt
del p

ne = 64 << 20
x = torch.full((ne,), 0.3, device=dev)
ms = time_ms(lambda: torch.nn.functional.gelu(x), 10)
mem_row("gelu (erf)", f"[{ne}]", 2 * ne * 4, ms)

del x

# Fused ops of crates/hr-tensor/benches/cuda_ops.rs (fused_rows): scaled_dot_product_attention
# with a key padding mask (f32: PyTorch picks its memory-efficient kernel), the symmetric
# contrastive loss as two cross-entropies, the bf16 GEMM under autocast.
for t, name in ((32, "attention"), (200, "attention, T 200")):
    b_, h, dh = 32, 12, 64
    q, k_, v = (torch.rand(b_, h, t, dh, device=dev) * 4 - 2 for _ in range(3))
    keep = torch.tensor([[j < t - (i % 8) for j in range(t)] for i in range(b_)], device=dev)
    am = keep[:, None, None, :]
    flops = 4.0 * b_ * h * t * t * dh
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with torch.no_grad():
        ms = time_ms(lambda: sdpa(q, k_, v, attn_mask=am), 20)
    rows.append((f"{name} fwd (sdpa)", f"B {b_} T {t} H {h} Dh {dh}", ms, f"{flops / (ms * 1e-3) / 1e12:.2f} TFLOP/s", f"{flops / (ms * 1e-3) / 1e12 / gemm_peak:.2f} of f32 GEMM"))
    qg, kg, vg = (x_.clone().requires_grad_(True) for x_ in (q, k_, v))
    o = sdpa(qg, kg, vg, attn_mask=am)
    ms = time_ms(lambda: torch.autograd.grad(o, [qg, kg, vg], o, retain_graph=True), 20)
    rows.append((f"{name} bwd (sdpa)", f"B {b_} T {t} H {h} Dh {dh}", ms, f"{2.5 * flops / (ms * 1e-3) / 1e12:.2f} TFLOP/s", f"{2.5 * flops / (ms * 1e-3) / 1e12 / gemm_peak:.2f} of f32 GEMM"))
    del q, k_, v, qg, kg, vg, o

n_ = 256
s_ = (torch.rand(n_, n_, device=dev) * 4 - 2).requires_grad_(True)
grp = torch.arange(n_, device=dev) // 5
pos = (grp[:, None] == grp[None, :]).float()


def nt_xent():
    t_ = pos / pos.sum(1, keepdim=True)
    return 0.5 * (torch.nn.functional.cross_entropy(s_, t_) + torch.nn.functional.cross_entropy(s_.t(), t_))


with torch.no_grad():
    ms = time_ms(nt_xent, 50)
rows.append(("contrastive loss fwd (2 cross-entropies)", f"[{n_}, {n_}]", ms, "-", "-"))
loss_ = nt_xent()
ms = time_ms(lambda: torch.autograd.grad(loss_, [s_], retain_graph=True), 50)
rows.append(("contrastive loss bwd (autograd)", f"[{n_}, {n_}]", ms, "-", "-"))
del s_, loss_

a = torch.rand(n, n, device=dev) * 4 - 2
b = torch.rand(n, n, device=dev) * 4 - 2
with torch.autocast("cuda", dtype=torch.bfloat16):
    ms = time_ms(lambda: a @ b, 5)
rows.append(("matmul bf16 autocast (casts + GEMM)", f"{n}x{n}x{n}", ms, f"{2 * n**3 / (ms * 1e-3) / 1e12:.1f} TFLOP/s", "-"))
del a, b

# MobileNetV3 mn40 (width 4.0) convolutions and batch norm, batch 32, 10 s clips (1 x 128 x 1000
# mel input): the shapes of CONV_BENCHES / batch_norm_rows in crates/hr-tensor/benches/cuda_ops.rs,
# same byte and FLOP counts (cuDNN, TF32 off).
CONV_BENCHES = [
    # (names (fwd, bwd_data, bwd_weight), x, w, stride, pad, groups, time bwd_data)
    (("conv stem 3x3 s2 1->64", "", "conv stem bwd_weight"), (32, 1, 128, 1000), (64, 1, 3, 3), 2, 1, 1, False),
    (("dw 3x3 s1 (block 1)", "dw 3x3 s1 bwd_data", "dw 3x3 s1 bwd_weight"), (32, 64, 64, 500), (64, 1, 3, 3), 1, 1, 64, True),
    (("dw 3x3 s2 (block 2)", "dw 3x3 s2 bwd_data", "dw 3x3 s2 bwd_weight"), (32, 256, 64, 500), (256, 1, 3, 3), 2, 1, 256, True),
    (("dw 5x5 s2 (block 4)", "dw 5x5 s2 bwd_data", "dw 5x5 s2 bwd_weight"), (32, 288, 32, 250), (288, 1, 5, 5), 2, 2, 288, True),
    (("pw 1x1 64->256 (block 2 expand)", "pw 1x1 64->256 bwd_data", "pw 1x1 64->256 bwd_weight"), (32, 64, 64, 500), (256, 64, 1, 1), 1, 0, 1, True),
    (("pw 1x1 2688->448 (block 12 project)", "pw 1x1 2688->448 bwd_data", "pw 1x1 2688->448 bwd_weight"), (32, 2688, 8, 63), (448, 2688, 1, 1), 1, 0, 1, True),
    (("pw 1x1 640->3840 (features.16)", "pw 1x1 640->3840 bwd_data", "pw 1x1 640->3840 bwd_weight"), (32, 640, 4, 32), (3840, 640, 1, 1), 1, 0, 1, True),
]


def numel(shape):
    out = 1
    for d in shape:
        out *= d
    return out


def conv_row(op, shape, nbytes, flops, ms, gemm):
    r = gbs(nbytes, ms)
    tf = flops / (ms * 1e-3) / 1e12
    frac = f"{tf / gemm_peak:.2f} of GEMM 4096^3" if gemm else f"{r / ceiling:.2f}"
    rows.append((op, shape, ms, f"{r:.0f} GB/s, {tf:.2f} TFLOP/s", frac))


def conv_rows(dtype):
    """CONV_BENCHES with activations (and, as under autocast, the weight) in `dtype`."""
    esize = 2 if dtype == torch.bfloat16 else 4
    tag = " bf16" if dtype == torch.bfloat16 else ""
    for names, xs, ws, st, pd, groups, bwd_data in CONV_BENCHES:
        x = torch.full(xs, 0.5, device=dev, dtype=dtype)
        w = (torch.rand(ws, device=dev) * 4 - 2).to(dtype)
        y = torch.nn.functional.conv2d(x, w, stride=st, padding=pd, groups=groups)
        dy = torch.full_like(y, 0.25)
        nbytes = esize * (numel(xs) + y.numel()) + 4 * numel(ws)
        flops = 2.0 * y.numel() * ws[1] * ws[2] * ws[3]
        gemm = ws[2] == 1 and groups == 1
        shape = f"x {list(xs)} w {list(ws)} s {st} p {pd} g {groups}{tag}"
        ms = time_ms(lambda: torch.nn.functional.conv2d(x, w, stride=st, padding=pd, groups=groups), 5)
        conv_row(names[0], shape, nbytes, flops, ms, gemm)

        def bwd(mask):
            return torch.ops.aten.convolution_backward(
                dy, x, w, None, [st, st], [pd, pd], [1, 1], False, [0, 0], groups, mask
            )

        if bwd_data:
            ms = time_ms(lambda: bwd([True, False, False]), 5)
            conv_row(names[1], shape, nbytes, flops, ms, gemm)
        ms = time_ms(lambda: bwd([False, True, False]), 5)
        conv_row(names[2], shape, nbytes, flops, ms, gemm)
        del x, w, y, dy


def batch_norm_rows(dtype):
    """Batch norm on block 2's expansion with activations in `dtype`, f32 parameters (cuDNN
    takes bf16 inputs with f32 weights and statistics, as under autocast)."""
    shape = (32, 256, 64, 500)
    c = shape[1]
    tag = " bf16" if dtype == torch.bfloat16 else ""
    x = (torch.rand(shape, device=dev) * 4 - 2).to(dtype)
    g = torch.rand(c, device=dev) * 4 - 2
    b = torch.rand(c, device=dev) * 4 - 2
    rm = torch.zeros(c, device=dev)
    rv = torch.ones(c, device=dev)
    nb = (2.0 if dtype == torch.bfloat16 else 4.0) * numel(shape)
    with torch.no_grad():
        ms = time_ms(lambda: torch.nn.functional.batch_norm(x, rm, rv, g, b, training=True, momentum=0.01, eps=1e-3), 5)
    rows.append(("batch_norm train fwd", f"{list(shape)}{tag}", ms, f"{gbs(3 * nb, ms):.0f} GB/s (3 passes)", f"{gbs(3 * nb, ms) / ceiling:.2f}"))
    xg = x.clone().requires_grad_(True)
    gg = g.clone().requires_grad_(True)
    bg = b.clone().requires_grad_(True)
    y = torch.nn.functional.batch_norm(xg, rm, rv, gg, bg, training=True, momentum=0.01, eps=1e-3)
    dy = torch.full_like(y, 0.25)
    ms = time_ms(lambda: torch.autograd.grad(y, [xg, gg, bg], dy, retain_graph=True), 5)
    rows.append(("batch_norm bwd", f"{list(shape)}{tag}", ms, f"{gbs(5 * nb, ms):.0f} GB/s (5 passes)", f"{gbs(5 * nb, ms) / ceiling:.2f}"))
    del xg, y, dy
    with torch.no_grad():
        ms = time_ms(lambda: torch.nn.functional.batch_norm(x, rm, rv, g, b, training=False, eps=1e-3), 5)
    rows.append(("batch_norm eval", f"{list(shape)}{tag}", ms, f"{gbs(2 * nb, ms):.0f} GB/s", f"{gbs(2 * nb, ms) / ceiling:.2f}"))
    del x


def se_rows(dtype):
    """The squeeze-and-excitation block's backward pieces on block 4's map (plane_rows in
    cuda_ops.rs), as eager PyTorch computes them: (dy * x).sum((2, 3)) and dy * gate + shift."""
    shape = (32, 288, 16, 125)
    tag = " bf16" if dtype == torch.bfloat16 else ""
    x = (torch.rand(shape, device=dev) * 4 - 2).to(dtype)
    dy = torch.full(shape, 0.25, device=dev, dtype=dtype)
    per = (torch.rand(shape[:2], device=dev) * 4 - 2).to(dtype)[:, :, None, None]
    nb = (2.0 if dtype == torch.bfloat16 else 4.0) * numel(shape)
    with torch.no_grad():
        ms = time_ms(lambda: (dy * x).sum((2, 3)), 10)
        rows.append(("SE gate gradient ((dy * x).sum)", f"{list(shape)}{tag}", ms, f"{gbs(2 * nb, ms):.0f} GB/s", f"{gbs(2 * nb, ms) / ceiling:.2f}"))
        ms = time_ms(lambda: dy * per + per, 10)
        rows.append(("SE dx (dy * gate + shift)", f"{list(shape)}{tag}", ms, f"{gbs(2 * nb, ms):.0f} GB/s", f"{gbs(2 * nb, ms) / ceiling:.2f}"))
    del x, dy


for dt in (torch.float32, torch.bfloat16):
    conv_rows(dt)
    batch_norm_rows(dt)
    se_rows(dt)

print("\n| op (PyTorch) | shape | time (ms) | achieved | fraction of stream ceiling |")
print("|---|---|---:|---:|---:|")
for op, shape, ms, rate, frac in rows:
    print(f"| {op} | {shape} | {ms:.3f} | {rate} | {frac} |")
