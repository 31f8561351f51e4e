#!/usr/bin/env python3
"""Decoding on one core: `hr-data verify` against pyarrow + soundfile (libsndfile) on the same
Parquet shards, and the whole training loader (decode + crop + tokenize + batch) from the same
audio stored at 32 kHz. Prints a Markdown table with the ratios; docs/PERF.md records it.

    pip install soundfile pyarrow numpy
    cargo build --release -p hr-data
    python3 tools/bench_decode_peer.py [--clips 200] [--seconds 10] [--bin target/release/hr-data]

Every measurement runs pinned to one core (`taskset -c 0`) and is repeated (best of --repeat),
so it is a per-core figure; the machine should be otherwise idle. A benchmark, not a test.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

PEER = r"""
import hashlib, io, json, sys, time
import pyarrow.parquet as pq, soundfile as sf
root = sys.argv[1]
m = json.load(open(f"{root}/manifest.json"))
t = time.perf_counter(); n = 0
for shards in m["splits"].values():
    for s in shards:
        path = f"{root}/{s['path']}"
        h = hashlib.sha256(open(path, "rb").read()).hexdigest()
        assert h == s["sha256"], path
        f = pq.ParquetFile(path)
        for rg in range(f.num_row_groups):
            for a in f.read_row_group(rg, columns=["audio"]).column("audio").to_pylist():
                x, sr = sf.read(io.BytesIO(a["bytes"]), dtype="float32", always_2d=True)
                x.mean(axis=1)
                n += 1
print(n / (time.perf_counter() - t))
"""


def one_core(cmd, **kw):
    return subprocess.run(["taskset", "-c", "0", *cmd], check=True, capture_output=True, text=True, **kw)


def best_rate(fn, repeat):
    return max(fn() for _ in range(repeat))


def make_sources(tmp, clips, seconds):
    import numpy as np
    import soundfile as sf

    out = {}
    for sr in (32000, 44100):
        d = os.path.join(tmp, f"flac{sr}")
        os.makedirs(d)
        rng = np.random.default_rng(sr)
        t = np.arange(int(seconds * sr)) / sr
        with open(os.path.join(d, "metadata.jsonl"), "w") as side:
            for i in range(clips):
                x = 0.3 * np.sin(2 * np.pi * (200 + 37 * i) * t) + 0.02 * rng.standard_normal(len(t))
                sf.write(os.path.join(d, f"c{i:04d}.flac"), x, sr, subtype="PCM_16")
                side.write(json.dumps({"file_name": f"c{i:04d}.flac", "captions": [f"clip {i} a tone", "a steady tone"]}) + "\n")
        out[sr] = d
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", "target"), "release", "hr-data"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="hr-decode-peer-")
    try:
        src = make_sources(tmp, a.clips, a.seconds)
        rows = []
        sets = [(f"FLAC {sr / 1000:g} kHz", d, ["--codec", "original"]) for sr, d in src.items()]
        sets.append(("32 kHz wav (prepare's default)", src[32000], []))
        for name, d, codec in sets:
            ds = os.path.join(tmp, f"ds{len(rows)}")
            subprocess.run([a.bin, "prepare", "folder", "--source", d, "--out", ds, *codec], check=True, capture_output=True)

            def ours():
                t = time.perf_counter()
                one_core([a.bin, "verify", ds])
                return a.clips / (time.perf_counter() - t)

            def peer():
                return float(one_core([sys.executable, "-c", PEER, ds]).stdout)

            r_ours, r_peer = best_rate(ours, a.repeat), best_rate(peer, a.repeat)
            rows.append((f"{name}, read + hash + decode", r_ours, r_peer))
        print(f"{a.clips} clips of {a.seconds:g} s, one core (taskset -c 0), best of {a.repeat}\n")
        print("| measurement | hr-data verify (clips/s) | pyarrow + soundfile (clips/s) | ratio |")
        print("|---|---|---|---|")
        for name, o, p in rows:
            print(f"| {name} | {o:.1f} | {p:.1f} | {o / p:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
