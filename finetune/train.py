"""LoRA fine-tuning of the brains: the embedded Gemma on the CPU, any causal LM or
image-text-to-text model (QLoRA on CUDA).

    eoagent finetune --steps 600 --batch-size 4            # the local brain's adapter
    eoagent finetune --model-kind image_text_to_text --base-model PATH --llava-json F

One `FinetuneConfig` drives the function and the CLI. Loss is taken on assistant
tokens only. For the local brain the ~880-token fixed prompt prefix is the same in
every example: its keys and values are computed once (without gradient, refreshed
every `prefix_refresh_every` steps as the adapter moves) and each batch trains on
the rest, so a step costs what the short conversational part costs. Logits are
computed only where a label is, which skips most of the 262k-word LM head.

Checkpoints (adapter, optimizer, step, RNG) go to `checkpoint_dir/step-N/`; the
newest is resumed with `--resume`. The adapter alone is also written to
`output_dir` at every checkpoint, so a usable adapter exists if a run is cut short.
"""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from finetune.encoding import IGNORE, Encoded

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ADAPTER_DIR = REPO / "finetune" / "adapters" / "local"
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = ["gate_proj", "up_proj", "down_proj"]


class FinetuneConfig(BaseModel):
    """Everything a fine-tuning run needs; `eoagent finetune --help` lists these."""

    model_config = ConfigDict(extra="forbid")

    model_kind: Literal["causal_lm", "image_text_to_text"] = Field(
        default="causal_lm",
        description="causal_lm: a text model (the embedded Gemma by default) trained on "
        "tool-call conversations from the registry; image_text_to_text: a VLM trained on "
        "GeoChat/LLaVA instruction JSON.",
    )
    base_model: str = Field(
        default="local",
        description="'local' for the embedded Gemma 3 270M (converted cache), or a local "
        "path / hub id of the base model.",
    )
    output_dir: Path = Field(
        default=DEFAULT_ADAPTER_DIR, description="Where the final adapter is written."
    )
    checkpoint_dir: Path = Field(
        default=Path("~/.cache/eoagent/finetune-checkpoints/local"),
        description="Where resumable checkpoints (adapter + optimizer + step) go.",
    )
    resume: bool = Field(default=False, description="Resume from the newest checkpoint.")
    init_adapter: Path | None = Field(
        default=None,
        description="Start from this adapter's weights (same LoRA settings) instead of a "
        "fresh LoRA: more training on new data without repeating the old steps.",
    )
    data: Path | None = Field(
        default=None,
        description="Training conversations (JSONL of finetune.data.Example); built from "
        "the tool registry when unset.",
    )
    llava_json: Path | None = Field(
        default=None, description="GeoChat/LLaVA instruction JSON for image_text_to_text."
    )
    image_root: Path | None = Field(
        default=None, description="Folder the LLaVA JSON's image paths are relative to."
    )
    n_train: int = Field(default=3000, ge=1, description="Conversations built for training.")
    seed: int = Field(default=0, description="Seed of the data, the order and the LoRA init.")
    steps: int = Field(default=600, ge=1, description="Optimizer steps.")
    batch_size: int = Field(default=4, ge=1, description="Sequences per step.")
    lr: float = Field(default=2e-4, gt=0, description="Peak learning rate (AdamW).")
    warmup_steps: int = Field(default=20, ge=0, description="Linear warm-up steps.")
    schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="Learning-rate decay after warm-up."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    lora_r: int = Field(default=16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(default=32, ge=1, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="LoRA dropout.")
    target_modules: Literal["attention", "attention_mlp", "all_linear"] = Field(
        default="attention_mlp",
        description="Which linear layers get LoRA: q/k/v/o, those plus the MLP, or every "
        "linear layer peft finds (not the LM head).",
    )
    quantization: Literal["auto", "none", "4bit"] = Field(
        default="auto",
        description="4bit: QLoRA (bitsandbytes NF4 + prepare_model_for_kbit_training, CUDA); "
        "auto: 4bit on CUDA for models other than the embedded one, none on the CPU.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where to train; auto picks CUDA when present."
    )
    max_length: int = Field(default=384, ge=16, description="Longest sequence (tokens) kept.")
    call_only_share: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Share of conversations cut after the step that answers the last user "
        "message (a call or a text reply); the rest also train the answer after a tool result.",
    )
    cache_prefix: bool = Field(
        default=True,
        description="Compute the local brain's fixed prompt prefix once and train on the "
        "rest (causal_lm with base_model=local).",
    )
    prefix_refresh_every: int = Field(
        default=50, ge=1, description="Steps between recomputing the cached prefix."
    )
    save_every: int = Field(default=100, ge=1, description="Steps between checkpoints.")
    threads: int | None = Field(default=None, ge=1, description="torch CPU threads.")
    max_minutes: float | None = Field(
        default=None, gt=0, description="Stop (and save) after this much wall time."
    )


# -- model ------------------------------------------------------------------------------


def _device(config: FinetuneConfig) -> str:
    import torch

    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


def load_base(config: FinetuneConfig) -> tuple[Any, Any]:
    """The base model and its tokenizer (causal_lm) or processor (image_text_to_text)."""
    import torch
    import transformers

    if config.base_model == "local":
        from agent.brains.local import cache_dir, convert_gguf, is_converted, load_model

        if not is_converted(cache_dir()):
            convert_gguf(cache_dir())
        model, tokenizer = load_model(cache_dir())
        return model.train(), tokenizer
    device = _device(config)
    four_bit = config.quantization == "4bit" or (config.quantization == "auto" and device == "cuda")
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if device == "cuda" else torch.float32}
    if four_bit:
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
        kwargs["device_map"] = {"": 0} if device == "cuda" else "cpu"
    if config.model_kind == "image_text_to_text":
        model = transformers.AutoModelForImageTextToText.from_pretrained(
            config.base_model, **kwargs
        )
        processor = transformers.AutoProcessor.from_pretrained(config.base_model)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(config.base_model, **kwargs)
        processor = transformers.AutoTokenizer.from_pretrained(config.base_model)
    if not four_bit:
        model = model.to(device)  # type: ignore[arg-type]  # transformers' stub wants a model
    return model, processor


def add_lora(model: Any, config: FinetuneConfig) -> Any:
    """Wrap `model` with a fresh LoRA (after k-bit preparation if it is quantised)."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_quantized", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    targets: Any = {
        "attention": ATTENTION,
        "attention_mlp": ATTENTION + MLP,
        "all_linear": "all-linear",
    }[config.target_modules]
    if config.model_kind == "image_text_to_text" and isinstance(targets, list):
        # only the language model's layers: the vision tower keeps its weights
        targets = rf".*language_model.*\.({'|'.join(targets)})"
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(config.seed)
    return get_peft_model(model, lora)


# -- batches ------------------------------------------------------------------------


def pad_batch(items: Sequence[Encoded], pad_id: int) -> dict[str, Any]:
    """Right-padded ids, labels and attention mask of the non-prefix parts."""
    import torch

    width = max(len(e.ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item.ids)
        ids[row, :n] = torch.tensor(item.ids)
        labels[row, :n] = torch.tensor(item.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def prefix_cache(model: Any, prefix: Sequence[int]) -> Any:
    """Keys and values of the fixed prefix (batch 1), without gradient."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(
            input_ids=torch.tensor([list(prefix)], device=model.device),
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
    return cache


def batch_loss(
    model: Any, batch: dict[str, Any], cache: Any | None = None, prefix_len: int = 0
) -> Any:
    """Mean cross-entropy over labelled tokens; logits only at the positions before
    a label. With `cache` (the prefix's keys and values), the batch continues it."""
    import torch
    import torch.nn.functional as F

    device = model.device
    ids = batch["input_ids"].to(device)
    labels = batch["labels"].to(device)
    mask = batch["attention_mask"].to(device)
    # logits at t predict token t+1: keep the columns before any labelled token
    targets = labels[:, 1:]
    columns = torch.nonzero((targets != IGNORE).any(dim=0)).flatten()
    kwargs: dict[str, Any] = {"logits_to_keep": columns}
    if cache is not None:
        past = copy.deepcopy(cache)
        if ids.shape[0] > 1:
            past.batch_repeat_interleave(ids.shape[0])
        full_mask = torch.cat(
            [torch.ones((ids.shape[0], prefix_len), dtype=mask.dtype, device=device), mask], 1
        )
        positions = torch.arange(prefix_len, prefix_len + ids.shape[1], device=device)
        kwargs.update(
            cache=past,
            attention_mask=full_mask,
            use_cache=True,
            position_ids=positions.expand(ids.shape[0], -1),
        )
    else:
        kwargs.update(attention_mask=mask)
    for key in ("pixel_values", "image_sizes"):
        if key in batch:
            kwargs[key] = batch[key].to(device)
    out = model(input_ids=ids, **kwargs)
    logits = out.logits.float()
    wanted = targets[:, columns]
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), wanted.reshape(-1), ignore_index=IGNORE
    )


# -- data for each kind -------------------------------------------------------------


def local_training_data(config: FinetuneConfig, tokenizer: Any) -> tuple[list[int], list[Encoded]]:
    """(prefix ids, encoded conversations) for the embedded brain."""
    from agent.settings import Settings
    from finetune.data import Example, build_examples, final_step, read_jsonl
    from finetune.encoding import LocalEncoder
    from tools.registry import get_registry

    tools = list(get_registry())
    examples = (
        read_jsonl(config.data)
        if config.data
        else build_examples(tools, config.n_train, "train", config.seed)
    )
    encoder = LocalEncoder(tokenizer, tools, Settings().system_prompt())
    rng = random.Random(config.seed)
    encoded = []
    for example in examples:
        if rng.random() < config.call_only_share:
            cut = final_step(example) + 1
            example = Example(**{**example.__dict__, "messages": example.messages[:cut]})
        item = encoder.encode_example(example)
        if len(item.ids) <= config.max_length:
            encoded.append(item)
    prefixes = {tuple(e.prefix) for e in encoded}
    if len(prefixes) != 1:
        raise ValueError("the conversations do not share one fixed prefix")
    return list(prefixes.pop()), encoded


def encode_vlm(example: dict[str, Any], processor: Any, max_length: int) -> dict[str, Any]:
    """One chat example with images as processor inputs; labels on assistant turns.
    Boundaries come from rendering growing prefixes of the conversation."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in example["images"]] or None
    messages = example["messages"]

    def render(upto: int, generation: bool) -> str:
        if getattr(processor, "chat_template", None):
            return str(
                processor.apply_chat_template(
                    messages[:upto], add_generation_prompt=generation, tokenize=False
                )
            )
        text = ""
        for m in messages[:upto]:
            body = "".join("<image>\n" if p["type"] == "image" else p["text"] for p in m["content"])
            text += f"{'USER' if m['role'] == 'user' else 'ASSISTANT'}: {body}\n"
        return text + ("ASSISTANT: " if generation else "")

    def length(text: str) -> int:
        n_images = text.count("<image>")
        enc = processor(
            text=text,
            images=images[:n_images] if images and n_images else None,
            return_tensors="pt",
        )
        return int(enc["input_ids"].shape[1])

    full = render(len(messages), False)
    n_images = full.count("<image>")
    enc = processor(
        text=full, images=images[:n_images] if images and n_images else None, return_tensors="pt"
    )
    ids = enc["input_ids"][0]
    labels = ids.clone().fill_(IGNORE)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start, end = length(render(i, True)), length(render(i + 1, False))
        labels[start:end] = ids[start:end]
    out = {"input_ids": ids[:max_length], "labels": labels[:max_length]}
    if "pixel_values" in enc:
        out["pixel_values"] = enc["pixel_values"]
    return out


# -- checkpoints --------------------------------------------------------------------


def save_checkpoint(
    model: Any, optimizer: Any, step: int, config: FinetuneConfig, extra: dict[str, Any]
) -> Path:
    import torch

    root = config.checkpoint_dir.expanduser()
    folder = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "step": step,
            "rng": random.getstate(),
            "torch_rng": torch.get_rng_state(),
            **extra,
        },
        tmp / "trainer_state.pt",
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    save_adapter(model, config.output_dir)
    return folder


def save_adapter(model: Any, folder: Path) -> Path:
    """Only adapter_config.json + adapter_model.safetensors, written atomically."""
    folder = folder.expanduser()
    tmp = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (tmp / name).replace(folder / name)
    shutil.rmtree(tmp, ignore_errors=True)
    return folder


def latest_checkpoint(config: FinetuneConfig) -> Path | None:
    root = config.checkpoint_dir.expanduser()
    found = sorted(root.glob("step-*")) if root.is_dir() else []
    return found[-1] if found else None


def _load_adapter_weights(model: Any, folder: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    misfit = (
        f"{folder} does not fit this LoRA; "
        "use the --lora-r and --target-modules it was trained with"
    )
    try:
        result = set_peft_model_state_dict(
            model, load_file(str(folder / "adapter_model.safetensors"))
        )
    except RuntimeError as error:  # shapes differ: another rank
        raise ValueError(f"{misfit} ({str(error).splitlines()[-1].strip()})") from error
    unexpected = list(getattr(result, "unexpected_keys", None) or [])
    if unexpected:
        raise ValueError(f"{misfit} ({len(unexpected)} weights it has no place for).")


def load_checkpoint(model: Any, optimizer: Any, folder: Path) -> dict[str, Any]:
    import torch

    _load_adapter_weights(model, folder)
    state = torch.load(folder / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    random.setstate(state["rng"])
    torch.set_rng_state(state["torch_rng"])
    return dict(state)


# -- the loop -----------------------------------------------------------------------


def learning_rate(step: int, config: FinetuneConfig) -> float:
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def train(
    config: FinetuneConfig,
    *,
    model: Any = None,
    tokenizer: Any = None,
    data: Sequence[Encoded] | Sequence[dict[str, Any]] | None = None,
    prefix: Sequence[int] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter; returns a report (steps, losses, wall time, sizes).
    `model`/`tokenizer`/`data`/`prefix` may be given (tests, notebooks); otherwise
    they come from the config."""
    import torch
    from tqdm.auto import tqdm

    started = time.perf_counter()
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    if model is None:
        model, tokenizer = load_base(config)
    if data is None:
        if config.model_kind == "image_text_to_text":
            from finetune.data import convert_llava

            if config.llava_json is None:
                raise ValueError("image_text_to_text needs --llava-json (GeoChat/LLaVA JSON)")
            data = [
                encode_vlm(e, tokenizer, config.max_length)
                for e in convert_llava(config.llava_json, config.image_root)
            ]
        elif config.base_model == "local":
            prefix, data = local_training_data(config, tokenizer)
        else:
            raise ValueError("a causal_lm other than 'local' needs data passed in")
    data = list(data)  # type: ignore[assignment]
    use_prefix = bool(prefix) and config.cache_prefix
    if prefix and not config.cache_prefix:  # train on whole sequences instead
        data = [
            Encoded([], list(prefix) + e.ids, [IGNORE] * len(prefix) + e.labels, e.exact)
            for e in data
            if isinstance(e, Encoded)
        ]
    model = add_lora(model, config) if not hasattr(model, "peft_config") else model
    if config.init_adapter is not None:
        _load_adapter_weights(model, config.init_adapter.expanduser())
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    step = 0
    if config.resume and (found := latest_checkpoint(config)) is not None:
        step = int(load_checkpoint(model, optimizer, found)["step"])
    pad_id = _pad_id(tokenizer)
    order_epoch = 0
    order = _length_grouped(data, config.batch_size, random.Random(config.seed))
    losses: list[float] = []
    cache = None
    bar = tqdm(total=config.steps, initial=step, desc="finetune", dynamic_ncols=True)
    stopped_early = False
    while step < config.steps:
        if use_prefix and (cache is None or step % config.prefix_refresh_every == 0):
            model.eval()
            cache = prefix_cache(model, prefix or [])
            model.train()
        epoch, start = divmod(step * config.batch_size, len(order))
        if epoch != order_epoch:  # a fresh order each pass over the data
            order_epoch = epoch
            order = _length_grouped(
                data, config.batch_size, random.Random(f"{config.seed}-{epoch}")
            )
        picked = [data[order[(start + k) % len(order)]] for k in range(config.batch_size)]
        batch = _collate(picked, pad_id)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        loss = batch_loss(
            model, batch, cache if use_prefix else None, len(prefix or []) if use_prefix else 0
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
        if on_step is not None:
            on_step(step, losses[-1])
        out_of_time = (
            config.max_minutes is not None
            and time.perf_counter() - started > config.max_minutes * 60
        )
        if step % config.save_every == 0 or step == config.steps or out_of_time:
            save_checkpoint(model, optimizer, step, config, {"loss": losses[-1]})
        if out_of_time:
            stopped_early = True
            break
    bar.close()
    save_adapter(model, config.output_dir)
    size = (config.output_dir.expanduser() / "adapter_model.safetensors").stat().st_size
    report = {
        "steps": step,
        "stopped_early": stopped_early,
        "examples": len(data),
        "examples_seen": step * config.batch_size,
        "tokens_per_example": sum(len(_ids(e)) for e in data) / max(1, len(data)),
        "prefix_tokens": len(prefix or []),
        "wall_s": time.perf_counter() - started,
        "first_loss": sum(losses[:20]) / max(1, len(losses[:20])),
        "last_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "losses": losses,
        "adapter_bytes": size,
        "trainable_params": sum(p.numel() for p in params),
        "config": json.loads(config.model_dump_json()),
    }
    return report


def _length_grouped(data: Sequence[Any], batch_size: int, rng: random.Random) -> list[int]:
    """A shuffled order in which each batch holds items of similar length (sorted
    within windows of 32 batches), so padding stays small; batches are then shuffled."""
    order = list(range(len(data)))
    rng.shuffle(order)
    window = batch_size * 32
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(_ids(data[i])))
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [i for batch in batches for i in batch]


def _ids(item: Any) -> Sequence[int]:
    return item.ids if isinstance(item, Encoded) else item["input_ids"]


def _pad_id(tokenizer: Any) -> int:
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    pad = getattr(tok, "pad_token_id", None)
    return int(pad if pad is not None else (tok.eos_token_id or 0))


def _collate(items: Sequence[Any], pad_id: int) -> dict[str, Any]:
    import torch

    if isinstance(items[0], Encoded):
        return pad_batch(items, pad_id)
    encoded = [
        Encoded([], list(i["input_ids"].tolist()), list(i["labels"].tolist()), True) for i in items
    ]
    batch = pad_batch(encoded, pad_id)
    if "pixel_values" in items[0]:
        batch["pixel_values"] = torch.cat([i["pixel_values"] for i in items])
    return batch


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m finetune.train [options]`: the same as `eoagent finetune`."""
    import argparse

    from finetune.options import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser(description="Train a LoRA adapter for a brain.")
    add_config_arguments(parser, FinetuneConfig)
    report = train(config_from_args(FinetuneConfig, parser.parse_args(argv)))
    report.pop("losses")
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
