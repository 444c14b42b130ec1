"""The one protocol every brain speaks.

A brain gets the conversation (LangChain messages: an optional SystemMessage, then
HumanMessage / AIMessage / ToolMessage) and the tool specs it may call, and returns one
AIMessage: text, and/or `tool_calls` ([{"name", "args", "id"}]), and/or
`invalid_tool_calls` for calls it tried to make but could not express (broken JSON).
The loop does everything else: validation, dispatch, retries, limits.

Brains that generate plain text (the embedded Gemma, a transformers VLM) subclass
`agent.brains.text.TextBrain`, which renders the conversation and the tool catalogue
into a prompt and parses `<tool_call>` blocks out of the completion.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage

    from tools.registry import ToolSpec

TokenCallback = Callable[[str], None]


class BrainError(Exception):
    """The brain could not answer at all (server down, model missing, out of memory).
    The loop ends the turn with this message; the conversation survives."""


@runtime_checkable
class Brain(Protocol):
    """Messages and tool specs in; one AIMessage out."""

    name: str
    # True when the brain reads image parts ({"type": "image_url", ...}) in messages.
    accepts_images: bool

    def respond(
        self,
        messages: Sequence[BaseMessage],
        tools: Sequence[ToolSpec],
        *,
        on_token: TokenCallback | None = None,
    ) -> AIMessage:
        """The next assistant message. `on_token`, when given, receives answer text as it
        is generated (brains that cannot stream may call it once with the whole text)."""
        ...
