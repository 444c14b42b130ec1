"""Every outside view of the registry, made in one place.

- `openai_tool_schema` / `openai_tools`: OpenAI-style function tools (chat completions
  `tools=[...]`), also what ChatOpenAI.bind_tools and vLLM take.
- `tool_catalogue_text`: a compact catalogue for text brains' prompts (small models
  read one line per tool better than a JSON schema).
- `langchain_tools`: LangChain StructuredTools bound to a session, for LangChain or
  LangGraph agents; they dispatch through the same validated path as our loop.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from tools.registry import Registry, ToolSpec, get_registry

if TYPE_CHECKING:
    from langchain_core.tools import StructuredTool

    from agent.session import Session


def openai_tool_schema(spec: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": spec.name,
            "description": spec.description,
            "parameters": spec.parameters_schema(),
        },
    }


def openai_tools(registry: Registry | None = None) -> list[dict[str, Any]]:
    return [openai_tool_schema(spec) for spec in (registry or get_registry())]


def _type_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "|".join(str(v) for v in schema["enum"])
    if "anyOf" in schema:
        parts = [_type_text(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return "|".join(parts) or "null"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"[{_type_text(schema.get('items', {}))}]"
    if kind == "object":
        return "{...}"
    return {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}.get(kind, kind)


def tool_signature(spec: ToolSpec) -> str:
    """`flood_map(post: [str], pre?: [str], align?: bool, method?: auto|optical|sar|fusion)`"""
    schema = spec.parameters_schema()
    required = set(schema.get("required", []))
    args = []
    for name, prop in schema.get("properties", {}).items():
        args.append(f"{name}{'' if name in required else '?'}: {_type_text(prop)}")
    return f"{spec.name}({', '.join(args)})"


def tool_catalogue_text(registry: Registry | None = None) -> str:
    """One line per tool: signature, then the first sentence of its description."""
    lines = []
    for spec in registry or get_registry():
        first = re.split(r"(?<!e\.g)(?<!i\.e)\.\s", spec.description)[0].rstrip(".")
        lines.append(f"- {tool_signature(spec)}: {first}.")
    return "\n".join(lines)


def langchain_tools(session: Session, registry: Registry | None = None) -> list[StructuredTool]:
    """StructuredTools that run against `session`; each returns (content, artifact)."""
    from langchain_core.tools import StructuredTool

    registry = registry or get_registry()
    return [
        StructuredTool.from_function(
            func=_runner(session, spec, registry),
            name=spec.name,
            description=spec.description,
            args_schema=spec.args_model,
            response_format="content_and_artifact",
        )
        for spec in registry
    ]


def _runner(session: Session, spec: ToolSpec, registry: Registry) -> Any:
    from agent.loop import dispatch

    def run(**kwargs: Any) -> tuple[str, Any]:
        outcome = dispatch(session, {"name": spec.name, "args": kwargs, "id": None}, registry)
        return outcome.content, outcome.artifact

    return run
