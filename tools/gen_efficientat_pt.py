#!/usr/bin/env python3
"""Writes the PyTorch checkpoints that `hr-train import-weights efficientat` is tested on.

- `mn04_as_state_dict.pt`: a plain EfficientAT state dict exactly as `torch.save(model.state_dict())`
  writes it (an OrderedDict with `_metadata`, f32 tensors, int64 `num_batches_tracked` counters,
  the classifier head included), width 0.4, with the weights of the mn04 reference fixture
  (EfficientAT's own layout; `param.<name>` entries of mobilenetv3_mn04.safetensors).
- `partial_state_dict.pt`: the stem of that state dict plus an unknown key (the importer must
  list the differences to the closest EfficientAT width).
- `not_a_state_dict.pt`: a training checkpoint (`{"model": ..., "optimizer": ..., "epoch": 3}`),
  which the importer must refuse.

Needs torch and safetensors. Rerun:
  python3 tools/gen_efficientat_pt.py fixtures/reference/mobilenetv3_mn04.safetensors \
      crates/hr-train/tests/data
"""
import sys
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors import safe_open


def main(fixture: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sd = OrderedDict()
    with safe_open(fixture, "pt") as f:
        names = [k[len("param."):] for k in f.keys() if k.startswith("param.")]
        for name in names:
            sd[name] = f.get_tensor("param." + name).to(torch.float32).contiguous()
            if name.endswith("running_var"):
                sd[name[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(7, dtype=torch.int64)
    # What Module.state_dict() attaches (a BUILD in the pickle).
    sd._metadata = OrderedDict({"": {"version": 1}})
    torch.save(sd, out / "mn04_as_state_dict.pt")
    partial = OrderedDict((k, v) for k, v in sd.items() if k.startswith("features.0."))
    partial["extra.weight"] = torch.zeros(2)
    torch.save(partial, out / "partial_state_dict.pt")
    ckpt = {"model": OrderedDict({"w": torch.zeros(3)}), "optimizer": {"lr": 0.1}, "epoch": 3}
    torch.save(ckpt, out / "not_a_state_dict.pt")
    print(f"wrote {len(sd)} entries to {out / 'mn04_as_state_dict.pt'} and {out / 'not_a_state_dict.pt'}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
