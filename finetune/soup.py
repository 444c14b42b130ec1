"""Average LoRA adapters of one base model ("model soup", Wortsman et al. 2022).

    python -m finetune.soup STAGE6 STAGE6_CONTINUED --out DIR

Each LoRA matrix (A and B) is averaged on its own. That is the average of the weight
updates (B @ A) only to first order, which holds when the adapters share their starting
point and moved little from it, as a continuation of one adapter does. PEFT's
`add_weighted_adapter(..., "linear")` folds square roots of the weights and the scaling
into both matrices; `"cat"` is exact but doubles the rank and the file. Adapters of
different rank, alpha or target modules are refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
_SAME = ("r", "lora_alpha", "target_modules", "base_model_name_or_path", "task_type")


def average_adapters(folders: Sequence[Path], out: Path) -> Path:
    """Write the mean of the adapters in `folders` to `out` (weights and config)."""
    import torch
    from safetensors.torch import load_file, save_file

    if len(folders) < 2:
        raise ValueError("averaging needs at least two adapter folders")
    configs = []
    for folder in folders:
        if not (folder / WEIGHTS).is_file() or not (folder / CONFIG).is_file():
            raise FileNotFoundError(f"{folder} holds no LoRA adapter ({WEIGHTS}, {CONFIG})")
        configs.append(json.loads((folder / CONFIG).read_text(encoding="utf-8")))
    for key in _SAME:
        values = {json.dumps(_canonical(c.get(key)), sort_keys=True) for c in configs}
        if len(values) > 1:
            raise ValueError(
                f"the adapters differ in {key} ({', '.join(sorted(values))}); "
                "only adapters of one configuration can be averaged"
            )
    tensors = [load_file(folder / WEIGHTS) for folder in folders]
    if any(t.keys() != tensors[0].keys() for t in tensors):
        raise ValueError("the adapters hold different LoRA matrices; retrain one of them")
    mean = {k: torch.stack([t[k] for t in tensors]).mean(dim=0) for k in tensors[0]}
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in mean.items()}, out / WEIGHTS)
    shutil.copyfile(folders[0] / CONFIG, out / CONFIG)
    return out


def _canonical(value: object) -> object:
    """PEFT writes target_modules from a set: its order means nothing."""
    return sorted(value) if isinstance(value, list) else value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Average LoRA adapters of one base model.")
    parser.add_argument("adapters", nargs="+", type=Path, help="adapter folders (two or more)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the mean to")
    args = parser.parse_args(argv)
    print(average_adapters(args.adapters, args.out))


if __name__ == "__main__":
    main()
