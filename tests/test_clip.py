"""CLIP stage: differential checks against open_clip's own reference path, batching, text,
lineage, load errors, and the stage's row contract."""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from extract.config import ClipModelConfig, config_from_dict
from extract.tools.samples import write_clip
from extract.models import clip as clip_mod
from extract.models import common as model_common
from extract.models.clip import ClipEmbedder, temporal_features
from extract.models.common import ModelLoadError, resolve_device
from extract.tools.tiny import TINY_CLIP_NAME, make_tiny_clip
from extract.rows import VideoError, batch_to_rows, rows_to_batch
from extract.stages.clip import ClipStage

LINEAGE = re.compile(r"^[^|]+\|[^|]+\|sha256:[0-9a-f]{12}$")


# ---- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_keys(tmp_path_factory) -> dict:
    return make_tiny_clip(tmp_path_factory.mktemp("tiny"))["models"]["clip"]


@pytest.fixture(scope="module")
def tiny_cfg(tiny_keys) -> ClipModelConfig:
    return ClipModelConfig(**tiny_keys)


@pytest.fixture(scope="module")
def tiny(tiny_cfg) -> ClipEmbedder:
    return ClipEmbedder(tiny_cfg, device="cpu")


@pytest.fixture(scope="module")
def vit_b32() -> ClipEmbedder:
    return ClipEmbedder(ClipModelConfig(name="ViT-B-32", pretrained=None), device="cpu")


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory) -> Path:
    return write_clip(tmp_path_factory.mktemp("media") / "clip.mp4", duration_s=2.0, width=320,
                      height=240, fps=4.0, audio=None, seed=3)


def decode_full(path: Path) -> list[np.ndarray]:
    """Every frame at full resolution, ``(H, W, 3) uint8`` RGB."""
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def decode_scaled(path: Path, size: int) -> np.ndarray:
    """Frames scaled in libswscale (bicubic) so the short side is ``size``, centre-cropped to
    ``(n, size, size, 3) uint8``: the decode side of the contract, with torchvision's rounding."""
    import av
    from av.video.reformatter import Interpolation

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            w, h = frame.width, frame.height
            short, long = min(w, h), max(w, h)
            new_long = int(size * long / short)
            tw, th = (new_long, size) if w >= h else (size, new_long)
            img = frame.reformat(width=tw, height=th, format="rgb24",
                                 interpolation=Interpolation.BICUBIC).to_ndarray()
            top, left = int(round((th - size) / 2.0)), int(round((tw - size) / 2.0))
            out.append(img[top:top + size, left:left + size])
    return np.stack(out)


def reference_embeddings(embedder: ClipEmbedder, images: list[np.ndarray]) -> np.ndarray:
    """open_clip's own path: preprocess_val(PIL) -> encode_image -> L2 normalise (fp32, CPU)."""
    from PIL import Image

    assert embedder.device == "cpu"
    x = torch.stack([embedder.preprocess_val(Image.fromarray(img)) for img in images])
    with torch.no_grad():
        feats = embedder.model.encode_image(x)
    return torch.nn.functional.normalize(feats, dim=-1).numpy()


def random_videos(counts, size, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8) for n in counts]


# ---- tiny checkpoint ---------------------------------------------------------------------------

def test_make_tiny_clip_same_bytes_and_loads_through_open_clip(tmp_path, tiny_keys):
    import open_clip

    again = make_tiny_clip(tmp_path)["models"]["clip"]
    assert again["name"] == TINY_CLIP_NAME
    for key in ("pretrained", "model_config"):
        assert Path(again[key]).is_absolute()
        assert Path(again[key]).read_bytes() == Path(tiny_keys[key]).read_bytes()
    open_clip.add_model_config(again["model_config"])
    model, _, preprocess_val = open_clip.create_model_and_transforms(again["name"], pretrained=again["pretrained"])
    state = torch.load(again["pretrained"], weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert preprocess_val.transforms[0].size == 64


def test_tiny_clip_seed_changes_weights_and_lineage(tmp_path, tiny, tiny_keys):
    other = make_tiny_clip(tmp_path, seed=1)["models"]["clip"]
    assert Path(other["pretrained"]).read_bytes() != Path(tiny_keys["pretrained"]).read_bytes()
    embedder = ClipEmbedder(ClipModelConfig(**other), device="cpu")
    assert embedder.lineage.split("|sha256:")[1] != tiny.lineage.split("|sha256:")[1]


# ---- images: differential against open_clip ------------------------------------------------------

@pytest.mark.parametrize("which", ["tiny", "vit_b32"])
def test_decoded_frames_match_open_clip_reference(which, request, clip_path):
    embedder: ClipEmbedder = request.getfixturevalue(which)
    full = decode_full(clip_path)[::3][:3]
    scaled = decode_scaled(clip_path, embedder.spec.image_size)[::3][:3]
    ours = embedder.embed_frames([scaled], batch_size=3)[0]
    ref = reference_embeddings(embedder, full)
    cos = np.sum(ours * ref, axis=1)
    assert ours.shape == (len(full), embedder.embed_dim) and ours.dtype == np.float32
    assert cos.min() >= 0.99, cos


@pytest.mark.parametrize("which", ["tiny", "vit_b32"])
def test_device_normalisation_equals_preprocess_val_on_same_pixels(which, request, clip_path):
    # Frames already at the input size make PIL's resize and crop the identity, so any
    # difference left is our uint8 -> float conversion and normalisation.
    embedder: ClipEmbedder = request.getfixturevalue(which)
    scaled = decode_scaled(clip_path, embedder.spec.image_size)[:2]
    ours = embedder.embed_frames([scaled], batch_size=8)[0]
    ref = reference_embeddings(embedder, list(scaled))
    assert np.abs(ours - ref).max() < 1e-5


def test_embeddings_are_unit_length_and_distinguish_frames(tiny, clip_path):
    scaled = decode_scaled(clip_path, tiny.spec.image_size)
    emb = tiny.embed_frames([scaled], batch_size=4)[0]
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(emb[0], emb[-1], atol=1e-3)


# ---- batching ---------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 7, 16, 256])
def test_packing_across_videos_is_batch_invariant(tiny, batch_size):
    videos = random_videos([5, 0, 3, 7, 1], tiny.spec.image_size)
    alone = [tiny.embed_frames([v], batch_size=64)[0] for v in videos]
    packed = tiny.embed_frames(videos, batch_size=batch_size)
    assert [p.shape[0] for p in packed] == [5, 0, 3, 7, 1]
    for a, p in zip(alone, packed):
        assert p.shape == (len(a), tiny.embed_dim)
        if len(a):
            assert np.abs(a - p).max() < 1e-4


def test_repeated_frames_are_embedded_once(tiny, monkeypatch):
    """A still image or a slideshow serves several sampling times with one decoded frame: each
    run of equal frames goes to the model once, and every frame still gets its row."""
    a, b, c = random_videos([3], tiny.spec.image_size, seed=3)[0]
    still = np.stack([a, a, a, b, b, a])  # a frame equal to an earlier, not the previous, one is embedded again
    other = np.stack([c])
    expected = [tiny.embed_frames([frames[None]], batch_size=1)[0][0] for frames in (a, b, c)]
    real, rows_seen = tiny._encode_images, []
    monkeypatch.setattr(tiny, "_encode_images", lambda batch: rows_seen.append(batch.shape[0]) or real(batch))
    emb_still, emb_other = tiny.embed_frames([still, other], batch_size=64)
    assert sum(rows_seen) == 4  # a, b, a and c
    for row, frame in zip(emb_still, (0, 0, 0, 1, 1, 0)):
        assert np.abs(row - expected[frame]).max() < 1e-4
    assert np.abs(emb_other[0] - expected[2]).max() < 1e-4


def test_vit_b32_batch_invariance(vit_b32):
    videos = random_videos([2, 1], vit_b32.spec.image_size, seed=1)
    alone = vit_b32.embed_frames([videos[0]], batch_size=2)[0]
    packed = vit_b32.embed_frames(videos, batch_size=3)[0]
    assert np.abs(alone - packed).max() < 1e-4


def test_out_of_memory_halves_batch_and_finishes(tiny, monkeypatch, caplog):
    videos = random_videos([6, 5], tiny.spec.image_size, seed=2)
    expected = tiny.embed_frames(videos, batch_size=64)
    real = tiny._encode_images
    seen = []

    def encode_small_only(batch):
        seen.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(batch)

    monkeypatch.setattr(tiny, "_encode_images", encode_small_only)
    got = tiny.embed_frames(videos, batch_size=8)
    assert seen[:3] == [8, 4, 2] and max(seen[3:]) <= 2
    assert "ran out of memory" in caplog.text
    for e, g in zip(expected, got):
        assert np.abs(e - g).max() < 1e-4


def test_out_of_memory_at_batch_size_one_raises(tiny, monkeypatch):
    def always_oom(batch):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(tiny, "_encode_images", always_oom)
    with pytest.raises(torch.OutOfMemoryError):
        tiny.embed_frames(random_videos([2], tiny.spec.image_size), batch_size=4)


def test_poisoned_cuda_context_raises_device_lost(tiny, monkeypatch):
    """A CUDA error after which the context is unusable is not retried smaller (as out of memory
    is) nor blamed on a video: ``DeviceLostError``, which the stage lets through to the Ray backend."""
    from extract.rows import DeviceLostError, process_isolated

    error = getattr(torch, "AcceleratorError", RuntimeError)

    def broken(batch):
        raise error("CUDA error: unspecified launch failure")

    monkeypatch.setattr(tiny, "_encode_images", broken)
    videos = random_videos([3, 2], tiny.spec.image_size, seed=4)
    with pytest.raises(DeviceLostError, match="unspecified launch failure"):
        tiny.embed_frames(videos, batch_size=4)
    rows = [({"video_id": "a"}, videos[0]), ({"video_id": "b"}, videos[1])]
    with pytest.raises(DeviceLostError):
        process_isolated(rows, lambda frames: tiny.embed_frames(frames, 4), "clip", "CLIP")
    assert all("error_stage" not in row for row, _ in rows)


@pytest.mark.parametrize("bad", [
    np.zeros((2, 63, 64, 3), np.uint8),
    np.zeros((2, 64, 64, 3), np.float32),
    np.zeros((64, 64, 3), np.uint8),
    [np.zeros((64, 64, 3), np.uint8)],
])
def test_malformed_frames_raise_video_error(tiny, bad):
    with pytest.raises(VideoError) as info:
        tiny.embed_frames([bad], batch_size=4)
    assert info.value.error_type == "InvalidInput"


# ---- texts ------------------------------------------------------------------------------------

TEXTS = ["Sunny beach day 🌊", "", "#citylife #NightVibes", "a video about cooking pasta",
         "word " * 120]


@pytest.mark.parametrize("which", ["tiny", "vit_b32"])
def test_encode_texts_equals_tokenizer_and_encode_text(which, request):
    embedder: ClipEmbedder = request.getfixturevalue(which)
    emb, truncated = embedder.encode_texts(TEXTS)
    with torch.no_grad():
        ref = embedder.model.encode_text(embedder.tokenizer(TEXTS))
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    assert emb.shape == (len(TEXTS), embedder.embed_dim) and emb.dtype == np.float32
    assert np.abs(emb - ref).max() < 1e-5
    assert truncated.dtype == np.bool_ and truncated.tolist() == [False, False, False, False, True]
    # what was compared is the cut path: texts run on their tokens up to the end token
    assert embedder._trim_text


def test_texts_share_a_pass_while_their_lengths_stay_within_twice():
    from extract.models.clip import _length_buckets

    assert _length_buckets([2, 3, 5, 6, 12, 76], 256) == [slice(0, 3), slice(3, 5), slice(5, 6)]
    assert _length_buckets([4] * 5, 2) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert _length_buckets([], 8) == []


def test_truncation_flag_at_exact_context_length(tiny):
    assert tiny.context_length == 32
    fits, cut = "a " * 30, "a " * 31  # 'a' is one token; start + 30 + end = 32
    emb, truncated = tiny.encode_texts([fits, cut, "a " * 200, "a " * 29])
    assert truncated.tolist() == [False, True, True, False]
    # A cut text keeps its first context_length - 2 tokens, so the three longest embed the
    # same: only the flag tells them apart.
    assert np.abs(emb[1] - emb[0]).max() < 1e-6 and np.abs(emb[2] - emb[0]).max() < 1e-6
    assert np.abs(emb[3] - emb[0]).max() > 1e-4


def test_encode_texts_empty_list(tiny):
    emb, truncated = tiny.encode_texts([])
    assert emb.shape == (0, tiny.embed_dim) and truncated.shape == (0,)


# ---- lineage and loading ----------------------------------------------------------------------

def test_lineage_is_stable_and_names_source(tiny, tiny_cfg, vit_b32):
    assert LINEAGE.match(tiny.lineage) and LINEAGE.match(vit_b32.lineage)
    assert tiny.lineage.startswith(f"{TINY_CLIP_NAME}|{tiny_cfg.pretrained}|")
    assert ClipEmbedder(tiny_cfg, device="cpu").lineage == tiny.lineage
    state = torch.load(tiny_cfg.pretrained, weights_only=True)
    assert tiny.lineage.endswith(model_common.weights_sha256(state)[:12])
    assert vit_b32.lineage.startswith("ViT-B-32|random-init|")


def test_random_init_is_seeded(tiny_cfg, tiny):
    # Every actor of a random-init run must build the same model (and lineage).
    random_cfg = ClipModelConfig(name=TINY_CLIP_NAME, pretrained=None, model_config=tiny_cfg.model_config)
    first = ClipEmbedder(random_cfg, device="cpu")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    second = ClipEmbedder(random_cfg, device="cpu")
    assert torch.equal(torch.rand(1), before)  # the global RNG stream is untouched
    assert first.lineage == second.lineage and first.lineage.startswith(f"{TINY_CLIP_NAME}|random-init|")
    # make_tiny_clip saves exactly this seeded initialisation.
    assert first.lineage.split("|")[2] == tiny.lineage.split("|")[2]


def test_missing_checkpoint_error_names_path(tiny_cfg, tmp_path):
    missing = tmp_path / "nope" / "weights.pt"
    with pytest.raises(ModelLoadError, match=re.escape(str(missing))):
        ClipEmbedder(ClipModelConfig(name=TINY_CLIP_NAME, pretrained=str(missing),
                                     model_config=tiny_cfg.model_config), device="cpu")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_architecture"])
def test_corrupt_checkpoint_error_names_path(tiny_cfg, tmp_path, damage):
    bad = tmp_path / "bad.pt"
    if damage == "garbage":
        bad.write_bytes(b"not a checkpoint at all" * 10)
    elif damage == "truncated":
        bad.write_bytes(Path(tiny_cfg.pretrained).read_bytes()[:100_000])
    else:
        state = torch.load(tiny_cfg.pretrained, weights_only=True)
        state["visual.conv1.weight"] = torch.zeros(8, 3, 4, 4)
        torch.save(state, bad)
    cfg = ClipModelConfig(name=TINY_CLIP_NAME, pretrained=str(bad), model_config=tiny_cfg.model_config)
    with pytest.raises(ModelLoadError, match=re.escape(str(bad))):
        ClipEmbedder(cfg, device="cpu")
    config = config_from_dict({"models": {"clip": {"name": TINY_CLIP_NAME, "pretrained": str(bad),
                                                   "model_config": tiny_cfg.model_config}},
                               "runtime": {"device": "cpu"}})
    with pytest.raises(ModelLoadError, match=re.escape(str(bad))):
        ClipStage(config)


def test_missing_model_config_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="model_config"):
        ClipEmbedder(ClipModelConfig(name=TINY_CLIP_NAME, pretrained=None,
                                     model_config=str(tmp_path / "absent.json")), device="cpu")


def test_file_uri_and_object_store_checkpoint(tiny, tiny_cfg, tmp_path, monkeypatch):
    assert ClipEmbedder(ClipModelConfig(name=TINY_CLIP_NAME, pretrained=f"file://{tiny_cfg.pretrained}",
                                        model_config=tiny_cfg.model_config), "cpu").lineage == tiny.lineage
    fetched = []

    def fake_fetch(uri, dest_dir, storage=None, max_bytes=None):
        fetched.append(uri)
        Path(dest_dir).mkdir(parents=True, exist_ok=True)
        local = Path(dest_dir) / hashlib.sha256(uri.encode()).hexdigest()[:24]
        shutil.copyfile(tiny_cfg.pretrained, local)
        return str(local), "", local.stat().st_size

    monkeypatch.setattr("extract.io.storage.fetch", fake_fetch)
    uri = "s3://models/clip/tiny-clip-vit.pt"
    remote = ClipEmbedder(ClipModelConfig(name=TINY_CLIP_NAME, pretrained=uri, model_config=tiny_cfg.model_config,
                                          cache_dir=str(tmp_path / "cache")), "cpu")
    assert fetched == [uri]
    assert remote.lineage == tiny.lineage.replace(tiny_cfg.pretrained, uri)
    # the one checkpoint cache (extract.io.storage): a folder per URI, the file name kept
    # (open_clip picks its loader by suffix), no half-written leftovers
    assert [p.relative_to(tmp_path / "cache").as_posix() for p in (tmp_path / "cache").rglob("*")] == [
        hashlib.sha256(uri.encode()).hexdigest()[:16], f"{hashlib.sha256(uri.encode()).hexdigest()[:16]}/tiny-clip-vit.pt"]

    def failing_fetch(uri, dest_dir, storage=None, max_bytes=None):
        raise VideoError("StoreError", f"{uri!r}: read failed (AccessDenied)", retryable=True)

    monkeypatch.setattr("extract.io.storage.fetch", failing_fetch)
    with pytest.raises(ModelLoadError, match=re.escape(uri)):  # a cache that does not hold it yet
        ClipEmbedder(ClipModelConfig(name=TINY_CLIP_NAME, pretrained=uri, model_config=tiny_cfg.model_config,
                                     cache_dir=str(tmp_path / "empty-cache")), "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_cuda_requested_without_cuda_fails_clearly():
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        resolve_device("cuda")


# ---- temporal features ------------------------------------------------------------------------

def test_temporal_features():
    static = np.tile(np.array([[0.6, 0.8]], np.float32), (4, 1))
    f = temporal_features(static)
    assert f["frame_cos_mean"] == pytest.approx(1.0) and f["frame_cos_min"] == pytest.approx(1.0)
    assert f["thumbnail_similarity"] == pytest.approx(1.0)
    cut = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    f = temporal_features(cut)
    assert f["frame_cos_min"] == pytest.approx(0.0) and f["frame_cos_mean"] == pytest.approx(0.5)
    assert np.linalg.norm(f["clip_embedding"]) == pytest.approx(1.0)
    assert f["thumbnail_similarity"] == pytest.approx(2 / np.sqrt(5), abs=1e-6)
    one = temporal_features(np.array([[0.0, 1.0]], np.float32))
    assert one["frame_cos_mean"] is None and one["thumbnail_similarity"] == pytest.approx(1.0)
    none = temporal_features(np.zeros((0, 2), np.float32))
    assert none["clip_embedding"].shape == (0,) and none["thumbnail_similarity"] is None


# ---- stage ------------------------------------------------------------------------------------

@pytest.fixture
def text_feature_calls(monkeypatch):
    """Record ``add_text_features`` calls; wraps the real function when that module exists."""
    calls = []
    try:
        import extract.text.features as module
        real = module.add_text_features
    except ImportError:
        module = types.ModuleType("extract.text.features")
        real = None
        monkeypatch.setitem(sys.modules, "extract.text.features", module)

    def recording(rows, encode_texts, config, detect_language=None):
        calls.append((rows, encode_texts, config))
        if real is not None:
            real(rows, encode_texts=encode_texts, config=config, detect_language=detect_language)

    monkeypatch.setattr(module, "add_text_features", recording, raising=False)
    return calls


def stage_config(tiny_keys, **runtime):
    return config_from_dict({"models": {"clip": dict(tiny_keys)},
                             "runtime": {"device": "cpu", "clip_batch_size": 4, **runtime}})


def test_clip_stage_rows(tiny_keys, tiny, text_feature_calls, clip_path):
    stage = ClipStage(stage_config(tiny_keys))
    good = decode_scaled(clip_path, 64)
    rows = [
        {"video_id": "good", "caption": "beach #fyp", "frames": good, "error_stage": None},
        {"video_id": "bad_shape", "caption": None, "frames": np.zeros((2, 32, 32, 3), np.uint8), "error_stage": None},
        {"video_id": "decode_failed", "caption": None, "frames": np.zeros((0,), np.uint8),
         "error_stage": "decode", "error_type": "DecodeError", "error_message": "x", "retryable": False},
        {"video_id": "no_frames", "caption": "", "frames": np.zeros((0, 64, 64, 3), np.uint8), "error_stage": None},
        {"video_id": "short", "caption": "x", "frames": good[:1], "error_stage": None},
    ]
    out = batch_to_rows(stage(rows_to_batch(rows)))
    by_id = {r["video_id"]: r for r in out}
    assert all("frames" not in r for r in out)
    assert len({frozenset(r) for r in out}) == 1  # every row carries the same columns

    g = by_id["good"]
    assert g["error_stage"] is None and g["clip_model"] == tiny.lineage
    np.testing.assert_allclose(g["frame_embeddings"], tiny.embed_frames([good], 64)[0], atol=1e-4)
    f = temporal_features(g["frame_embeddings"])
    np.testing.assert_allclose(g["clip_embedding"], f["clip_embedding"], atol=1e-6)
    assert g["clip_embedding"].dtype == np.float32 and g["clip_embedding"].shape == (64,)
    assert -1 <= g["frame_cos_min"] <= g["frame_cos_mean"] <= 1
    assert g["thumbnail_similarity"] == pytest.approx(f["thumbnail_similarity"])

    b = by_id["bad_shape"]
    assert (b["error_stage"], b["error_type"]) == ("clip", "InvalidInput")
    assert "(n, 64, 64, 3)" in b["error_message"]
    for failed in (b, by_id["decode_failed"]):
        assert failed["frame_embeddings"].shape == (0, 64) and failed["frame_embeddings"].dtype == np.float32
        assert failed["clip_embedding"].shape == (0,) and failed["clip_model"] is None
        assert failed["frame_cos_mean"] is None and failed["thumbnail_similarity"] is None
    assert by_id["decode_failed"]["error_stage"] == "decode"

    empty = by_id["no_frames"]
    assert empty["error_stage"] is None and empty["frame_embeddings"].shape == (0, 64)
    assert empty["clip_embedding"].shape == (0,) and empty["clip_model"] == tiny.lineage
    assert by_id["short"]["frame_cos_mean"] is None and by_id["short"]["thumbnail_similarity"] == pytest.approx(1.0)

    (call_rows, encode_texts, config), = text_feature_calls
    assert [r["video_id"] for r in call_rows] == [r["video_id"] for r in rows]
    assert encode_texts.__self__ is stage.embedder and config is stage.config


def test_clip_stage_isolates_a_video_that_breaks_the_model(tiny_keys, text_feature_calls, monkeypatch):
    stage = ClipStage(stage_config(tiny_keys))
    videos = random_videos([3, 2, 4], 64, seed=5)
    videos[1][:] = 7  # the "poisoned" video: all pixels 7
    real = stage.embedder._encode_images

    def fail_on_poison(batch):
        if bool((batch == 7).all(dim=(1, 2, 3)).any()):
            raise RuntimeError("kernel failure")
        return real(batch)

    monkeypatch.setattr(stage.embedder, "_encode_images", fail_on_poison)
    rows = [{"video_id": f"v{i}", "frames": v, "error_stage": None} for i, v in enumerate(videos)]
    out = batch_to_rows(stage(rows_to_batch(rows)))
    assert [r["error_stage"] for r in out] == [None, "clip", None]
    assert out[1]["error_type"] == "RuntimeError" and out[1]["retryable"] is True
    assert out[0]["frame_embeddings"].shape == (3, 64) and out[2]["frame_embeddings"].shape == (4, 64)


def test_clip_stage_with_real_text_features(tiny_keys, clip_path):
    pytest.importorskip("extract.text.features")
    stage = ClipStage(stage_config(tiny_keys))
    rows = [{"video_id": "v", "caption": "Sunny beach day #beach #Summer", "transcript_text": "the waves are calm",
             "frames": decode_scaled(clip_path, 64), "error_stage": None}]
    out = batch_to_rows(stage(rows_to_batch(rows)))
    assert out[0]["error_stage"] is None
    assert len(out[0]) > len(rows[0]) + 5  # text columns were added alongside the image ones


# ---- GPU --------------------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("which", ["tiny", "vit_b32"])
def test_cuda_matches_cpu(which, request, clip_path):
    cpu: ClipEmbedder = request.getfixturevalue(which)
    gpu = ClipEmbedder(cpu.clip_cfg, device="cuda")
    assert gpu.lineage == cpu.lineage
    videos = [decode_scaled(clip_path, cpu.spec.image_size)] + random_videos([5, 3], cpu.spec.image_size)
    ref = cpu.embed_frames(videos, 64)
    for batch_size in (1, 4, 256):
        got = gpu.embed_frames(videos, batch_size)
        for r, g in zip(ref, got):
            assert g.dtype == np.float32
            assert np.sum(r * g, axis=1).min() >= 0.999
    text_cpu, trunc_cpu = cpu.encode_texts(TEXTS)
    text_gpu, trunc_gpu = gpu.encode_texts(TEXTS)
    assert np.sum(text_cpu * text_gpu, axis=1).min() >= 0.999 and (trunc_cpu == trunc_gpu).all()


def test_tags_trained_with_quick_gelu_get_the_quickgelu_architecture(tmp_path):
    """OpenAI's ViT-B-32 weights on the plain ViT-B-32 name would run GELU (open_clip only
    warns): the embedder and `extract models stage` switch to ViT-B-32-quickgelu."""
    import open_clip
    import yaml

    from extract.tools.staging import stage_models

    cfg = clip_mod.with_trained_activation
    assert cfg(ClipModelConfig(name="ViT-B-32", pretrained="openai")).name == "ViT-B-32-quickgelu"
    assert cfg(ClipModelConfig(name="ViT-B-32", pretrained="laion400m_e32")).name == "ViT-B-32-quickgelu"
    for same in (ClipModelConfig(name="ViT-B-32", pretrained="laion2b_s34b_b79k"),
                 ClipModelConfig(name="ViT-B-32", pretrained=None),
                 ClipModelConfig(name="ViT-B-32", pretrained=str(tmp_path / "weights.pt")),
                 ClipModelConfig(name="ViT-B-32-quickgelu", pretrained="openai")):
        assert cfg(same) == same
    block = open_clip.create_model("ViT-B-32-quickgelu", pretrained=None).visual.transformer.resblocks[0]
    assert type(block.mlp.gelu).__name__ == "QuickGELU"

    weights, whisper_file = tmp_path / "openai.pt", tmp_path / "whisper.pt"
    weights.write_bytes(b"clip weights")
    whisper_file.write_bytes(b"whisper weights")
    config = config_from_dict({"models": {"clip": {"name": "ViT-B-32", "pretrained": "openai"}}})
    staged = stage_models(config, str(tmp_path / "staged"), clip_from=str(weights), whisper_from=str(whisper_file))
    assert staged["models"]["clip"]["name"] == "ViT-B-32-quickgelu"
    assert yaml.safe_load((tmp_path / "staged" / "models.yaml").read_text()) == staged
    assert Path(staged["models"]["clip"]["pretrained"]).read_bytes() == b"clip weights"
