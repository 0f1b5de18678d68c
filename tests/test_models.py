"""The driver's check of local checkpoint files (``extract.models.weights.local_checkpoint_problem``,
raised by ``ModelLineage.check_checkpoints``) and the weights counted by content."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch

from extract.config import load_config
from extract.models.weights import checkpoint_problem, local_checkpoint_problem
from extract.models.common import ModelLoadError


def _torch_zip(path: Path) -> Path:
    torch.save({"weights": torch.arange(20_000, dtype=torch.float32), "dims": {"n": 3}}, path)
    return path


def _safetensors(path: Path, data_bytes: int = 64) -> Path:
    header = json.dumps({"w": {"dtype": "F32", "shape": [data_bytes // 4], "data_offsets": [0, data_bytes]},
                         "__metadata__": {"format": "pt"}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(data_bytes))
    return path


def _cut(src: Path, dest: Path, keep: int) -> Path:
    dest.write_bytes(src.read_bytes()[:keep])
    return dest


def test_whole_checkpoints_pass(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"a": 1}, protocol=2))  # no directory to check: non-empty is enough
    for path in (_torch_zip(tmp_path / "w.pt"), _safetensors(tmp_path / "w.safetensors"), legacy):
        assert checkpoint_problem(path) is None, path


def test_cut_or_missing_checkpoints_are_named(tmp_path):
    whole = _torch_zip(tmp_path / "w.pt")
    size = whole.stat().st_size
    for keep in (1000, size // 2, size - 1):
        assert "cut short" in checkpoint_problem(_cut(whole, tmp_path / f"cut{keep}.pt", keep)), keep
    tensors = _safetensors(tmp_path / "w.safetensors")
    assert "header says" in checkpoint_problem(_cut(tensors, tmp_path / "c.safetensors", tensors.stat().st_size - 4))
    assert "cut short" in checkpoint_problem(_cut(tensors, tmp_path / "h.safetensors", 20))
    (tmp_path / "empty.pt").write_bytes(b"")
    assert checkpoint_problem(tmp_path / "empty.pt") == "is empty"
    assert checkpoint_problem(tmp_path / "nowhere.pt") == "does not exist"
    assert checkpoint_problem(tmp_path) == "is not a file"


def test_check_names_the_key_and_path_and_leaves_names_to_the_actors(tmp_path, tiny_config):
    from extract.models.weights import resolve_lineage

    config = load_config([tiny_config])
    assert local_checkpoint_problem(config) is None  # the tiny checkpoints are whole
    resolve_lineage(config).check_checkpoints()
    cut = _cut(Path(config.models.whisper.name), tmp_path / "whisper-cut.pt", 5000)
    lineage = resolve_lineage(load_config([tiny_config], [f"models.whisper.name={cut}"]))
    with pytest.raises(ModelLoadError, match=rf"models\.whisper\.name: checkpoint {cut} is cut short"):
        lineage.check_checkpoints()
    missing = tmp_path / "nowhere" / "clip.safetensors"
    assert local_checkpoint_problem(load_config([tiny_config], [f"models.clip.pretrained={missing}"])).startswith(
        f"models.clip.pretrained: checkpoint {missing} does not exist")
    # Whisper names, open_clip tags and object-store URIs are resolved (and fetched) by the actors.
    for overrides in (["models.whisper.name=base", "models.clip.name=ViT-B-32", "models.clip.pretrained=openai"],
                      ["models.whisper.name=s3://bucket/w.pt", "models.clip.pretrained=s3://bucket/c.pt"]):
        assert local_checkpoint_problem(load_config([tiny_config], overrides)) is None


def test_staged_object_weights_count_by_the_digest_recorded_at_stage_time(tmp_path, monkeypatch, s3_server):
    import boto3

    from extract.config import Config
    from extract.io import storage as digests_module
    from extract.io.storage import sha256_file
    from extract.tools.staging import stage_models
    from extract.models.weights import weights_digests

    monkeypatch.setenv("EXTRACT_DIGEST_CACHE", str(tmp_path / "digests"))
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="models-digest")
    clip_file, whisper_file = tmp_path / "clip.pt", tmp_path / "whisper.pt"
    clip_file.write_bytes(b"clip weights" * 100)
    whisper_file.write_bytes(b"whisper weights" * 100)
    config = Config().replace(**{"models.clip.name": "ViT-B-32", "models.clip.pretrained": str(clip_file)})
    staged = stage_models(config, "s3://models-digest/v1", clip_from=str(clip_file), whisper_from=str(whisper_file))
    remote = config.replace(**{"models.clip.pretrained": staged["models"]["clip"]["pretrained"],
                               "models.whisper.name": staged["models"]["whisper"]["name"]})
    fetched = []
    real_fetch = digests_module.local_checkpoint
    monkeypatch.setattr(digests_module, "local_checkpoint", lambda *a, **k: fetched.append(a[0]) or real_fetch(*a, **k))
    digests = weights_digests(remote)
    assert digests == {"models.clip.pretrained": sha256_file(clip_file),
                       "models.whisper.name": sha256_file(whisper_file)}
    assert fetched == []  # the sidecars said it: nothing fetched
    local = config.replace(**{"models.whisper.name": str(whisper_file)})
    assert remote.feature_hash_of(digests) == local.feature_hash_of(weights_digests(local))
    # an object replaced without its sidecar (another size): fetched and hashed
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(endpoint_override=s3_server, region="us-east-1")
    with fs.open_output_stream(staged["models"]["whisper"]["name"][len("s3://"):]) as out:
        out.write(b"other whisper weights")
    changed = weights_digests(remote)
    assert changed["models.whisper.name"] != digests["models.whisper.name"]
    assert fetched == [staged["models"]["whisper"]["name"]]


def test_an_open_clip_tag_counts_by_the_file_it_resolves_to_in_the_cache(tmp_path, monkeypatch):
    from extract.config import Config
    from extract.io.storage import sha256_file
    from extract.models.weights import weights_digests

    monkeypatch.setenv("EXTRACT_DIGEST_CACHE", str(tmp_path / "digests"))
    cache = tmp_path / "hf"
    config = Config().replace(**{"models.clip.name": "ViT-B-32", "models.clip.pretrained": "laion2b_s34b_b79k",
                                 "models.clip.cache_dir": str(cache), "models.whisper.name": str(tmp_path / "none")})
    assert weights_digests(config) == {}  # not in the cache: the tag counts by its name
    # the Hugging Face hub cache layout open_clip downloads into
    repo = cache / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"tag weights")
    assert weights_digests(config) == {"models.clip.pretrained": sha256_file(snapshot / "open_clip_model.safetensors")}
