"""Base of the brains that generate plain text (embedded Gemma, a transformers VLM).

Subclasses implement `generate(prompt, images=..., on_token=...)`; this class renders
the conversation and the tool catalogue into one prompt in the project's tool-use
format (see `agent.brains.parsing`) and turns the completion into an AIMessage.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent.brains.base import TokenCallback
from agent.brains.parsing import CLOSE_TAG, format_tool_call, to_ai_message

if TYPE_CHECKING:
    from langchain_core.messages import AIMessage, BaseMessage

    from tools.registry import ToolSpec

TOOL_FORMAT = (
    "To call a tool, write exactly one line per call:\n"
    + format_tool_call("tool_name", {"argument": "value"})
    + "\nThen stop and wait for the result. Name scenes and results by their handles. "
    "When you have what you need, answer in plain text without any tool call."
)


class TextBrain(ABC):
    """A text-completion model behind the Brain protocol."""

    name = "text"
    accepts_images = False
    stop: tuple[str, ...] = (CLOSE_TAG, "\n### User", "\n### Tool")

    @abstractmethod
    def generate(
        self, prompt: str, *, images: Sequence[str] = (), on_token: TokenCallback | None = None
    ) -> str:
        """The completion of `prompt`, ending at (or before) one of `self.stop`.
        `images` are data URLs of the images attached to the conversation."""

    def respond(
        self,
        messages: Sequence[BaseMessage],
        tools: Sequence[ToolSpec],
        *,
        on_token: TokenCallback | None = None,
    ) -> AIMessage:
        prompt, images = self.render(messages, tools)
        completion = self.generate(prompt, images=images, on_token=on_token)
        if "<tool_call>" in completion and CLOSE_TAG not in completion:
            completion += CLOSE_TAG  # generation stopped on the closing tag
        return to_ai_message(completion)

    def render(
        self, messages: Sequence[BaseMessage], tools: Sequence[ToolSpec]
    ) -> tuple[str, list[str]]:
        """The prompt text, and the image URLs found in the messages."""
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

        from tools.adapters import tool_catalogue_text
        from tools.registry import Registry

        registry = Registry()
        for spec in tools:
            registry.register(spec)
        parts: list[str] = []
        images: list[str] = []
        for message in messages:
            if isinstance(message, SystemMessage):
                parts.append(
                    f"### System\n{message.text}\n\n### Tools\n"
                    f"{tool_catalogue_text(registry)}\n\n{TOOL_FORMAT}"
                )
            elif isinstance(message, HumanMessage):
                images += _image_urls(message.content)
                parts.append(f"### User\n{message.text}")
            elif isinstance(message, AIMessage):
                calls = "\n".join(
                    format_tool_call(c["name"], c["args"]) for c in message.tool_calls
                )
                parts.append(f"### Assistant\n{message.text}\n{calls}".rstrip())
            elif isinstance(message, ToolMessage):
                parts.append(f"### Tool {message.name or ''}\n{message.text}".rstrip())
        parts.append("### Assistant\n")
        return "\n\n".join(parts), images


def _image_urls(content: Any) -> list[str]:
    if not isinstance(content, list):
        return []
    urls = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            url = part.get("image_url")
            urls.append(url.get("url") if isinstance(url, dict) else str(url))
    return [u for u in urls if u]
