"""preprocess_spec / clip_embed_dim read open_clip's data without torch and agree with open_clip.

Differential: open_clip builds each model on the ``meta`` device (no memory, no weights; tag
downloads stubbed out) and reports the preprocessing it attaches to the model; the torch-free
spec must equal it field for field.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

from extract.config import ClipModelConfig
from extract.models import preprocess
from extract.models.preprocess import PreprocessSpec, clip_embed_dim, preprocess_spec

TINY_MODEL_CFG = {
    "embed_dim": 48,
    "vision_cfg": {"image_size": 96, "layers": 1, "width": 32, "head_width": 16, "patch_size": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

# (architecture, pretrained tag): OpenAI, SigLIP (inception mean/std, squash), a timm convnext at
# 256 px, MobileCLIP (bilinear, mean 0 / std 1), a ResNet (integer image_size), random init.
BUILTIN_CASES = [
    ("ViT-B-32", "laion2b_s34b_b79k"),
    ("ViT-L-14", "openai"),
    ("ViT-B-16-SigLIP", "webli"),
    ("ViT-SO400M-14-SigLIP-384", "webli"),
    ("convnext_base_w", "laion2b_s13b_b82k"),
    ("MobileCLIP-S1", "datacompdr"),
    ("RN50", "openai"),
    ("ViT-B-32", None),
]


def as_spec(cfg: dict) -> PreprocessSpec:
    size = cfg["size"]
    size = size[0] if isinstance(size, (list, tuple)) else size
    return PreprocessSpec(int(size), cfg["interpolation"], cfg["resize_mode"],
                          tuple(map(float, cfg["mean"])), tuple(map(float, cfg["std"])))


def open_clip_reported(monkeypatch, name: str, pretrained: str | None = None, **kwargs) -> tuple[PreprocessSpec, object]:
    """open_clip's own preprocessing for (name, pretrained) and its preprocess_val."""
    import open_clip
    import open_clip.factory
    import torch

    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, prefer_hf_hub=True, cache_dir=None: "")
    with torch.device("meta"):
        model, _, preprocess_val = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, load_weights=False, device="meta", **kwargs)
    return as_spec(open_clip.get_model_preprocess_cfg(model)), preprocess_val


@pytest.mark.filterwarnings("ignore:QuickGELU mismatch")  # openai tags on non-quickgelu configs
@pytest.mark.parametrize(("name", "tag"), BUILTIN_CASES)
def test_builtin_spec_equals_open_clip(monkeypatch, name, tag):
    import open_clip

    clip = ClipModelConfig(name=name, pretrained=tag)
    expected, preprocess_val = open_clip_reported(monkeypatch, name, tag)
    assert preprocess_spec(clip) == expected
    assert clip_embed_dim(clip) == open_clip.get_model_config(name)["embed_dim"]
    normalize = preprocess_val.transforms[-1]
    assert tuple(normalize.mean) == expected.mean and tuple(normalize.std) == expected.std


def test_non_default_specs_differ():
    """The cases above are not all the defaults: the differential check has teeth."""
    specs = {preprocess_spec(ClipModelConfig(name=n, pretrained=t)) for n, t in BUILTIN_CASES}
    assert {s.image_size for s in specs} >= {224, 256, 384}
    assert {s.resize_mode for s in specs} >= {"shortest", "squash"}
    assert {s.interpolation for s in specs} == {"bicubic", "bilinear"}


def test_checkpoint_path_uses_open_clip_defaults(monkeypatch, tmp_path):
    """A checkpoint file (e.g. staged SigLIP weights) carries no tag config: open_clip's defaults."""
    ckpt = tmp_path / "siglip.safetensors"
    ckpt.write_bytes(b"not read")
    clip = ClipModelConfig(name="ViT-B-16-SigLIP", pretrained=str(ckpt))
    expected, _ = open_clip_reported(monkeypatch, clip.name, str(ckpt))
    assert preprocess_spec(clip) == expected and expected.resize_mode == "shortest"


def test_registered_model_config_file(monkeypatch, tmp_path):
    from extract.models.preprocess import register_model_config

    path = tmp_path / "tiny-spec-test.json"
    path.write_text(json.dumps(TINY_MODEL_CFG))
    clip = ClipModelConfig(name="tiny-spec-test", pretrained=None, model_config=str(path))
    register_model_config(clip)
    expected, _ = open_clip_reported(monkeypatch, clip.name)
    assert preprocess_spec(clip) == expected and expected.image_size == 96
    assert clip_embed_dim(clip) == 48


def test_local_dir_preprocess_cfg_wins(monkeypatch, tmp_path):
    cfg = {"model_cfg": TINY_MODEL_CFG,
           "preprocess_cfg": {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6], "interpolation": "bilinear",
                              "resize_mode": "squash", "size": 999}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(cfg))
    name = f"local-dir:{tmp_path}"
    # open_clip ignores `pretrained` for schema names; so must we
    clip = ClipModelConfig(name=name, pretrained="laion2b_s34b_b79k")
    expected, _ = open_clip_reported(monkeypatch, name)
    assert preprocess_spec(clip) == expected
    assert expected == PreprocessSpec(96, "bilinear", "squash", (0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert clip_embed_dim(clip) == 48


def test_hf_hub_config(monkeypatch, tmp_path):
    """hf-hub: names read the repo's open_clip_config.json (stubbed here: no hub access in tests)."""
    import huggingface_hub
    import open_clip.factory

    config_file = tmp_path / "open_clip_config.json"
    config_file.write_text(json.dumps({"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": {
        "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "resize_mode": "squash"}}))
    seen = []

    def fake_download(repo_id, filename=None, revision=None, cache_dir=None, **kwargs):
        seen.append((repo_id, filename, cache_dir))
        if filename != "open_clip_config.json":
            raise FileNotFoundError(filename)
        return str(config_file)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", fake_download)
    clip = ClipModelConfig(name="hf-hub:org/tiny", pretrained=None, cache_dir=str(tmp_path))
    expected, _ = open_clip_reported(monkeypatch, clip.name, cache_dir=str(tmp_path))
    seen.clear()
    assert preprocess_spec(clip) == expected and expected.resize_mode == "squash"
    assert seen == [("org/tiny", "open_clip_config.json", str(tmp_path))]


def test_unknown_architecture_names_the_key():
    with pytest.raises(ValueError, match="models.clip.name"):
        preprocess_spec(ClipModelConfig(name="ViT-NOPE-1", pretrained=None))


def test_fallback_through_open_clip_gives_the_same(monkeypatch):
    """If open_clip's source stops parsing, the slow path (import open_clip) answers the same."""
    fast = {case: preprocess_spec(ClipModelConfig(name=case[0], pretrained=case[1])) for case in BUILTIN_CASES}

    def broken():
        raise LookupError("no _PRETRAINED table")

    preprocess.open_clip_data.cache_clear()
    monkeypatch.setattr(preprocess, "_torch_free_data", broken)
    try:
        assert not preprocess.open_clip_data().torch_free
        slow = {case: preprocess_spec(ClipModelConfig(name=case[0], pretrained=case[1])) for case in BUILTIN_CASES}
    finally:
        preprocess.open_clip_data.cache_clear()
    assert slow == fast


def test_spec_does_not_import_torch(tmp_path):
    """Decode actors and the driver learn the spec and D without importing torch or open_clip."""
    path = tmp_path / "tiny-notorch.json"
    path.write_text(json.dumps(TINY_MODEL_CFG))
    code = textwrap.dedent(f"""
        import sys
        import extract.stages.decode, extract.pipeline.job
        from extract.config import ClipModelConfig
        from extract.models.preprocess import clip_embed_dim, preprocess_spec
        specs = [preprocess_spec(ClipModelConfig()),
                 preprocess_spec(ClipModelConfig(name="ViT-B-16-SigLIP", pretrained="webli")),
                 preprocess_spec(ClipModelConfig(name="tiny-notorch", pretrained=None, model_config={str(path)!r}))]
        dims = [clip_embed_dim(ClipModelConfig()), clip_embed_dim(ClipModelConfig(name="ViT-L-14"))]
        assert [s.image_size for s in specs] == [224, 224, 96], specs
        assert specs[1].mean == (0.5, 0.5, 0.5) and specs[1].resize_mode == "squash", specs
        assert dims == [512, 768], dims
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "open_clip", "torchvision", "timm"))
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
