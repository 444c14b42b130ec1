"""Scene labels (`classify_scene`): zero-shot with a CLIP-family model, or from measured
land cover when no weights are configured.

Zero-shot: the scene is drawn as true colour (`export.scene_rgb`), seen whole and, when
large enough, as up to 3x3 square tiles, each resized to the model's input; every view
is compared with the prompts "a satellite image of {label}" and the label probabilities
(softmax of the scaled cosine similarities, as CLIP is trained) are averaged over the
views. Checkpoints load from a local file with open_clip, as their authors document:
RemoteCLIP (Liu et al. 2024; ViT-B-32, ViT-L-14, RN50 state dicts) and GeoRSCLIP
(Zhang et al. 2024, RS5M; ViT-B-32, ViT-H-14) both go through
`open_clip.create_model_and_transforms(arch, pretrained=path)`, whose loader accepts a
bare state dict as well as a wrapped {"state_dict": ...} one with "module." prefixes.

Fallback (no weights): the land-cover shares measured by `tools.landcover` are compared
with a typical composition for each label that land cover can tell apart (desert, forest,
flooded area, dense residential, ...) by the Bhattacharyya coefficient. Labels that need
object shapes (airport, tennis court, ship) cannot be scored this way and are listed as
unsupported. The result says which method answered.
"""

from __future__ import annotations

import functools
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from tools.errors import ArgumentError, EmptyResultError, EOError
from tools.export import preview_grid, scene_rgb
from tools.raster import Scene

PROMPT = "a satellite image of {label}"
MAX_LABELS = 200
MAX_TILES_PER_SIDE = 3
CLIP_SETTING = "EOAGENT_CLIP_MODEL_PATH"

# NWPU-RESISC45 (Cheng et al. 2017) scene classes, plus AID's (Xia et al. 2017) "bare
# land", "farmland" and "pond", and the two disaster scenes the agent is asked about.
DEFAULT_LABELS: tuple[str, ...] = (
    "airplane", "airport", "baseball diamond", "basketball court", "beach", "bridge",
    "chaparral", "church", "circular farmland", "cloud", "commercial area",
    "dense residential", "desert", "forest", "freeway", "golf course", "ground track field",
    "harbor", "industrial area", "intersection", "island", "lake", "meadow",
    "medium residential", "mobile home park", "mountain", "overpass", "palace",
    "parking lot", "railway", "railway station", "rectangular farmland", "river",
    "roundabout", "runway", "sea ice", "ship", "snowberg", "sparse residential", "stadium",
    "storage tank", "tennis court", "terrace", "thermal power station", "wetland",
    "bare land", "farmland", "pond", "flooded area", "burned area",
)  # fmt: skip

# Typical land-cover composition of a scene of each label, as shares of the classes of
# tools.landcover. Judgement calls from the classes' definitions, not fitted: they only
# need to rank a handful of compositions sensibly.
_W, _DV, _SV, _BU, _BA, _BN, _SN, _CL = (
    "water", "dense vegetation", "sparse vegetation", "built-up", "bare soil", "burned",
    "snow", "cloud",
)  # fmt: skip
PROTOTYPES: dict[str, dict[str, float]] = {
    "flooded area": {_W: 0.35, _DV: 0.1, _SV: 0.25, _BU: 0.1, _BA: 0.2},
    "lake": {_W: 0.75, _DV: 0.1, _SV: 0.1, _BA: 0.05},
    "pond": {_W: 0.5, _SV: 0.3, _BA: 0.2},
    "river": {_W: 0.2, _DV: 0.25, _SV: 0.25, _BU: 0.1, _BA: 0.2},
    "sea": {_W: 0.95, _BA: 0.05},
    "beach": {_W: 0.45, _BA: 0.45, _BU: 0.1},
    "island": {_W: 0.7, _DV: 0.1, _SV: 0.1, _BA: 0.1},
    "wetland": {_W: 0.4, _DV: 0.2, _SV: 0.35, _BA: 0.05},
    "forest": {_DV: 0.9, _SV: 0.1},
    "meadow": {_SV: 0.7, _DV: 0.2, _BA: 0.1},
    "golf course": {_SV: 0.6, _DV: 0.3, _W: 0.05, _BU: 0.05},
    "chaparral": {_SV: 0.5, _BA: 0.5},
    "farmland": {_SV: 0.45, _DV: 0.2, _BA: 0.35},
    "desert": {_BA: 0.97, _SV: 0.03},
    "bare land": {_BA: 0.85, _SV: 0.1, _BU: 0.05},
    "mountain": {_BA: 0.4, _SV: 0.3, _DV: 0.2, _SN: 0.1},
    "snowberg": {_SN: 0.8, _W: 0.2},
    "sea ice": {_SN: 0.6, _W: 0.4},
    "cloud": {_CL: 1.0},
    "dense residential": {_BU: 0.8, _SV: 0.1, _BA: 0.1},
    "medium residential": {_BU: 0.55, _SV: 0.25, _DV: 0.1, _BA: 0.1},
    "sparse residential": {_BU: 0.3, _SV: 0.35, _DV: 0.15, _BA: 0.2},
    "commercial area": {_BU: 0.85, _BA: 0.1, _SV: 0.05},
    "industrial area": {_BU: 0.7, _BA: 0.3},
    "burned area": {_BN: 0.6, _SV: 0.2, _BA: 0.2},
}
# Words in a user's label -> the prototype that stands for it (first match wins).
_KEYWORDS: tuple[tuple[str, str], ...] = (
    (r"flood|inundat", "flooded area"),
    (r"burn|fire|scar|wildfire", "burned area"),
    (r"cloud", "cloud"),
    (r"snow|ice|glacier", "snowberg"),
    (r"wetland|marsh|swamp|bog|mangrove", "wetland"),
    (r"river|stream|canal", "river"),
    (r"sea|ocean|coast", "sea"),
    (r"lake|reservoir|water|pond", "lake"),
    (r"beach|shore", "beach"),
    (r"forest|wood|tree|jungle", "forest"),
    (r"farm|crop|agricult|field|orchard|vineyard|cultivat", "farmland"),
    (r"grass|meadow|pasture|prairie|savann", "meadow"),
    (r"shrub|scrub|chaparral|steppe", "chaparral"),
    (r"desert|dune|sand|arid", "desert"),
    (r"bare|soil|rock|barren|quarry", "bare land"),
    (r"industr|factory", "industrial area"),
    (r"commercial|downtown", "commercial area"),
    (r"dense.*(residential|urban)|city|urban", "dense residential"),
    (r"sparse.*residential|village|rural settlement", "sparse residential"),
    (r"residential|town|suburb|built|building|settlement|houses", "medium residential"),
    (r"mountain|hill", "mountain"),
)
FALLBACK_SHARPNESS = 4.0  # probabilities ∝ coefficient^4: separates 0.95 from 0.8


class ModelWeightsError(EOError):
    """A learned model was asked for but its weights are not configured or not loadable."""


class LabelScore(BaseModel):
    label: str
    probability: float = Field(description="share of belief among the labels given (sums to 1)")


class ClassifyResult(BaseModel):
    """Scene labels, most likely first."""

    top_label: str
    labels: list[LabelScore] = Field(description="the top_k labels, most likely first")
    method: Literal["clip", "land_cover_fallback"] = Field(
        description="clip: zero-shot with the configured CLIP model; land_cover_fallback: "
        "no weights, labels matched to the measured land-cover composition (coarser)"
    )
    model: str | None = Field(default=None, description="architecture and checkpoint used")
    labels_considered: int
    views: int = Field(default=0, description="image views averaged (whole scene + tiles)")
    unsupported_labels: list[str] = Field(
        default_factory=list,
        description="labels the fallback cannot score from land cover (probability 0)",
    )
    land_cover: dict[str, float] | None = Field(
        default=None, description="measured land-cover shares (fallback only)"
    )
    notes: list[str] = Field(default_factory=list)


# -- labels ----------------------------------------------------------------------------


def clean_labels(labels: list[str] | None) -> list[str]:
    """The labels to score: defaults when None; stripped, de-duplicated, order kept."""
    if labels is None:
        return list(DEFAULT_LABELS)
    seen: dict[str, str] = {}
    for raw in labels:
        label = " ".join(str(raw).split())
        if label and label.lower() not in seen:
            seen[label.lower()] = label
    if len(seen) < 2:
        raise ArgumentError(
            "classify_scene needs at least two distinct labels to choose between (got "
            f"{len(seen)}); give more labels or leave labels out for the default scene classes."
        )
    if len(seen) > MAX_LABELS:
        raise ArgumentError(
            f"classify_scene takes at most {MAX_LABELS} labels (got {len(seen)}); shorten the list."
        )
    return list(seen.values())


def _ranked(labels: list[str], probs: np.ndarray, top_k: int) -> list[LabelScore]:
    order = sorted(range(len(labels)), key=lambda i: (-float(probs[i]), labels[i]))
    return [
        LabelScore(label=labels[i], probability=round(float(probs[i]), 6))
        for i in order[: max(1, top_k)]
    ]


# -- the CLIP model --------------------------------------------------------------------


def weights_problem(model_path: str | Path | None) -> str | None:
    """Why the CLIP checkpoint cannot be used, in one line; None when it can."""
    if model_path is None or str(model_path).strip() == "":
        return (
            f"No CLIP weights configured: set {CLIP_SETTING} to a RemoteCLIP or GeoRSCLIP "
            "open_clip checkpoint (.pt) and EOAGENT_CLIP_MODEL_ARCH to its architecture "
            "(ViT-B-32 by default)."
        )
    path = Path(model_path).expanduser()
    if not path.is_file():
        return f"{CLIP_SETTING}={path} is not a file; point it at a CLIP checkpoint (.pt)."
    return None


def resolve_device(device: str = "auto") -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=2)
def _load_clip(arch: str, path: str, mtime: float, device: str) -> tuple[Any, Any, Any]:
    try:
        import open_clip
    except ImportError as err:
        raise ModelWeightsError(
            "CLIP models need open_clip: pip install 'open_clip_torch>=3.3,<4'"
        ) from err
    if arch not in open_clip.list_models():
        raise ArgumentError(
            f"Unknown CLIP architecture '{arch}' (EOAGENT_CLIP_MODEL_ARCH); use one of "
            "ViT-B-32, ViT-L-14, RN50, ViT-H-14 for RemoteCLIP/GeoRSCLIP checkpoints."
        )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=path, device=device
        )
    except (RuntimeError, KeyError, ValueError, OSError) as err:
        raise ModelWeightsError(
            f"Could not load {path} as an open_clip {arch} checkpoint "
            f"({' '.join(str(err).split())[:200]}); check that EOAGENT_CLIP_MODEL_ARCH matches "
            "the checkpoint."
        ) from err
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(arch)


def clip_model(
    model_path: str | Path, arch: str = "ViT-B-32", device: str = "auto"
) -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) of a checkpoint, loaded once and cached."""
    problem = weights_problem(model_path)
    if problem:
        raise ModelWeightsError(problem)
    path = Path(model_path).expanduser().resolve()
    return _load_clip(arch, str(path), path.stat().st_mtime, resolve_device(device))


def _views(rgb: np.ndarray, size: int) -> list[np.ndarray]:
    """The whole image and, when it holds at least two model inputs a side, a grid of
    up to 3x3 square tiles: CLIP sees a fixed small input, and a large scene squeezed
    into it loses the detail the labels depend on."""
    views = [rgb]
    rows, cols = rgb.shape[:2]
    n = min(MAX_TILES_PER_SIDE, min(rows, cols) // size)
    if n >= 2:
        side = min(rows, cols) // n
        r_starts = np.linspace(0, rows - side, n).astype(int)
        c_starts = np.linspace(0, cols - side, n).astype(int)
        views += [rgb[r : r + side, c : c + side] for r in r_starts for c in c_starts]
    return views


def _image_batch(views: list[np.ndarray], preprocess: Any, size: int) -> Any:
    import torch
    from PIL import Image

    images = []
    for view in views:
        pil = Image.fromarray((np.clip(view, 0, 1) * 255).astype(np.uint8))
        images.append(preprocess(pil.resize((size, size), Image.Resampling.BICUBIC)))
    return torch.stack(images)


def _input_size(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


def _scene_image(scene: Scene, size: int) -> np.ndarray:
    grid = preview_grid(scene.grid, MAX_TILES_PER_SIDE * size)
    rgb = scene_rgb(scene, grid)
    if not np.any(rgb):
        raise EmptyResultError(
            f"{Path(scene.source).name} has no valid pixels to look at; use another scene."
        )
    return rgb


def image_embedding(
    scene: Scene, model_path: str | Path, arch: str = "ViT-B-32", device: str = "auto"
) -> np.ndarray:
    """Unit-length CLIP embedding of a scene's true-colour view (float32); the archive's
    image search uses the same model and rendering as classify_scene."""
    import torch

    model, preprocess, _ = clip_model(model_path, arch, device)
    size = _input_size(model)
    batch = _image_batch([_scene_image(scene, size)], preprocess, size)
    with torch.no_grad():
        vector = model.encode_image(batch.to(_model_device(model)))[0].float().cpu().numpy()
    return (vector / max(float(np.linalg.norm(vector)), 1e-12)).astype(np.float32)


def _model_device(model: Any) -> Any:
    return next(model.parameters()).device


def _clip_probabilities(
    scene: Scene, labels: list[str], model: Any, preprocess: Any, tokenizer: Any, prompt: str
) -> tuple[np.ndarray, int]:
    import torch

    size = _input_size(model)
    views = _views(_scene_image(scene, size), size)
    device = _model_device(model)
    with torch.no_grad():
        image = model.encode_image(_image_batch(views, preprocess, size).to(device)).float()
        text = model.encode_text(tokenizer([prompt.format(label=x) for x in labels]).to(device))
        image = image / image.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        text = text.float() / text.float().norm(dim=-1, keepdim=True).clamp_min(1e-12)
        logits = model.logit_scale.exp().float() * image @ text.T
        probs = logits.softmax(dim=-1).mean(dim=0)
    out = probs.cpu().numpy().astype(np.float64)
    return out / out.sum(), len(views)


# -- the land-cover fallback ----------------------------------------------------------


def prototype_for(label: str) -> dict[str, float] | None:
    """The land-cover composition that stands for a label, or None."""
    key = label.lower().strip()
    if key in PROTOTYPES:
        return PROTOTYPES[key]
    for pattern, name in _KEYWORDS:
        if re.search(pattern, key):
            return PROTOTYPES[name]
    return None


def fallback_probabilities(
    shares: dict[str, float], labels: list[str]
) -> tuple[np.ndarray, list[str]]:
    """(probabilities, unsupported labels) from land-cover shares."""
    total = sum(shares.values()) or 1.0
    scores = np.zeros(len(labels))
    unsupported = []
    for i, label in enumerate(labels):
        proto = prototype_for(label)
        if proto is None:
            unsupported.append(label)
            continue
        norm = sum(proto.values())
        scores[i] = sum(
            math.sqrt(max(shares.get(c, 0.0), 0.0) / total * v / norm) for c, v in proto.items()
        )
    weights = scores**FALLBACK_SHARPNESS
    if weights.sum() <= 0:
        raise ArgumentError(
            "None of the labels can be judged from land cover without CLIP weights ("
            f"{', '.join(labels[:5])}{'...' if len(labels) > 5 else ''}); use land-cover "
            f"words (forest, farmland, desert, water, town) or set {CLIP_SETTING}."
        )
    return weights / weights.sum(), unsupported


def _measured_shares(scene: Scene) -> dict[str, float]:
    from tools.landcover import land_cover

    view = scene
    if scene.grid.crs is not None:
        view = scene.regridded(preview_grid(scene.grid, 1024))
    return dict(land_cover(view).shares)


# -- the tool --------------------------------------------------------------------------


def classify_scene(
    scene: Scene,
    labels: list[str] | None = None,
    *,
    top_k: int = 5,
    model_path: str | Path | None = None,
    arch: str = "ViT-B-32",
    device: str = "auto",
    prompt: str = PROMPT,
    fallback: bool = True,
) -> ClassifyResult:
    """Rank scene labels (default: remote-sensing scene classes) for a scene.

    With `model_path` (an open_clip checkpoint of architecture `arch`) labels are scored
    zero-shot. Without usable weights, `fallback` answers from measured land cover with
    `method="land_cover_fallback"` and the reason in `notes`; with `fallback=False` a
    ModelWeightsError names the setting to fill.
    """
    if top_k < 1:
        raise ArgumentError(f"top_k must be at least 1 (got {top_k}).")
    if "{label}" not in prompt:
        raise ArgumentError(f"prompt must contain '{{label}}' (got {prompt!r}).")
    names = clean_labels(labels)
    problem = weights_problem(model_path)
    if problem is None and model_path is not None:
        model, preprocess, tokenizer = clip_model(model_path, arch, device)
        probs, n_views = _clip_probabilities(scene, names, model, preprocess, tokenizer, prompt)
        ranked = _ranked(names, probs, top_k)
        return ClassifyResult(
            top_label=ranked[0].label,
            labels=ranked,
            method="clip",
            model=f"{arch} {Path(model_path).name}",
            labels_considered=len(names),
            views=n_views,
            notes=[f"Zero-shot: prompts '{prompt}', probabilities averaged over {n_views} views."],
        )
    if not fallback:
        raise ModelWeightsError(problem)
    try:
        shares = _measured_shares(scene)
    except EOError as err:
        raise ModelWeightsError(
            f"{problem} The offline fallback needs a multispectral scene: {err}"
        ) from err
    probs, unsupported = fallback_probabilities(shares, names)
    ranked = _ranked(names, probs, min(top_k, len(names) - len(unsupported)))
    return ClassifyResult(
        top_label=ranked[0].label,
        labels=ranked,
        method="land_cover_fallback",
        labels_considered=len(names),
        unsupported_labels=unsupported,
        land_cover={k: round(v, 4) for k, v in shares.items()},
        notes=[
            problem or "",
            "Offline fallback: labels ranked by how closely the measured land-cover shares "
            "match each label's typical composition; object-level labels are not scored.",
        ],
    )
