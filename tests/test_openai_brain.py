"""The openai brain against a real HTTP server on 127.0.0.1 speaking chat completions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

pytest.importorskip("langchain_openai")

from agent.brains.openai import OpenAIBrain  # noqa: E402
from agent.loop import Agent  # noqa: E402
from agent.session import Session  # noqa: E402
from tests.conftest import write_tif  # noqa: E402


class FakeServer:
    """Replies in order: a canned tool call, then a text answer (repeat)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.replies: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                message = server.replies.pop(0)
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    for chunk in _chunks(message):
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                payload = json.dumps(
                    {
                        "id": "cmpl-1",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "fake",
                        "choices": [
                            {
                                "index": 0,
                                "message": message,
                                "finish_reason": "tool_calls"
                                if message.get("tool_calls")
                                else "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def _chunks(message: dict) -> Iterator[dict]:
    base = {"id": "cmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "fake"}
    if message.get("tool_calls"):
        for i, call in enumerate(message["tool_calls"]):
            args = call["function"]["arguments"]
            yield {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "role": "assistant",
                            "tool_calls": [
                                {
                                    "index": i,
                                    "id": call["id"],
                                    "type": "function",
                                    "function": {
                                        "name": call["function"]["name"],
                                        "arguments": args[:5],
                                    },
                                }
                            ],
                        },
                    }
                ],
            }
            yield {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [{"index": i, "function": {"arguments": args[5:]}}]
                        },
                    }
                ],
            }
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
        return
    for word in message["content"].split(" "):
        yield {**base, "choices": [{"index": 0, "delta": {"content": word + " "}}]}
    yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}


def _call(name: str, arguments: str, call_id: str = "call_1") -> dict:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }


@pytest.fixture
def session(tmp_path) -> Session:
    data = np.random.default_rng(1).integers(1, 3000, (4, 16, 16)).astype("uint16")
    path = write_tif(tmp_path / "post.tif", data, descriptions=["blue", "green", "red", "nir"])
    s = Session.create(tmp_path / "ws", "oa")
    s.load(path, "post")
    return s


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(session, stream):
    with FakeServer() as server:
        server.replies = [
            _call("scene_info", '{"scene": "post"}'),
            {"role": "assistant", "content": "It is 16 by 16 pixels."},
        ]
        brain = OpenAIBrain(
            base_url=server.url,
            model="fake",
            api_key="sk-test",
            max_retries=0,
            timeout_s=10,
            stream=stream,
        )
        tokens: list[str] = []
        agent = Agent(
            brain, session, on_event=lambda e: tokens.append(e.text) if e.kind == "token" else None
        )
        turn = agent.run_turn("How big is post?")
    assert turn.stopped == "answer", turn.answer
    assert turn.answer.strip() == "It is 16 by 16 pixels."
    assert [(c.name, c.args, c.ok) for c in turn.tool_calls] == [
        ("scene_info", {"scene": "post"}, True)
    ]
    if stream:
        assert "".join(tokens).strip() == "It is 16 by 16 pixels."
    first, second = (r["body"] for r in server.requests)
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["auth"] == "Bearer sk-test"
    names = [t["function"]["name"] for t in first["tools"]]
    assert "flood_map" in names and "scene_info" in names
    assert (
        first["messages"][0]["role"] == "system"
        and "post: scene post.tif" in first["messages"][0]["content"]
    )
    tool_reply = second["messages"][-1]
    assert tool_reply["role"] == "tool" and tool_reply["tool_call_id"] == "call_1"
    assert json.loads(tool_reply["content"])["handle"] == "info_1"


def test_broken_arguments_and_images(session):
    with FakeServer() as server:
        server.replies = [
            _call("scene_info", '{"scene": '),
            {"role": "assistant", "content": "Sorry, retrying is not needed."},
        ]
        brain = OpenAIBrain(
            base_url=server.url,
            model="fake",
            max_retries=0,
            timeout_s=10,
            accepts_images=True,
            stream=False,
        )
        turn = Agent(brain, session).run_turn("Look at this.", images=["post"])
    assert (
        turn.tool_calls[0].ok is False
        and "could not read the tool call" in turn.tool_calls[0].error
    )
    user = server.requests[0]["body"]["messages"][1]
    assert user["role"] == "user" and user["content"][1]["type"] == "image_url"
    assert user["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert server.requests[1]["body"]["messages"][-1]["role"] == "tool"


def test_unreachable_server_is_a_turn_error(session):
    brain = OpenAIBrain(base_url="http://127.0.0.1:9/v1", model="fake", max_retries=0, timeout_s=2)
    turn = Agent(brain, session).run_turn("hello?")
    assert turn.stopped == "brain_error" and "EOAGENT_OPENAI_BASE_URL" in turn.answer
