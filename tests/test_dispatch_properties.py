"""Argument validation and dispatch as properties: whatever a model writes, `dispatch`
answers with a ToolMessage and never raises; what it accepts is exactly what the tool's
Args model accepts; and valid calls survive the text format unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.brains.parsing import format_tool_call, parse_completion
from agent.loop import dispatch
from agent.session import Session
from tests.conftest import write_tif
from tools.registry import REGISTRY

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**9), 10**9)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["post", "../../etc/passwd", "/etc/passwd", "$(id)", "ndvi_1", "NDVI"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
field_names = st.sampled_from(
    sorted({f for name in REGISTRY.names for f in REGISTRY[name].args_model.model_fields})
) | st.text(max_size=12)
arguments = st.dictionaries(field_names, json_values, max_size=5)
names = st.sampled_from(list(REGISTRY.names)) | st.text(max_size=20)
raw_args = arguments | json_values | st.text(max_size=40)


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    root = tmp_path_factory.mktemp("props")
    data = np.full((6, 16, 16), 1500, dtype=np.uint16)
    scene = write_tif(root / "post.tif", data, descriptions=["B2", "B3", "B4", "B8", "B11", "B12"])
    session = Session.create(root / "ws", "props")
    session.load(scene, "post")
    return session


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=names, args=raw_args)
def test_dispatch_never_raises(session: Session, name: str, args: object) -> None:
    outcome = dispatch(session, {"name": name, "args": args, "id": "c1"})
    assert outcome.message().tool_call_id == "c1"
    assert isinstance(outcome.record.ok, bool)
    if not outcome.record.ok:
        text = outcome.content
        assert text.startswith("Error") and len(text) < 4000
    # nothing a model writes escapes the workspace
    assert not Path("/etc/passwd.tif").exists()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(["scene_info", "spectral_index", "domain_lookup"]), args=arguments)
def test_validation_matches_the_args_model(session: Session, name: str, args: dict) -> None:
    spec = REGISTRY[name]
    try:
        spec.args_model.model_validate(args)
        valid = True
    except Exception:
        valid = False
    outcome = dispatch(session, {"name": name, "args": args, "id": "c2"})
    if not valid:
        assert not outcome.record.ok  # rejected before the tool ran


@given(
    name=st.sampled_from(list(REGISTRY.names)),
    args=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), json_values, max_size=4),
)
def test_valid_calls_round_trip_through_the_text_format(name: str, args: dict) -> None:
    parsed = parse_completion("Let me check.\n" + format_tool_call(name, args) + "\n")
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [(name, args)] or _has_nan(args)


def _has_nan(value: object) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    return False
