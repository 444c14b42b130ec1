"""Tiny random-initialised models built from configs, shared by the tests (and by
bench/gpu_check.py): nothing is downloaded, shapes are real."""

from __future__ import annotations

from typing import Any


def tiny_llava(
    tokenizer: Any,
    *,
    vision_hidden: int = 32,
    text_hidden: int = 64,
    image_side: int = 32,
    patch: int = 8,
    chat_template: str | None = None,
    seed: int = 0,
) -> tuple[Any, Any]:
    """(LlavaForConditionalGeneration, LlavaProcessor) over `tokenizer`, which must
    already hold an `<image>` token; the same seed gives the same weights."""
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=vision_hidden,
            intermediate_size=2 * vision_hidden,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=image_side,
            patch_size=patch,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=text_hidden,
            intermediate_size=2 * text_hidden,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=bos,
            eos_token_id=eos,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": image_side},
            crop_size={"height": image_side, "width": image_side},
        ),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=chat_template,
    )
    return model, processor


def tiny_gemma(
    vocab_size: int, *, seed: int = 0, sliding_window: int = 8, max_positions: int = 2048
) -> Any:
    """A two-layer Gemma 3 (one sliding, one full attention layer) with the real
    tokenizer's vocabulary: the local brain's architecture at toy size."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=max_positions,
    )
    return Gemma3ForCausalLM(config)
