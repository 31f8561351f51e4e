#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into fuzz/corpus/TARGET/seed-* (small valid
inputs of each reader). Rerunnable; needs pyarrow and numpy for the Parquet shard seed.

usage: python3 tools/fuzz_seeds.py
"""
import io
import json
import math
import os
import shutil
import struct
import wave

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def tiny_wav(rate=32000, n=400, channels=1):
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 5))) * channels for i in range(n)))
    return b.getvalue()


def main():
    manifest = {
        "schema_version": 1, "name": "seed", "created_by": "fuzz_seeds.py",
        "splits": {"train": [{"path": "train/part-00000-of-00001.parquet", "rows": 1, "bytes": 10,
                              "sha256": "00" * 32}]},
        "tokenizer": "tokenizer.json",
    }
    put("manifest", "basic.json", json.dumps(manifest, indent=1))
    put("config", "demo.toml", open(os.path.join(ROOT, "configs/experiments/demo.toml")).read())
    put("config", "override.toml", "optim.global_batch=8\n[run]\nmax_steps = 3\n")
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "bark", "##s", "car"])}
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                           "pair": [], "special_tokens": {
                               "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                               "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}}},
        "decoder": None,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }
    put("tokenizer", "wordpiece.json", json.dumps(tok))
    put("audio", "wav32k.wav", tiny_wav())
    put("audio", "wav44k-stereo.wav", tiny_wav(44100, 300, 2))
    fixtures = os.path.join(ROOT, "crates/hr-data/tests/fixtures")
    for f in ["tone-48k-mono.ogg", "tone-48k-mono.mp3", "tone-44k1-stereo.flac"]:
        with open(os.path.join(fixtures, f), "rb") as src:
            put("audio", f, src.read())
    put("csv", "clotho.csv", "file_name,caption_1,caption_2\na.wav,\"a dog, barking\",cars pass\nb.wav,rain,wind\n")
    put("csv", "latin1.csv", b"file_name,keywords\na.wav,caf\xe9;rain\n")
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                         "__metadata__": {"format": "pt"}}).encode()
    header += b" " * (-len(header) % 8)
    put("safetensors", "f32.safetensors", struct.pack("<Q", len(header)) + header + struct.pack("<4f", 1, 2, 3, 4))
    put("sidecar", "metadata.jsonl", '{"file_name": "a.wav", "captions": ["a tone"], "keywords": ["tone"], "split": "test"}\n')
    put("sidecar", "captions.csv", "file_name,caption,keywords\na.wav,a tone,tone;beep\n")
    put("sweep", "demo.toml", open(os.path.join(ROOT, "configs/sweeps/demo.toml")).read())
    wire_seeds()
    import pyarrow as pa
    import pyarrow.parquet as pq
    strs = pa.list_(pa.field("item", pa.string(), True))
    schema = pa.schema([
        pa.field("id", pa.string(), False),
        pa.field("audio", pa.struct([pa.field("bytes", pa.binary(), True), pa.field("path", pa.string(), True)]), False),
        pa.field("captions", strs, False), pa.field("keywords", strs, False), pa.field("labels", strs, False),
        pa.field("description", pa.string(), True), pa.field("sample_rate", pa.int32(), False),
        pa.field("duration_s", pa.float32(), False), pa.field("license", pa.string(), True),
    ])
    table = pa.table({
        "id": ["c0"], "audio": [{"bytes": tiny_wav(n=64), "path": "c0.wav"}], "captions": [["a tone"]],
        "keywords": [["tone"]], "labels": [[]], "description": [None], "sample_rate": pa.array([32000], pa.int32()),
        "duration_s": pa.array([0.002], pa.float32()), "license": [None],
    }, schema=schema)
    b = io.BytesIO()
    pq.write_table(table, b, compression="NONE")
    put("shard", "one-row.parquet", b.getvalue())


def blob(b):
    return struct.pack("<I", len(b)) + b


def pieces(*bodies):
    """The harness's framing of hr_dist::fuzzing: each piece after its u16 length."""
    return b"".join(struct.pack("<H", len(b)) + b for b in bodies)


def wire_seeds():
    """hr-dist's wire messages (crates/hr-dist/src/{auth,store}.rs, ring/frames.rs)."""
    hello = b"HRDIST01" + bytes([1]) + struct.pack("<I", 0) + bytes(32)
    put("rendezvous", "hello", hello)
    requests = [
        bytes([1]) + blob(b"hr-dist/ring/0") + blob(b"127.0.0.1:4000"),  # set
        bytes([2]) + blob(b"hr-dist/ring/0"),  # get
        bytes([3]) + blob(b"k") + struct.pack("<Q", 0),  # wait
        bytes([4]) + blob(b"n") + struct.pack("<q", 5),  # add
        bytes([5]) + blob(b"hr-dist/rank/1") + blob(b"me"),  # set if absent
    ]
    put("rendezvous", "requests", pieces(*requests))
    put("rendezvous", "replies", pieces(bytes([0]), bytes([1]), bytes([0]) + blob(b"v"), bytes([2])))

    def header(kind, op, seq, n):
        return struct.pack("<BBQQ", kind, op, seq, n)

    floats = struct.pack("<4f", 1, 2, 3, 4)
    put("ring", "data", bytes([9]) + pieces(header(1, 1, 1, 16) + floats, header(1, 1, 2, 16) + floats))
    put("ring", "abort", bytes([0]) + pieces(header(2, 0, 1, 4) + b"gone"))


if __name__ == "__main__":
    main()
