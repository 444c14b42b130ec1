"""The agent loop driven by scripted brains: a real conversation on the Spain samples,
malformed calls the conversation survives, limits, failures and streamed events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, ToolMessage

from agent.brains.base import BrainError
from agent.brains.scripted import ScriptedBrain, render_answer
from agent.loop import Agent, AgentEvent, dispatch, resolve_tool_name
from agent.session import Session
from tests.conftest import sample
from tools.registry import REGISTRY

FLOOD_PLAN = [
    {
        "calls": [
            {"name": "scene_info", "args": {"scene": "post"}},
            {"name": "flood_map", "args": {"post": ["post", "post_sar"]}},
        ],
        "answer": "{info_1.sensor_title}: {flood_1.flooded_area_ha:.1f} ha of water "
        "({flood_1.water_fraction:.1%} of the scene, {flood_1.method}).",
    },
    {
        "calls": [{"name": "export", "args": {"result": "flood_1", "format": "geojson"}}],
        "answer": "Saved {export_1.features} polygons to {export_1.path}.",
    },
    # The follow-up names the first turn's result and adds an index on the same scene.
    {
        "steps": [
            [
                {"name": "export", "args": {"result": "FLOOD_1", "format": "tif"}},
                {"name": "spectral_index", "args": {"scene": "Post", "index": "mndwi"}},
            ]
        ],
        "answer": "flood_1 ({flood_1.flooded_area_ha:.1f} ha) as {last.path}; "
        "MNDWI mean {mndwi_1.mean:.3f}.",
    },
]


@pytest.fixture
def spain_session(tmp_path) -> Session:
    session = Session.create(tmp_path, "spain")
    session.load(sample("sentinel2/spain_flood_2019_s2_l1c.tif"), "post")
    session.load(sample("sar/spain_flood_2019_s1.tif"), "post_sar")
    return session


def test_flood_conversation_on_the_spain_samples(spain_session):
    events: list[AgentEvent] = []
    agent = Agent(ScriptedBrain(FLOOD_PLAN), spain_session, on_event=events.append)

    first = agent.run_turn("What is this scene and how much of it is flooded?")
    assert [(c.name, c.ok, c.handle) for c in first.tool_calls] == [
        ("scene_info", True, "info_1"),
        ("flood_map", True, "flood_1"),
    ]
    flood = spain_session.result("flood_1").data
    assert 0.15 < flood["water_fraction"] < 0.45  # the Segura flood plain under water
    assert flood["method"] == "fusion"
    assert f"{flood['flooded_area_ha']:.1f} ha" in first.answer
    assert first.answer.startswith("Sentinel-2 MSI Level-1C")
    assert any(a.endswith("results/flood_1.tif") for a in first.artifacts)

    # The area equals a direct call of the tool on the same scenes.
    from tools.raster import open_scene
    from tools.water import flood_map

    direct = flood_map(
        [
            open_scene(sample("sentinel2/spain_flood_2019_s2_l1c.tif")),
            open_scene(sample("sar/spain_flood_2019_s1.tif")),
        ]
    )
    assert direct.flooded_area_ha == pytest.approx(flood["flooded_area_ha"], rel=1e-6)

    second = agent.run_turn("Export the flood map as GeoJSON.")
    export = spain_session.result("export_1").data
    exported = Path(export["path"])
    assert exported.parent == spain_session.workspace / "exports"
    assert json.loads(exported.read_text())["type"] == "FeatureCollection"
    assert export["features"] > 0 and str(exported) in second.answer
    assert second.artifacts == [str(exported)]

    third = agent.run_turn("And flood_1 as a GeoTIFF; what is the mean MNDWI?")
    assert [(c.name, c.ok, c.handle) for c in third.tool_calls] == [
        ("export", True, "export_2"),
        ("spectral_index", True, "mndwi_1"),
    ]
    assert third.tool_calls[0].args == {"result": "FLOOD_1", "format": "geotiff"}
    mndwi = spain_session.result("mndwi_1").data["mean"]
    assert f"MNDWI mean {mndwi:.3f}" in third.answer
    assert "export_2" in spain_session.state.results

    kinds = [e.kind for e in events]
    assert kinds.count("turn_start") == 3 and kinds.count("done") == 3
    ends = [e for e in events if e.kind == "tool_end"]
    assert all(e.ok and e.duration_s is not None and e.duration_s >= 0 for e in ends)

    # The conversation resumes from disk and continues where it was.
    resumed = Session.resume(spain_session.root, "spain")
    assert set(resumed.state.results) == {"info_1", "flood_1", "export_1", "export_2", "mndwi_1"}
    assert (
        render_answer("{flood_1.flooded_area_ha:.1f}", resumed.messages)
        == f"{flood['flooded_area_ha']:.1f}"
    )


MALFORMED_PLAN = [
    {
        "steps": [
            [
                {"name": "flod_map", "args": {"post": ["post"]}},  # unknown tool
                {
                    "raw": '<tool_call>{"name": "scene_info", "arguments": {"scene": </tool_call>'
                },  # broken JSON
                {"name": "spectral_index", "args": {"scene": "post"}},  # missing argument
                {"name": "Scene-Info", "args": {"Scene": "POST"}},  # repaired
                {"name": "scene_info", "args": {"scene": "../../etc/passwd"}},  # refused path
                {
                    "name": "spectral_index",
                    "args": {"scene": "post_sar", "index": "NDVI"},
                },  # BandError
                {"name": "scene_info", "args": "{not json"},  # args not an object
            ]
        ],
        "answer": "{errors} calls failed; the scene is {info_1.sensor}.",
    },
    {
        "calls": [{"name": "domain_lookup", "args": {"topic": "NDVI"}}],
        "answer": "NDVI is {lookup_1.data.long_name}.",
    },
]


def test_malformed_calls_come_back_as_errors_and_the_conversation_goes_on(spain_session):
    agent = Agent(ScriptedBrain(MALFORMED_PLAN), spain_session)
    turn = agent.run_turn("Try things.")
    ok = [c.ok for c in turn.tool_calls]
    assert ok.count(True) == 1 and ok.count(False) == 6
    assert turn.answer == "6 calls failed; the scene is sentinel2_l1c."
    errors = {
        m.tool_call_id: m.content
        for m in spain_session.messages
        if isinstance(m, ToolMessage) and m.status == "error"
    }
    text = "\n".join(errors.values())
    assert "no tool named 'flod_map'. Did you mean flood_map?" in text
    assert "could not read the tool call" in text and "invalid JSON" in text
    assert (
        "invalid arguments for tool 'spectral_index'" in text and "'index': Field required" in text
    )
    assert "Path '../../etc/passwd' is refused" in text
    assert "Error executing tool 'spectral_index'" in text and "BandError" in text
    assert "Try another tool or scene" in text
    # Every call the brain made got exactly one reply, paired by id.
    asked = [
        c["id"]
        for m in spain_session.messages
        if isinstance(m, AIMessage)
        for c in [*m.tool_calls, *m.invalid_tool_calls]
    ]
    answered = [m.tool_call_id for m in spain_session.messages if isinstance(m, ToolMessage)]
    assert sorted(asked) == sorted(answered)

    follow_up = agent.run_turn("What is NDVI?")
    assert follow_up.answer == "NDVI is Normalized Difference Vegetation Index."


def test_name_repairs():
    assert resolve_tool_name("Flood-Map", REGISTRY) == ("flood_map", [])
    assert resolve_tool_name("functions.export", REGISTRY) == ("export", [])
    name, close = resolve_tool_name("burn_severty", REGISTRY)
    assert name is None and close[0] == "burn_severity"


def test_one_handle_where_a_list_is_expected(spain_session):
    outcome = dispatch(spain_session, {"name": "scene_info", "args": {"scene": "post"}, "id": "a"})
    assert outcome.record.ok and outcome.record.handle == "info_1"
    from tools.registry import FloodMapArgs

    assert FloodMapArgs.model_validate({"post": "post, post_sar"}).post == ["post", "post_sar"]


class _Looping:
    name, accepts_images = "looping", False

    def respond(self, messages, tools, *, on_token=None):
        return AIMessage(
            "", tool_calls=[{"name": "scene_info", "args": {"scene": "post"}, "id": None}]
        )


class _Failing:
    name, accepts_images = "failing", False

    def respond(self, messages, tools, *, on_token=None):
        raise BrainError("server down")


def test_max_steps_ends_the_turn_with_a_report(spain_session):
    turn = Agent(_Looping(), spain_session, max_steps=3).run_turn("loop")
    assert turn.stopped == "max_steps" and turn.steps == 3 and len(turn.tool_calls) == 3
    assert "stopped after 3 steps" in turn.answer and "info_3 (scene_info)" in turn.answer


def test_brain_failure_does_not_raise(spain_session):
    turn = Agent(_Failing(), spain_session).run_turn("hello")
    assert turn.stopped == "brain_error" and "server down" in turn.answer
    assert (spain_session.workspace / "session.json").exists()


def test_stream_turn_yields_events(spain_session):
    plan = [
        {
            "calls": [{"name": "scene_info", "args": {"scene": "post"}}],
            "answer": "{info_1.width} x {info_1.height} px",
        }
    ]
    events = list(Agent(ScriptedBrain(plan), spain_session).stream_turn("size?"))
    assert [e.kind for e in events] == [
        "turn_start",
        "tool_start",
        "tool_end",
        "token",
        "answer",
        "done",
    ]
    assert events[-1].turn is not None and events[-1].turn.answer == "512 x 512 px"


def test_missing_template_fields_render_as_na(spain_session):
    plan = [{"calls": [], "answer": "{flood_9.flooded_area_ha:.1f} ha {oops"}]
    turn = Agent(ScriptedBrain(plan), spain_session).run_turn("?")
    assert "template error" in turn.answer
    assert render_answer("{flood_9.area:.1f}", []) == "<n/a: flood_9.area>"


def test_an_answer_that_hides_a_failed_call_is_replaced_by_the_error(spain_session):
    plan = [
        {  # the tool fails (no such band); the answer makes up a result
            "calls": [{"name": "spectral_index", "args": {"scene": "post_sar", "index": "NDVI"}}],
            "answer": "Result ndvi_1: mean 0.42.",
        },
        {"calls": [], "answer": "Nothing else to do."},
    ]
    agent = Agent(ScriptedBrain(plan), spain_session)
    turn = agent.run_turn("NDVI of the radar scene?")
    assert turn.answer.startswith("spectral_index failed: Error executing tool 'spectral_index'")
    assert "BandError" in turn.answer and "0.42" not in turn.answer
    last = spain_session.messages[-1]
    assert isinstance(last, AIMessage) and last.content == turn.answer  # history agrees
    assert agent.run_turn("ok").answer == "Nothing else to do."  # no failed call: unchanged
