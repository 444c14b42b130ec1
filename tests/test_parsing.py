"""The text tool-call format: junk never raises, valid calls round-trip."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.brains.parsing import format_tool_call, parse_completion, to_ai_message

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
tool_names = st.from_regex(r"[a-z][a-z0-9_]{1,20}", fullmatch=True)
arguments = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
fragments = st.sampled_from(
    [
        "<tool_call>",
        "</tool_call>",
        "<TOOL_CALL>",
        "{",
        "}",
        "[",
        "]",
        '"',
        ":",
        ",",
        "```json",
        '"name"',
        '"arguments"',
        '"args"',
        "null",
        "\\",
        "\\u00",
        "\n",
        "{" * 50,
        "[" * 3000,
    ]
)


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_random_text_never_raises(text):
    parsed = parse_completion(text)
    assert isinstance(parsed.text, str)
    for call in parsed.tool_calls:
        assert isinstance(call["name"], str) and isinstance(call["args"], dict)


@given(st.lists(st.one_of(fragments, st.text(max_size=10)), max_size=30).map("".join))
@settings(max_examples=300, deadline=None)
def test_adversarial_text_never_raises(text):
    message = to_ai_message(text)
    assert (
        len(message.tool_calls) + len(message.invalid_tool_calls)
        <= text.lower().count("<tool_call>") + 1
    )


@given(
    st.text(max_size=40),
    st.lists(st.tuples(tool_names, arguments), min_size=1, max_size=3),
    st.text(max_size=40),
)
@settings(max_examples=200, deadline=None)
def test_valid_calls_round_trip(before, calls, after):
    before, after = before.replace("<", "&lt;"), after.replace("<", "&lt;")
    text = before + "\n".join(format_tool_call(n, a) for n, a in calls) + after
    parsed = parse_completion(text)
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [(n, a) for n, a in calls]
    assert parsed.invalid_tool_calls == []
    assert parsed.text == (before + after).strip() or "\n" in parsed.text or not parsed.text


def test_forgiving_shapes():
    text = (
        'Let me look.\n<tool_call>```json\n{"name": "flood_map", '
        '"args": "{\\"post\\": [\\"post\\"]}"}\n```</tool_call>\n'
        '<tool_call>{"function": {"name": "export", "arguments": {"result": "flood_1"}}}'
    )
    parsed = parse_completion(text)
    assert parsed.text == "Let me look."
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [
        ("flood_map", {"post": ["post"]}),
        ("export", {"result": "flood_1"}),
    ]
    bare = parse_completion('{"name": "scene_info", "arguments": {"scene": "post"}}')
    assert bare.tool_calls[0]["args"] == {"scene": "post"} and bare.text == ""
    answer = parse_completion('The JSON {"a": 1} is not a call.')
    assert answer.tool_calls == [] and answer.text.startswith("The JSON")


def test_broken_calls_are_invalid_not_lost():
    parsed = parse_completion(
        '<tool_call>{"name": "flood_map", "arguments": {"post": [</tool_call> done'
    )
    assert parsed.tool_calls == [] and parsed.text == "done"
    (bad,) = parsed.invalid_tool_calls
    assert bad["name"] == "flood_map" and "invalid JSON" in bad["error"]
    assert (
        parse_completion("<tool_call>[1, 2]</tool_call>")
        .invalid_tool_calls[0]["error"]
        .startswith("the call")
    )
    assert parse_completion('<tool_call>{"arguments": {}}</tool_call>').invalid_tool_calls
    assert json.loads(
        format_tool_call("x", {"t": "</tool_call>"})[len("<tool_call>") : -len("</tool_call>")]
    )
