#!/usr/bin/env python3
"""PyTorch reference of one training step of the late-fusion HybridRetriever (CPU or CUDA).

The same architecture and shapes as `cargo bench -p hr-models --bench retriever`
(crates/hr-models/benches/retriever.rs), written by us from the specs, random weights, f32:

- EfficientAT mel frontend (docs/spec-mobilenetv3-mn40.md section 1: preemphasis, STFT with a
  symmetric Hann window of 800 centred in 1024, reflect padding, Kaldi mel bank rebuilt per call
  for the jittered fmin / fmax, ln(x + 1e-5), SpecAugment, (x + 4.5) / 5);
- static EfficientAT MobileNetV3 at the preset's width (section 2; the mlp classifier head is
  built but unused, as in the Rust model), frames = features.16 averaged over frequency;
- HF `BertModel` (no pooler) from a config of the preset's size, shared by queries and metadata,
  dropout 0.2;
- the audio pooling transformer (docs/spec-retrieval.md section 1) and the text projection;
- late fusion (item = audio embedding + metadata embedding), symmetric NT-Xent (tau 0.05),
  Adam (lr 2e-5, betas 0.9 / 0.999, eps 1e-8).

One step = zero_grad + forward + backward + Adam step; timed after one warm-up step (median of
the timed steps). On the CPU peak memory is VmHWM of /proc/self/status (run one configuration per
process; default 2 threads). On CUDA (`--device cuda`) every clock reading follows a
torch.cuda.synchronize(), and peak memory is torch.cuda.max_memory_allocated / _reserved over
the timed steps (reset after the warm-up). `--amp bf16|fp16` runs the forward under
torch.autocast (the mel frontend stays f32: cuFFT has no bf16; fp16 adds a GradScaler);
`--tf32 on` lets f32 matmuls and convolutions use TF32 (off by default, like our plain-FP32
cuBLAS GEMMs; note PyTorch's own default leaves cuDNN convolutions on TF32).

`--flops` counts the FLOPs of one forward + backward (torch.utils.flop_counter.FlopCounterMode
on one extra untimed step: every matmul / bmm / conv / attention kernel, 2 FLOPs per
multiply-add, forward and backward; elementwise ops, norms, the FFT and Adam are not counted),
prints them per top-level module, and with `--peak-tflops X` the floor FLOPs / X and the
achieved fraction of X (H200 dense peaks, per NVIDIA: bf16/fp16 ~989, TF32 ~494, FP32 ~67).

    python3 tools/torch_retriever_bench.py --preset tiny --batch 32 --steps 3
    python3 tools/torch_retriever_bench.py --preset paper-base --batch 4 --steps 2 --breakdown
    python3 tools/torch_retriever_bench.py --preset paper-base --batch 32 --steps 10 \
        --device cuda --amp bf16 --flops --peak-tflops 989
"""

import argparse
import math
import os
import statistics
import sys
import time
import tomllib
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_RATE = 32000
MAX_TOKENS = 32


def sync(device):
    """Waits for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def vm(key):
    """A VmRSS / VmHWM line of /proc/self/status in MiB."""
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# ---------------------------------------------------------------- mel frontend (EfficientAT)


def kaldi_mel_bank(n_mels, n_fft, sr, fmin, fmax, device=None):
    """torchaudio.compliance.kaldi.get_mel_banks (no VTLN) plus a zero Nyquist column."""
    mel = lambda f: 1127.0 * torch.log1p(f / 700.0)
    lo, hi = 1127.0 * math.log1p(fmin / 700.0), 1127.0 * math.log1p(fmax / 700.0)
    delta = (hi - lo) / (n_mels + 1)
    f32 = dict(dtype=torch.float32, device=device)
    bins = mel(torch.arange(n_fft // 2, **f32) * (sr / n_fft)).unsqueeze(0)
    m = torch.arange(n_mels, **f32).unsqueeze(1)
    left, center, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
    up = (bins - left) / (center - left)
    down = (right - bins) / (right - center)
    w = torch.clamp(torch.minimum(up, down), min=0.0)
    return F.pad(w, (0, 1))  # (n_mels, n_fft / 2 + 1)


class MelFrontend(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer(
            "window", torch.hann_window(800, periodic=False), persistent=False
        )
        self.register_buffer(
            "preemph", torch.tensor([[[-0.97, 1.0]]]), persistent=False
        )

    def forward(self, x):
        # Always f32 (outside autocast: cuFFT has no bf16 transform).
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.forward_f32(x.float())

    def forward_f32(self, x):
        dev = x.device
        x = F.conv1d(x.unsqueeze(1), self.preemph).squeeze(1)  # N - 1 samples
        spec = torch.stft(
            x, 1024, hop_length=320, win_length=800, window=self.window,
            center=True, pad_mode="reflect", return_complex=True,
        )
        power = spec.real.square() + spec.imag.square()
        if self.training:
            fmin = float(torch.randint(0, 10, ()).item())
            fmax = 15000.0 + 1000.0 - float(torch.randint(0, 2000, ()).item())
        else:
            fmin, fmax = 0.0, 15000.0
        bank = kaldi_mel_bank(128, 1024, SAMPLE_RATE, fmin, fmax, dev)
        mel = torch.log(torch.matmul(bank, power) + 1e-5)
        if self.training:  # one frequency and one time mask per example, fill 0
            b, f, t = mel.shape
            for axis, param, size in ((1, 48, f), (2, 192, t)):
                u = torch.rand(b, 2, device=dev)
                width = torch.clamp((u[:, 0] * param).floor(), max=size)
                start = (u[:, 1] * (size - width)).floor()
                idx = torch.arange(size, device=dev).unsqueeze(0)
                keep = (idx < start[:, None]) | (idx >= (start + width)[:, None])
                shape = (b, size, 1) if axis == 1 else (b, 1, size)
                mel = mel * keep.view(shape)
        return ((mel + 4.5) / 5.0).unsqueeze(1)  # (B, 1, 128, T)


# ---------------------------------------------------------------- MobileNetV3 (static EfficientAT)

BASE = [  # (in, k, exp, out, SE, HS, stride) at width 1.0
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2),
    (24, 3, 72, 24, False, False, 1), (24, 5, 72, 40, True, False, 2),
    (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1),
    (160, 5, 960, 160, True, True, 1),
]


def make_divisible(v, d=8):
    new_v = max(d, int(v + d / 2) // d * d)
    return new_v + d if new_v < 0.9 * v else new_v


def conv_bn(cin, cout, k, stride=1, groups=1, act=None):
    layers = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


class SE(nn.Module):
    def __init__(self, c, s):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, s), nn.Linear(s, c)

    def forward(self, x):
        g = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3))))))
        return x * g[:, :, None, None]


class Block(nn.Module):
    def __init__(self, cin, k, exp, out, se, act, stride):
        super().__init__()
        layers = []
        if exp != cin:
            layers.append(conv_bn(cin, exp, 1, act=act))
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SE(exp, make_divisible(exp // 4, 8)))
        layers.append(conv_bn(exp, out, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == out

    def forward(self, x):
        y = self.block(x)
        return y + x if self.residual else y


class MobileNetV3(nn.Module):
    def __init__(self, width):
        super().__init__()
        adj = lambda c: make_divisible(c * width, 8)
        stem = adj(16)
        feats = [conv_bn(1, stem, 3, 2, act=nn.Hardswish)]
        for (i, k, e, o, se, hs, s) in BASE:
            feats.append(
                Block(adj(i), k, adj(e), adj(o), se, nn.Hardswish if hs else nn.ReLU, s)
            )
        self.last_conv = 6 * adj(160)
        feats.append(conv_bn(adj(160), self.last_conv, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*feats)
        # Built like EfficientAT, unused by the retriever (no gradient, so Adam skips it).
        self.classifier = nn.Sequential(
            nn.Identity(), nn.Identity(), nn.Linear(self.last_conv, adj(1280)),
            nn.Hardswish(), nn.Dropout(0.2), nn.Linear(adj(1280), 527),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def frames(self, mel, window=1000):
        """(B, 1, F, T) -> (B, n T', C) over non-overlapping windows of `window` frames."""
        b, _, f, t = mel.shape
        n, length = (1, t) if t <= window else (t // window, window)
        x = mel[..., : n * length].reshape(b, 1, f, n, length)
        x = x.permute(0, 3, 1, 2, 4).reshape(b * n, 1, f, length)
        y = self.features(x).mean(2).transpose(1, 2)  # (b n, T', C)
        return y.reshape(b, n * y.shape[1], y.shape[2])


# ---------------------------------------------------------------- pooling transformer


def sinusoidal_pe(max_len, d):
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    div = torch.pow(10000.0, -torch.arange(0, d, 2, dtype=torch.float64) / d)
    pe = torch.zeros(max_len, d, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return pe.float()


class AudioPooling(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["dim"]
        self.proj = nn.Linear(c["in_dim"], d)
        self.global_bias = nn.Parameter(torch.randn(1, 1, d) * 0.04)
        self.pe_scale = nn.Parameter(torch.ones(1))
        self.register_buffer("pe", sinusoidal_pe(c.get("max_len", 192), d))
        self.drop = nn.Dropout(c.get("dropout", 0.1))
        layer = nn.TransformerEncoderLayer(
            d, c["heads"], c["ffn"], c.get("dropout", 0.1), activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.layers = nn.TransformerEncoder(layer, c["layers"], enable_nested_tensor=False)
        self.out = nn.Linear(d, c["out_dim"])

    def forward(self, x, valid):
        """x (B, T, C), valid (B, T) bool -> (B, out)."""
        h = self.proj(x)
        g = self.global_bias + h.mean(1, keepdim=True)
        h = self.drop(h + self.pe_scale * self.pe[: h.shape[1]])
        seq = torch.cat([g, h], 1)
        pad = torch.cat([torch.zeros_like(valid[:, :1]), ~valid], 1)
        y = self.layers(seq, src_key_padding_mask=pad)
        return self.out(y[:, 0])


# ---------------------------------------------------------------- BERT without transformers


class _Layer(nn.Module):
    """One post-norm HF BertLayer (self-attention + GELU feed-forward), same math."""

    def __init__(self, t):
        super().__init__()
        h, self.heads = t["hidden_size"], t["num_attention_heads"]
        self.qkv = nn.Linear(h, 3 * h)
        self.attn_out = nn.Linear(h, h)
        self.ln1 = nn.LayerNorm(h, eps=t["layer_norm_eps"])
        self.ff1 = nn.Linear(h, t["intermediate_size"])
        self.ff2 = nn.Linear(t["intermediate_size"], h)
        self.ln2 = nn.LayerNorm(h, eps=t["layer_norm_eps"])
        self.p_attn = t["attention_probs_dropout_prob"]
        self.drop = nn.Dropout(t["hidden_dropout_prob"])

    def forward(self, x, bias):
        b, n, h = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        p = self.p_attn if self.training else 0.0
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        x = self.ln1(x + self.drop(self.attn_out(a.transpose(1, 2).reshape(b, n, h))))
        return self.ln2(x + self.drop(self.ff2(F.gelu(self.ff1(x)))))


class MiniBert(nn.Module):
    """HF BertModel's forward (no pooler) for machines without `transformers`."""

    def __init__(self, t):
        super().__init__()
        h = t["hidden_size"]
        self.word = nn.Embedding(t["vocab_size"], h)
        self.pos = nn.Embedding(t["max_position_embeddings"], h)
        self.typ = nn.Embedding(t["type_vocab_size"], h)
        self.ln = nn.LayerNorm(h, eps=t["layer_norm_eps"])
        self.drop = nn.Dropout(t["hidden_dropout_prob"])
        self.layers = nn.ModuleList(_Layer(t) for _ in range(t["num_hidden_layers"]))

    def forward(self, input_ids, attention_mask):
        n = input_ids.shape[1]
        pos = torch.arange(n, device=input_ids.device)[None]
        x = self.word(input_ids) + self.pos(pos) + self.typ(torch.zeros_like(input_ids))
        x = self.drop(self.ln(x))
        bias = torch.zeros(attention_mask.shape, dtype=x.dtype, device=x.device)
        bias = bias.masked_fill(attention_mask == 0, torch.finfo(x.dtype).min)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return x


def make_bert(t):
    """HF BertModel when `transformers` is installed, else the same math in MiniBert."""
    try:
        from transformers import BertConfig, BertModel
    except ImportError:
        print("transformers not installed: using MiniBert (the same BERT math in plain torch)")
        return MiniBert(t), False
    bert_cfg = BertConfig(
        vocab_size=t["vocab_size"], hidden_size=t["hidden_size"],
        num_hidden_layers=t["num_hidden_layers"],
        num_attention_heads=t["num_attention_heads"],
        intermediate_size=t["intermediate_size"],
        max_position_embeddings=t["max_position_embeddings"],
        type_vocab_size=t["type_vocab_size"], layer_norm_eps=t["layer_norm_eps"],
        hidden_dropout_prob=t["hidden_dropout_prob"],
        attention_probs_dropout_prob=t["attention_probs_dropout_prob"],
    )
    return BertModel(bert_cfg, add_pooling_layer=False), True


# ---------------------------------------------------------------- the retriever


class HybridRetriever(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        t = cfg["text"]
        self.text, self.hf_bert = make_bert(t)
        self.text_proj = nn.Linear(t["hidden_size"], cfg["pooling"]["out_dim"])
        width = int(cfg["audio"]["backbone"][2:4]) / 10.0
        self.mel = MelFrontend()
        self.audio_cnn = MobileNetV3(width)
        self.audio_head = AudioPooling(cfg["pooling"])
        self.tau = cfg.get("tau", 0.05)

    def encode_text(self, ids, mask):
        h = self.text(input_ids=ids, attention_mask=mask)
        h = h.last_hidden_state if self.hf_bert else h
        return self.text_proj(h[:, 0])

    def loss(self, items, queries, clip_ids):
        c = F.normalize(items, dim=1) @ F.normalize(queries, dim=1).T / self.tau
        pos = (clip_ids[:, None] == clip_ids[None, :]).float()
        la = (F.log_softmax(c, dim=0) * pos).sum() / pos.sum()
        lt = (F.log_softmax(c, dim=1) * pos).sum() / pos.sum()
        return -0.5 * (la + lt)

    def forward(self, batch, times=None):
        def mark(name, t0):
            if times is not None:
                sync(batch["wav"].device)
                times.setdefault(name, []).append(time.perf_counter() - t0)
            return time.perf_counter()

        t = time.perf_counter()
        mel = self.mel(batch["wav"])
        t = mark("mel", t)
        frames = self.audio_cnn.frames(mel)
        t = mark("CNN fwd", t)
        n = batch["wav"].shape[1]
        tf = frames.shape[1]
        nvalid = torch.ceil(batch["valid_len"].double() / n * tf).long()
        valid = torch.arange(tf, device=frames.device)[None, :] < nvalid[:, None]
        a = self.audio_head(frames, valid)
        t = mark("pooling fwd", t)
        q = self.encode_text(batch["q_ids"], batch["q_mask"])
        m = self.encode_text(batch["m_ids"], batch["m_mask"])
        t = mark("BERT fwd (queries + metadata)", t)
        items = a + m * batch["present"][:, None]
        loss = self.loss(items, q, batch["clip_ids"])
        mark("fusion + loss fwd", t)
        return loss


def make_batch(b, seconds, vocab, gen, device):
    n = seconds * SAMPLE_RATE
    cls, sep = (101, 102) if vocab > 1000 else (2, 3)

    def toks():
        ids = torch.randint(5, vocab, (b, MAX_TOKENS), generator=gen)
        ids[:, 0], ids[:, -1] = cls, sep
        return ids, torch.ones(b, MAX_TOKENS, dtype=torch.long)

    q_ids, q_mask = toks()
    m_ids, m_mask = toks()
    batch = {
        "wav": torch.randn(b, n, generator=gen) * 0.1,
        "valid_len": torch.full((b,), n),
        "q_ids": q_ids, "q_mask": q_mask, "m_ids": m_ids, "m_mask": m_mask,
        "present": torch.ones(b),
        "clip_ids": torch.arange(b),
    }
    return {k: v.to(device) for k, v in batch.items()}


def breakdown(model, batch, steps):
    """Standalone forward / backward of each part (upstream gradient = random / ones), f32."""
    parts = {}
    dev = batch["wav"].device

    def rec(name, t0):
        sync(dev)
        parts.setdefault(name, []).append(time.perf_counter() - t0)
        return time.perf_counter()

    for step in range(steps + 1):
        model.zero_grad(set_to_none=True)
        sync(dev)
        t = time.perf_counter()
        mel = model.mel(batch["wav"])
        t = rec("mel", t)
        frames = model.audio_cnn.frames(mel)
        t = rec("CNN fwd", t)
        frames.backward(torch.randn_like(frames))
        t = rec("CNN bwd", t)
        x = frames.detach().requires_grad_(False)
        valid = torch.ones(x.shape[:2], dtype=torch.bool, device=dev)
        sync(dev)
        t = time.perf_counter()
        a = model.audio_head(x, valid)
        t = rec("pooling fwd", t)
        a.backward(torch.randn_like(a))
        t = rec("pooling bwd", t)
        q = model.text(input_ids=batch["q_ids"], attention_mask=batch["q_mask"]).last_hidden_state[:, 0]
        m = model.text(input_ids=batch["m_ids"], attention_mask=batch["m_mask"]).last_hidden_state[:, 0]
        t = rec("BERT fwd (queries + metadata)", t)
        (q.sum() + m.sum()).backward()
        rec("BERT bwd (queries + metadata)", t)
        if step == 0:
            parts = {}
    return {k: statistics.median(v) for k, v in parts.items()}


def count_flops(model, batch, amp_ctx):
    """Estimated FLOPs of one forward + backward, and the forward FLOPs per top-level module.

    The forward is counted exactly by FlopCounterMode (matmul / bmm / conv / attention,
    2 FLOPs per multiply-add). The backward is taken as 2x the forward of everything after the
    mel frontend (input gradient + weight gradient of every GEMM and convolution; the standard
    "3x forward" estimate): FlopCounterMode's own backward formula ignores `groups` for the
    weight gradient and overcounts the depthwise convolutions of the MobileNet many times.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model.zero_grad(set_to_none=True)
    counter = FlopCounterMode(display=False)
    with counter:
        with amp_ctx():
            model(batch)
    # Per top-level child: the sum over its shallowest recorded sub-modules (the CNN runs
    # through `frames`, not `forward`, so its own entry is missing but `features` is there).
    groups = {}
    for name, ops in counter.get_flop_counts().items():
        parts = name.split(".")
        if len(parts) < 2:
            continue
        groups.setdefault(parts[1], []).append((len(parts), sum(ops.values())))
    per_module = {}
    for top, entries in groups.items():
        depth = min(d for d, _ in entries)
        per_module[top] = sum(f for d, f in entries if d == depth)
    fwd = counter.get_total_flops()
    mel = per_module.get("mel", 0)
    return mel + 3 * (fwd - mel), fwd, per_module


def profile_step(model, opt, scaler, batch, amp_ctx, device):
    """One training step under torch.profiler: the 45 kernels with the most GPU time (the twin
    of the Rust bench's HR_BENCH_PROFILE table)."""
    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        opt.zero_grad(set_to_none=True)
        with amp_ctx():
            loss = model(batch, None)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sync(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    sums = {}
    for e in kernels:
        n, t = sums.get(e.name, (0, 0.0))
        sums[e.name] = (n + 1, t + e.device_time_total / 1e3)
    busy = sum(t for _, t in sums.values())
    calls = sum(n for n, _ in sums.values())
    print(f"\n| PyTorch op profile of one step: GPU busy {busy:.1f} ms in {calls} kernels | | | |")
    print("| kernel | calls | GPU ms | share |\n|---|---:|---:|---:|")
    rows = sorted(sums.items(), key=lambda kv: -kv[1][1])
    for name, (n, t) in rows[:45]:
        print(f"| {name[:90]} | {n} | {t:.3f} | {100 * t / max(busy, 1e-12):.1f} % |")
    rest = rows[45:]
    if rest:
        print(f"| ({len(rest)} more names) | {sum(n for _, (n, _) in rest)} "
              f"| {sum(t for _, (_, t) in rest):.3f} | |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument("--amp", default="off", choices=["off", "bf16", "fp16"])
    ap.add_argument("--tf32", default="off", choices=["off", "on"])
    ap.add_argument("--flops", action="store_true", help="count the FLOPs of one step")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the card's peak rate for the floor (e.g. 989 for H200 bf16 dense)")
    ap.add_argument("--breakdown", action="store_true")
    ap.add_argument("--profile", action="store_true",
                    help="one more step under torch.profiler: GPU time per kernel (CUDA only)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"
        torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    amp_ctx = lambda: torch.autocast(  # noqa: E731
        device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None
    )
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    cfg = tomllib.loads((ROOT / "configs/models" / f"{args.preset}.toml").read_text())
    model = HybridRetriever(cfg).train().to(device)
    # Every trainable scalar, the unused CNN classifier head included (as the Rust bench counts).
    trainable = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=2e-5, betas=(0.9, 0.999), eps=1e-8)
    gen = torch.Generator().manual_seed(7)
    batch = make_batch(args.batch, args.seconds, cfg["text"]["vocab_size"], gen, device)
    rss_init = vm("VmRSS:")
    gpu_init = torch.cuda.memory_allocated(device) / 2**20 if cuda else float("nan")
    card = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(
        f"# torch {torch.__version__}, device {device} ({card}), amp {args.amp}, tf32 {args.tf32}, "
        f"{torch.get_num_threads()} threads, {args.preset}: "
        f"{trainable} trainable parameters (incl. the unused CNN classifier head), "
        f"batch {args.batch}, {args.seconds} s audio, {MAX_TOKENS}-token queries and metadata",
        file=sys.stderr,
    )
    flops = None
    if args.flops:
        flops, fwd_flops, per_module = count_flops(model, batch, amp_ctx)
        print(
            f"# FLOPs of one training step (forward counted by FlopCounterMode, backward = 2x the "
            f"forward after the mel frontend): {flops / 1e9:.1f} GFLOP "
            f"(forward {fwd_flops / 1e9:.1f} GFLOP)"
        )
        for name, f in sorted(per_module.items(), key=lambda kv: -kv[1]):
            print(f"#   forward {name}: {f / 1e9:.1f} GFLOP")
        if args.peak_tflops:
            print(f"# floor at {args.peak_tflops:g} TFLOP/s: {flops / args.peak_tflops / 1e9:.2f} ms")
    fwd, bwd, adam, total, cpu, times = [], [], [], [], [], {}
    for step in range(args.steps + 1):
        if step == 1 and cuda:
            sync(device)
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        c0 = time.process_time()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with amp_ctx():
            loss = model(batch, times if step > 0 else None)
        sync(device)
        t1 = time.perf_counter()
        scaler.scale(loss).backward()
        sync(device)
        t2 = time.perf_counter()
        scaler.step(opt)
        scaler.update()
        sync(device)
        t3 = time.perf_counter()
        c1 = time.process_time()
        mem = (
            f"GPU max allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
            if cuda else f"VmHWM {vm('VmHWM:'):.0f} MiB"
        )
        print(
            f"#   step {step}{' (warm-up)' if step == 0 else ''}: {t3 - t0:.3f} s, CPU {c1 - c0:.2f} s "
            f"(forward {t1 - t0:.3f}, backward {t2 - t1:.3f}, adam {t3 - t2:.3f}), "
            f"loss {loss.item():.4f}, {mem}",
            file=sys.stderr,
        )
        if step > 0:
            fwd.append(t1 - t0), bwd.append(t2 - t1), adam.append(t3 - t2), total.append(t3 - t0)
            cpu.append(c1 - c0)
    med = statistics.median(total)
    hwm = vm("VmHWM:")
    name = f"{args.preset} (PyTorch {torch.__version__}"
    name += f", {card}, amp {args.amp}, tf32 {args.tf32})" if cuda else ")"
    if cuda:
        print(
            f"| preset | batch | audio | device | params (M) | step (s, median of {args.steps}) "
            "| forward (s) | backward (s) | Adam (s) | items/s | TFLOP/s | peak GPU allocated (MiB) "
            "| peak GPU reserved (MiB) | GPU allocated after init (MiB) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        rate = f"{flops / med / 1e12:.1f}" if flops else "-"
        print(
            f"| {name} | {args.batch} | {args.seconds} s | {device} | {trainable / 1e6:.2f} | {med:.4f} "
            f"| {statistics.median(fwd):.4f} | {statistics.median(bwd):.4f} "
            f"| {statistics.median(adam):.4f} | {args.batch / med:.1f} | {rate} "
            f"| {torch.cuda.max_memory_allocated(device) / 2**20:.0f} "
            f"| {torch.cuda.max_memory_reserved(device) / 2**20:.0f} | {gpu_init:.0f} |"
        )
    else:
        print(
            f"| preset | batch | audio | threads | params (M) | step (s, median of {args.steps}) "
            "| forward (s) | backward (s) | Adam (s) | CPU s/step | items/s | peak RSS (MiB) "
            "| RSS after init (MiB) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        print(
            f"| {name} | {args.batch} | {args.seconds} s "
            f"| {torch.get_num_threads()} | {trainable / 1e6:.2f} | {med:.3f} "
            f"| {statistics.median(fwd):.3f} | {statistics.median(bwd):.3f} "
            f"| {statistics.median(adam):.3f} | {statistics.median(cpu):.2f} | {args.batch / med:.2f} "
            f"| {hwm:.0f} | {rss_init:.0f} |"
        )
    if flops and args.peak_tflops:
        print(
            f"# achieved {flops / med / 1e12:.1f} TFLOP/s = {flops / med / 1e12 / args.peak_tflops:.1%} "
            f"of {args.peak_tflops:g} (matmul/conv FLOPs only; step includes Adam and the mel)"
        )
    print()
    print(f"| forward part ({args.preset}, batch {args.batch}) | seconds (median) |")
    print("|---|---|")
    for k, v in times.items():
        print(f"| {k} | {statistics.median(v):.4f} |")
    if args.profile and cuda:
        profile_step(model, opt, scaler, batch, amp_ctx, device)
    if args.breakdown:
        print()
        print(f"| standalone part ({args.preset}, batch {args.batch}, f32) | seconds (median) |")
        print("|---|---|")
        for k, v in breakdown(model, batch, args.steps).items():
            print(f"| {k} | {v:.4f} |")
        peak = (
            f"peak GPU allocated incl. breakdown (MiB) | {torch.cuda.max_memory_allocated(device) / 2**20:.0f}"
            if cuda else f"peak RSS incl. breakdown (MiB) | {vm('VmHWM:'):.0f}"
        )
        print(f"| {peak} |")


if __name__ == "__main__":
    main()
