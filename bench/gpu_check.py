"""The hf brain's CUDA path on a tiny random LLaVA: 4-bit NF4 load through `HFBrain`,
an answer to a question with an image, then three QLoRA steps
(prepare_model_for_kbit_training + LoRA). Prints the loss of each step and the peak GPU
memory; exits non-zero on any failure. Needs torch, transformers, peft, bitsandbytes and
tokenizers; no network, no weights (the tokenizer is a byte-level BPE trained here).

    python bench/gpu_check.py              # on a CUDA machine, well under 3 minutes
    python bench/gpu_check.py --device cpu # the same steps on CPU, to check the script
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CORPUS = [
    "The flooded field lies north of the river; water covers 12 ha.",
    '<tool_call>{"name": "flood_map", "arguments": {"post": "post"}}</tool_call>',
    "Burn severity from dNBR: high in the east, unburned in the west.",
    "### System ### User ### Assistant ### Tool {<10><20><30><40>|<0>}",
] * 20


def tiny_llava(folder: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=600,
            special_tokens=["<pad>", "<s>", "</s>", "<image>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    from tests.tiny_models import tiny_llava as build_tiny_llava

    model, processor = build_tiny_llava(tokenizer, vision_hidden=64, text_hidden=128)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def data_url() -> str:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = parser.parse_args()

    import bitsandbytes as bnb
    import torch
    from langchain_core.messages import HumanMessage, SystemMessage
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from agent.brains.hf import HFBrain

    start = time.perf_counter()
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
    if args.device == "cuda":
        print(f"device: {torch.cuda.get_device_name(0)}")
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        folder = tiny_llava(Path(tmp) / "tiny_llava")
        brain = HFBrain(folder, device=args.device, load_in_4bit=True, max_new_tokens=16)
        model = brain.model
        quantized = sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
        print(f"loaded in {time.perf_counter() - start:.1f} s: {quantized} Linear4bit layers")
        if quantized == 0:
            print("FAIL: no layer was quantised")
            return 1

        messages = [
            SystemMessage("You are an Earth-observation analyst."),
            HumanMessage(
                content=[
                    {"type": "text", "text": "Where is the flooded field?"},
                    {"type": "image_url", "image_url": {"url": data_url()}},
                ]
            ),
        ]
        chunks: list[str] = []
        t = time.perf_counter()
        reply = brain.respond(messages, [], on_token=chunks.append)
        print(f"answer in {time.perf_counter() - t:.2f} s: {reply.content!r}")
        print(f"streamed {len(chunks)} chunks")

        # QLoRA: three steps on the same prompt + answer, image tokens masked from the loss.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        lora = LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        )
        model = get_peft_model(model, lora)
        model.print_trainable_parameters()
        prompt, images = brain.render(messages, [])
        inputs = brain.prepare_inputs(
            prompt + '<tool_call>{"name": "flood_map", "arguments": {"post": "post"}}</tool_call>',
            images,
        ).to(model.device)
        labels = inputs["input_ids"].clone()
        labels[labels == model.config.image_token_id] = -100
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model.train()
        losses = []
        for step in range(3):
            t = time.perf_counter()
            loss = model(**inputs, labels=labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            print(f"step {step}: loss {losses[-1]:.4f} ({time.perf_counter() - t:.2f} s)")
        if not all(math.isfinite(v) for v in losses):
            print("FAIL: loss is not finite")
            return 1
        if losses[-1] >= losses[0]:
            print("WARN: the loss did not fall in three steps")
    if args.device == "cuda":
        print(f"max_memory_allocated: {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
    print(f"OK in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
