"""finetune.soup: the mean of two LoRA adapters, as PEFT loads it."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

from finetune.soup import CONFIG, WEIGHTS, average_adapters, main  # noqa: E402
from tests.tiny_models import tiny_gemma  # noqa: E402


def _adapter(folder, seed, r=4):
    """A tiny Gemma's LoRA adapter with random (non-zero) A and B, saved to `folder`."""
    model = peft.get_peft_model(
        tiny_gemma(64, seed=0),
        peft.LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"]),
    )
    torch.manual_seed(seed)  # after the base model, which seeds its own weights
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.05)
    model.save_pretrained(folder)
    return folder


def test_the_soup_is_the_mean_of_each_matrix_and_loads_in_peft(tmp_path):
    from safetensors.torch import load_file

    a, b = _adapter(tmp_path / "a", 1), _adapter(tmp_path / "b", 2)
    config = json.loads((b / CONFIG).read_text())
    config["target_modules"] = config["target_modules"][::-1]  # PEFT saves a set: any order
    (b / CONFIG).write_text(json.dumps(config))
    out = average_adapters([a, b], tmp_path / "soup")
    ta, tb, mean = (load_file(f / WEIGHTS) for f in (a, b, out))
    assert mean.keys() == ta.keys() and len(mean) == 2 * 2 * 2  # 2 layers x q,v x A,B
    for key in mean:
        assert not torch.equal(ta[key], tb[key])
        assert torch.allclose(mean[key], (ta[key] + tb[key]) / 2)
    assert json.loads((out / CONFIG).read_text()) == json.loads((a / CONFIG).read_text())
    loaded = peft.PeftModel.from_pretrained(tiny_gemma(64, seed=0), out)
    weights = dict(loaded.named_parameters())
    key = next(k for k in mean if "lora_A" in k)
    (name,) = [n for n in weights if n.endswith(key.removesuffix(".weight") + ".default.weight")]
    assert torch.allclose(weights[name], mean[key])


def test_adapters_of_different_shape_or_missing_files_are_refused(tmp_path):
    a, b = _adapter(tmp_path / "a", 1), _adapter(tmp_path / "b", 2, r=8)
    with pytest.raises(ValueError, match="differ in r"):
        average_adapters([a, b], tmp_path / "soup")
    with pytest.raises(FileNotFoundError, match="holds no LoRA adapter"):
        average_adapters([a, tmp_path], tmp_path / "soup")
    with pytest.raises(ValueError, match="at least two"):
        average_adapters([a], tmp_path / "soup")
    assert not (tmp_path / "soup").exists()  # nothing half-written


def test_the_command_line_writes_the_soup(tmp_path, capsys):
    a, b = _adapter(tmp_path / "a", 1), _adapter(tmp_path / "b", 2)
    main([str(a), str(b), "--out", str(tmp_path / "soup")])
    assert (tmp_path / "soup" / WEIGHTS).is_file()
    assert str(tmp_path / "soup") in capsys.readouterr().out
