"""Config loading: merge order, --set parsing, validation messages, hashes."""

import hashlib
import os
from pathlib import Path

import pytest

from extract.config import Config, ConfigError, load_config, parse_override


def test_defaults_match_design():
    cfg = Config()
    assert cfg.sampling.policy == "uniform" and cfg.sampling.fps == 1.0
    assert cfg.sampling.min_frames == 4 and cfg.sampling.max_frames == 32
    assert cfg.whisper.language is None and cfg.whisper.temperatures[0] == 0.0
    assert cfg.limits.max_error_rate == 0.5


def test_files_merge_in_order_and_set_wins(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("runtime:\n  device: cpu\n  clip_batch_size: 8\nsampling:\n  fps: 2\n")
    b.write_text("runtime:\n  clip_batch_size: 16\n")
    cfg = load_config([a, b], ["sampling.max_frames=10", "whisper.language=null"])
    assert cfg.runtime.device == "cpu"  # from a, untouched by b
    assert cfg.runtime.clip_batch_size == 16  # b wins over a
    assert cfg.sampling.fps == 2.0 and isinstance(cfg.sampling.fps, float)
    assert cfg.sampling.max_frames == 10
    assert cfg.whisper.language is None


def test_relative_model_paths_resolve_against_config_file(tmp_path):
    (tmp_path / "m").mkdir()
    cfg_file = tmp_path / "m" / "tiny.yaml"
    cfg_file.write_text("models:\n  whisper:\n    name: ./w.pt\n")
    cfg = load_config([cfg_file])
    assert cfg.models.whisper.name == str(tmp_path / "m" / "w.pt")


@pytest.mark.parametrize("override, fragment", [
    ("sampling.policy=fast", "sampling.policy: 'fast' is not one of uniform, keyframes, scene"),
    ("runtime.device=tpu", "runtime.device"),
    ("sampling.fps=0", "sampling.fps: must be > 0"),
    ("runtime.clip_batch_size=abc", "runtime.clip_batch_size: expected an integer"),
    ("sampling.nope=1", "unknown config key sampling.nope"),
    ("runtime.use_gpu=true", "allowed here:"),
    ("sampling.min_frames=40", "sampling.min_frames (40) must not exceed sampling.max_frames (32)"),
    ("whisper.temperatures=[0.2, 0.4]", "whisper.temperatures: must start with 0.0"),
    ("novalue", "expected key=value"),
])
def test_invalid_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError) as exc:
        load_config([], [override])
    assert fragment in str(exc.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config([bad])


def test_parse_override_yaml_values():
    assert parse_override("a.b=1") == ("a.b", 1)
    assert parse_override("a.b=[0.0, 0.2]") == ("a.b", [0.0, 0.2])
    assert parse_override("a.b=null") == ("a.b", None)
    assert parse_override("a.b=ViT-B-32") == ("a.b", "ViT-B-32")


def test_feature_hash_ignores_runtime_but_not_models():
    base = Config()
    assert base.replace(**{"runtime.clip_batch_size": 7}).feature_hash_of({}) == base.feature_hash_of({})
    assert base.replace(**{"runtime.clip_batch_size": 7}).config_hash != base.config_hash
    assert base.replace(**{"models.clip.name": "ViT-B-16"}).feature_hash_of({}) != base.feature_hash_of({})
    assert base.replace(**{"sampling.fps": 2.0}).feature_hash_of({}) != base.feature_hash_of({})


def test_feature_hash_counts_weights_by_content_not_name(tmp_path, monkeypatch):
    from extract.io import storage as digests_module
    from extract.models.weights import weights_digests
    from extract.tables.planning import plan_run

    monkeypatch.setenv("EXTRACT_DIGEST_CACHE", str(tmp_path / "digests"))
    hashed = []
    real = digests_module.sha256_file
    monkeypatch.setattr(digests_module, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    first = tmp_path / "a" / "whisper-small.pt"
    first.parent.mkdir()
    first.write_bytes(b"weights v1" * 1000)

    def features(path):
        config = Config().replace(**{"models.whisper.name": str(path), "models.clip.pretrained": None})
        return config.feature_hash_of(weights_digests(config))

    before = features(first)
    assert hashed == ["whisper-small.pt"]
    assert features(first) == before and hashed == ["whisper-small.pt"]  # cached: (path, size, mtime_ns)
    # the same bytes under another name and folder: same feature hash
    renamed = tmp_path / "b" / "whisper-small-v2-final.pt"
    renamed.parent.mkdir()
    renamed.write_bytes(first.read_bytes())
    assert features(renamed) == before
    # new bytes under the same name: another feature hash, so a rerun processes the videos again
    stat = first.stat()
    first.write_bytes(b"weights v2" * 1000)  # same size
    os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # past the file system's mtime granularity
    after = features(first)
    assert after != before and hashed.count("whisper-small.pt") == 2
    from datetime import datetime, timezone

    listed = datetime(2026, 11, 24, 10, tzinfo=timezone.utc)  # the input's identity, unchanged
    row = {"video_id": "v", "dt": "2026-11-24", "upload_ts": "2026-11-24T10:00:00Z", "uri": "/v.mp4",
           "source_bytes": 5, "source_mtime": "2026-11-24T10:00:00Z"}
    outcome = {"v": {"status": "ok", "feature_hash": before, "uri": "/v.mp4", "dt": "2026-11-24",
                     "source_bytes": 5, "source_mtime": listed}}
    assert [r["video_id"] for r in plan_run([row], outcome, after, False, False).todo] == ["v"]
    assert not plan_run([row], outcome, before, False, False).todo
    # a key without a file counts by its value; where weights are looked up does not count
    named = Config().replace(**{"models.whisper.name": "/nowhere/whisper-small.pt"})
    assert weights_digests(named) == {}
    assert named.replace(**{"models.whisper.download_root": "/x"}).feature_hash_of({}) == named.feature_hash_of({})


def test_named_whisper_weights_count_by_their_published_sha256():
    import whisper

    from extract.models.weights import weights_digests

    digests = weights_digests(Config().replace(**{"models.whisper.name": "small", "models.clip.pretrained": None}))
    assert digests == {"models.whisper.name": whisper._MODELS["small"].split("/")[-2]}


@pytest.mark.parametrize("override, key", [
    ("whisper.window_s=45", "whisper.window_s"),
    ("whisper.window_s=0", "whisper.window_s"),
    ("whisper.boundary_search_s=60", "whisper.boundary_search_s"),
    ("whisper.boundary_search_s=-1", "whisper.boundary_search_s"),
    ("whisper.no_speech_threshold=1.5", "whisper.no_speech_threshold"),
    ("whisper.logprob_threshold=0.5", "whisper.logprob_threshold"),
    ("whisper.temperatures=[0.0, 2.0]", "whisper.temperatures"),
    ("output.max_rows_per_file=0", "output.max_rows_per_file"),
])
def test_whisper_and_output_keys_are_verified_at_load(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([], [override])


@pytest.mark.parametrize("name", ["local.yaml", "prod.yaml"])
def test_job_configs_hold_no_default_value(name):
    """A job config says only what differs from the defaults (and the machine-fitted runtime
    keys are left to resolve at plan time), so a default changes in one place."""
    import yaml

    from conftest import REPO

    defaults = Config().to_dict()

    def leaves(data, prefix=""):
        for key, value in data.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    for key, value in leaves(yaml.safe_load((REPO / "jobs" / "configs" / name).read_text()) or {}):
        section, _, leaf = key.rpartition(".")
        default = defaults
        for part in section.split("."):
            default = default[part]
        assert value != default[leaf], f"{name}: {key} repeats the default {value!r}"
    load_config([REPO / "jobs" / "configs" / name])


@pytest.mark.parametrize("key,value,words", [
    ("limits.video_codecs", [], "at least one codec"),
    ("limits.audio_codecs", ["AAC"], "'AAC' is not an FFmpeg codec name"),
    ("limits.audio_codecs", ["pcm_*_le"], "'pcm_*_le' is not an FFmpeg codec name"),
    ("limits.video_codecs", "h264", "expected a list"),
])
def test_codec_allow_lists_are_checked_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as info:
        Config().replace(**{key: value})
    assert str(info.value).startswith(key) and words in str(info.value)


def test_codec_allowed_matches_names_and_prefixes():
    from extract.config import AUDIO_CODECS, VIDEO_CODECS
    from extract.media.probe import codec_allowed

    assert codec_allowed("pcm_s16le", AUDIO_CODECS) and codec_allowed("pcm_alaw", AUDIO_CODECS)
    assert not codec_allowed("ac3", AUDIO_CODECS) and not codec_allowed("pcm", ("pcm_*",))
    assert codec_allowed("av1", VIDEO_CODECS) and not codec_allowed("libdav1d", VIDEO_CODECS)
    assert not codec_allowed("h264x", VIDEO_CODECS) and not codec_allowed("mjpeg", VIDEO_CODECS)


@pytest.mark.parametrize("section, values, key", [
    ("SamplingConfig", {"policy": "fast"}, "sampling.policy"),
    ("SamplingConfig", {"min_frames": 40}, "sampling.min_frames"),
    ("WhisperConfig", {"window_s": 45.0}, "whisper.window_s"),
    ("OcrConfig", {"languages": ("fr",)}, "ocr.languages"),
    ("LabelsConfig", {"file": "/nowhere/labels.yaml"}, "labels.file"),
    ("TextConfig", {"hashtag_template": "a video"}, "text.hashtag_template"),
    ("RuntimeConfig", {"accelerator_resource": "GPU"}, "runtime.accelerator_resource"),
    ("LimitsConfig", {"video_codecs": ()}, "limits.video_codecs"),
    ("OutputConfig", {"thumbnails": -1}, "output.thumbnails"),
    ("StorageConfig", {"retention_hours": -1.0}, "storage.retention_hours"),
    ("InputConfig", {"allowed_uris": ("uploads/",)}, "input.allowed_uris[0]"),
    ("ScheduleConfig", {"input": "s3://uploads/manifest.jsonl"}, "schedule.input"),
])
def test_each_section_checks_itself_however_it_is_built(section, values, key):
    """A section checks its own keys when built, so a bad value fails the same way from YAML,
    from a direct constructor and from ``dataclasses.replace`` of a valid section."""
    import dataclasses

    import extract.config as config

    cls = getattr(config, section)
    for build in (lambda: cls(**values), lambda: dataclasses.replace(cls(), **values)):
        with pytest.raises(ConfigError) as info:
            build()
        assert str(info.value).startswith(key)


def test_clip_weights_given_by_path_are_hashed_without_importing_open_clip(tmp_path):
    """A ``models.clip.pretrained`` path is a file, never one of open_clip's tags, so planning
    does not import open_clip (and torch: most of a rerun with nothing to do)."""
    import subprocess
    import sys

    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"clip weights" * 100)
    script = ("import sys, hashlib\n"
              "from extract.config import Config\n"
              "from extract.models.weights import weights_digests\n"
              f"config = Config().replace(**{{'models.clip.pretrained': {str(weights)!r}, 'models.whisper.name': 'x'}})\n"
              "print(weights_digests(config)['models.clip.pretrained'], 'open_clip' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env=dict(os.environ, EXTRACT_DIGEST_CACHE=str(tmp_path / "digests"))).stdout.split()
    assert out == [hashlib.sha256(weights.read_bytes()).hexdigest(), "False"]
