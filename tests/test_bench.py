"""The benchmark harness (``bench/``): it must keep running, so ``make bench`` cannot rot.

The end-to-end check runs ``python -m bench.run --quick`` (2 tiny clips, tiny random models,
the job and the naive baseline each in a child process) and reads back what it wrote. The
other checks are pure: clip-set parameters and caching keys, the naive decoder against the
job's decoder, the scaling fit, and how RESULTS.md keeps its hand-written part.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from bench import clips
from bench.render import HAND_WRITTEN_MARKER, write_results_md
from bench.run import _clip_shape, _counts, scaling_fit, stage_breakdown


def test_real_specs_look_like_uploads():
    """The realistic comparison set: 20 distinct clips, most with recorded speech, 5-120 s, up to
    1080p, portrait and landscape; no two speak the same recordings in the same order."""
    from bench import real_clips

    specs = real_clips.real_specs()
    kinds = [s.kind for s in specs]
    assert len(specs) >= 20 and len({s.video_id for s in specs}) == len(specs)
    assert kinds.count("speech") > len(specs) / 2 and kinds.count("music") >= 2 and kinds.count("silence") >= 2
    assert min(s.duration_s for s in specs) == 5 and max(s.duration_s for s in specs) == 120
    assert max(s.width * s.height for s in specs) == 1920 * 1080
    assert any(s.height > s.width for s in specs) and any(s.width > s.height for s in specs)
    assert all(s.video in real_clips.VIDEOS for s in specs) and len({s.video for s in specs}) >= 5
    speech = [s.speech for s in specs if s.kind == "speech"]
    assert len(set(speech)) == len(speech) and all(set(order) == set(real_clips.SPEECH) for order in speech)
    assert {(s.video, s.video_start_s, s.duration_s) for s in specs}.__len__() == len(specs)


def test_speech_track_fills_the_clip_and_says_what_it_holds():
    from bench import real_clips

    rate = real_clips.RATE
    recordings = {name: (np.full(int((1 + i) * rate), 0.1 * (i + 1), np.float32), f"words {i}")
                  for i, name in enumerate(real_clips.SPEECH)}
    spec = next(s for s in real_clips.real_specs() if s.kind == "speech" and s.duration_s >= 30)
    audio, said, used = real_clips.speech_track(spec, recordings)
    speech_s = sum(len(recordings[n][0]) for n in used) / rate
    assert speech_s <= clips.SPEECH_FILL * spec.duration_s and len(audio) / rate <= spec.duration_s
    assert said == " ".join(recordings[n][1] for n in used) and used[0] == spec.speech[0]


@pytest.mark.skipif(not (__import__("bench.real_clips").real_clips.MUSIC_DIR / "track3.ogg").is_file(),
                    reason="real music not installed: `make sounds-media` (Debian drascula-music)")
def test_music_clips_are_distinct_real_recordings():
    """Each music clip of the set is its own real track (not a synthetic tone), as long as the clip."""
    from bench import real_clips

    music = [s for s in real_clips.real_specs() if s.kind == "music"]
    tracks = [real_clips.music_track(s) for s in music]
    assert len({real_clips.MUSIC_TRACKS[s.seed % len(real_clips.MUSIC_TRACKS)] for s in music}) == len(music)
    for spec, audio in zip(music, tracks):
        assert len(audio) == int(spec.duration_s * real_clips.RATE)
        windows = audio[: len(audio) // 16000 * 16000].reshape(-1, 16000)
        assert (np.sqrt((windows ** 2).mean(axis=1)) > 0.005).mean() > 0.8  # sound in most seconds
        spectrum = np.abs(np.fft.rfft(audio[:16000 * 4]))
        assert (spectrum > spectrum.max() * 0.05).sum() > 200  # many partials: not one synthetic tone


def test_set_key_changes_with_every_parameter():
    base = clips.short_specs(3)
    keys = {clips.set_key("s", base, True), clips.set_key("s", base, False),
            clips.set_key("s", clips.short_specs(4), True), clips.set_key("s", clips.short_specs(3, width=160), True)}
    assert len(keys) == 4
    assert clips.set_key("s", base, True) == clips.set_key("s", clips.short_specs(3), True)


def test_build_set_and_subset_manifest(tmp_path):
    specs = clips.short_specs(2, duration_s=1.0, width=96, height=64)
    manifest = clips.build_set("t", specs, cache_dir=tmp_path, workers=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert [r["video_id"] for r in rows] == ["short0000", "short0001"]
    assert all((manifest.parent / r["uri"]).stat().st_size > 0 for r in rows)
    mtime = manifest.stat().st_mtime_ns
    assert clips.build_set("t", specs, cache_dir=tmp_path) == manifest  # cached: not rebuilt
    assert manifest.stat().st_mtime_ns == mtime
    sub = clips.subset_manifest(manifest, 1, tmp_path / "sub.jsonl")
    (row,) = [json.loads(line) for line in sub.read_text().splitlines()]
    assert row["video_id"] == "short0000" and row["uri"].startswith("/")
    with pytest.raises(ValueError, match="has 2 clips"):
        clips.subset_manifest(manifest, 3, tmp_path / "bad.jsonl")


def test_naive_decoder_keeps_the_frames_the_job_keeps(tmp_path):
    from bench.naive import decode_all_then_pick
    from extract.config import Config
    from extract.tools.samples import write_clip
    from extract.media.video import decode_video
    from extract.models.preprocess import PreprocessSpec

    path = str(write_clip(tmp_path / "c.mp4", 6.5, 160, 96, 12.0, audio=None, gop=12))
    config = Config()
    spec = PreprocessSpec(32, "bicubic", "shortest", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    images, times, _ = decode_all_then_pick(path, config.sampling)
    ours = decode_video(path, config, spec)
    assert len(images) == len(ours.pts_s) == 7  # 1 fps over 6.5 s
    np.testing.assert_allclose(times, ours.pts_s, atol=1e-3)
    assert images[0].size == (160, 96)  # full size: the naive pipeline resizes in preprocess_val


def test_scaling_fit_recovers_a_line():
    points = [{"clips": n, "wall_s": 20.0 + 0.5 * n, "driver_peak_rss_mb": 500.0} for n in (10, 40, 160)]
    fit = scaling_fit(points)
    assert fit["fixed_s"] == pytest.approx(20.0) and fit["per_video_s"] == pytest.approx(0.5)
    assert fit["steady_videos_per_s"] == pytest.approx(2.0) and fit["max_residual_pct"] < 0.1
    assert scaling_fit(points[:1]) is None


def test_stage_breakdown_maps_naive_steps_onto_stages():
    ours = {"videos": 4, "frames": 40, "timings_s": {"decode": 1.0, "whisper": 4.0, "clip": 2.0, "write": 0.5}}
    naive = {"videos": 4, "frames": 40, "timings_s": {"decode": 3.0, "preprocess": 1.0, "whisper": 8.0,
                                                     "clip": 3.0, "text": 1.0, "write": 0.5, "load": 9.0}}
    rows = {r["stage"].split(" (")[0]: r for r in stage_breakdown(ours, naive)}
    assert rows["decode"]["naive_s"] == 4.0 and rows["decode"]["speedup"] == 4.0
    assert rows["clip + text features"]["naive_s"] == 4.0 and rows["whisper"]["speedup"] == 2.0
    assert rows["decode"]["ours_frames_per_s"] == 40.0


def test_counts_option():
    assert _counts("160,10,40,10") == [10, 40, 160]
    for bad in ("", "a,b", "0,4"):
        with pytest.raises(Exception, match="clip counts"):
            _counts(bad)


def test_clip_shape_option():
    assert _clip_shape("30,1280x720") == (30.0, 1280, 720)
    for bad in ("30", "30,1280", "0,320x180", "5,321x180", "x,320x180"):
        with pytest.raises(Exception, match="SECONDS|even sizes"):
            _clip_shape(bad)


def test_results_md_keeps_the_hand_written_part(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_results_md(path, "# generated 1\n")
    assert path.read_text().endswith(HAND_WRITTEN_MARKER + "\n")
    path.write_text(path.read_text() + "## GPU plan\nkeep me\n")
    write_results_md(path, "# generated 2\n")
    text = path.read_text()
    assert text.startswith("# generated 2\n") and "generated 1" not in text
    assert text.endswith(HAND_WRITTEN_MARKER + "\n## GPU plan\nkeep me\n")


def test_quick_bench_writes_results_and_plot(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    (out / "RESULTS.md").write_text(f"old\n{HAND_WRITTEN_MARKER}\nhand-written notes\n")
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--out", str(out), "--work", str(work)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    comparison = results["comparison"]
    ours, naive = comparison["ours"], comparison["naive"]
    for record in (ours, naive):
        assert record["videos"] == record["ok"] == 2 and record["errors"] == 0
        assert record["wall_s"] > 0 and record["driver_peak_rss_mb"] > 0
    assert ours["frames"] == naive["frames"] >= 8  # 2 clips, at least 4 frames each
    for record in (ours, naive):  # CPU-seconds of every process of the run, and per stage
        assert record["tree_cpu_s"] > 0 and 0 < record["utilisation"] <= 1.2
        assert {"decode", "whisper", "clip"} <= set(record["stage_cpu_s"]) or "text" in record["stage_cpu_s"]
    assert list(ours["resources"]["defaults"]) and "models" in ours["resources"]  # the fused CPU pool ran
    same = comparison["equivalence"]
    assert same["n_frames_equal"] == 2 and same["frames_compared"] == ours["frames"]
    assert same["frame_cosine_mean"] > 0.99  # same weights, same frames, two resizers
    stages = {r["stage"].split(" (")[0]: r for r in comparison["stages"]}
    for name in ("decode", "whisper", "clip + text features"):
        assert stages[name]["ours_s"] > 0 and stages[name]["naive_s"] > 0
    assert comparison["ratios"]["end_to_end"] == pytest.approx(naive["wall_s"] / ours["wall_s"], rel=1e-2)
    alone = comparison["decode_alone"]
    assert alone["ours"]["frames"] == alone["naive"]["frames"] == ours["frames"]
    assert alone["machine"]["frames"] == ours["frames"] and alone["machine"]["errors"] == 0
    assert alone["machine"]["processes"] == os.cpu_count() and alone["machine"]["wall_s"] > 0
    assert comparison["ratios"]["decode"] == alone["speedup_machine"] > 0
    assert comparison["ratios"]["decode_one_process"] == alone["speedup_wall"] > 0
    assert [p["clips"] for p in results["scaling"]] == [2]
    assert results["models"]["note"].startswith("quick mode")

    text = (out / "RESULTS.md").read_text()
    assert text.startswith("# Benchmark results") and "old\n" not in text
    assert text.endswith(f"{HAND_WRITTEN_MARKER}\nhand-written notes\n")
    for heading in ("## Machine and versions", "## Ours vs naive", "### Per-stage time", "### Decode alone",
                    "### CPU-seconds per stage and core utilisation", "## Scaling (ours)"):
        assert heading in text
    assert f"| wall time (s) | {ours['wall_s']:.1f} | {naive['wall_s']:.1f} |" in text
    png = (out / "throughput.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_training_read_builds_days_as_runs_write_them(tmp_path):
    """bench_training_read's synthetic output: one commit per day, late uploads into the day
    before (two files there), real schemas the Catalog reads; ``layout`` counts what the log lists."""
    from bench.bench_training_read import build, layout
    from extract.tables.catalog import Catalog

    dts = build(str(tmp_path / "out"), days=3, videos=4, frames=8)
    got = layout(str(tmp_path / "out"))
    assert len(dts) == 3 and got["videos"]["partitions"] == got["frame_embeddings"]["partitions"] == 3
    assert got["videos"]["files"] == 5 and got["videos"]["files_per_partition_max"] == 2  # late uploads: days 0, 1
    frames = Catalog(str(tmp_path / "out")).read("frame_embeddings", ["video_id", "embedding"])
    assert frames.num_rows == (3 * 4 + 2 * 1) * 8 and frames.schema.field("embedding").type.list_size == 512


def test_tree_cpu_counts_grandchildren_and_orphans(tmp_path):
    """``TreeCpu`` counts every process under the one that starts it, also those whose parent exits
    without waiting for them (``getrusage`` loses those), and leaves out what it spent before.
    Each spinner says when its second of CPU is spent and lives a moment longer, so the count
    does not depend on how fast a loaded machine lets them run."""
    done = tmp_path / "done"
    spin = ("import pathlib, sys, time\\nt = time.process_time()\\nwhile time.process_time() - t < 1.0: pass\\n"
            "pathlib.Path(sys.argv[1]).touch()\\ntime.sleep(0.5)")
    script = f"""
import pathlib, subprocess, sys, time
from bench.machine import TreeCpu
t = time.process_time()
while time.process_time() - t < 1.0: pass  # before start(): not counted
tree = TreeCpu(interval_s=0.05).start()
# the shell exits at once: the two spinning grandchildren are orphans while they run
subprocess.run(["sh", "-c", "{sys.executable} -c '{spin}' {done}-1 & {sys.executable} -c '{spin}' {done}-2 &"],
               check=True)
deadline = time.monotonic() + 120
while not all(pathlib.Path(f"{done}-{{i}}").exists() for i in (1, 2)) and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(0.2)
print(tree.total())
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert 1.9 <= float(out.stdout) <= 3.0, out


def test_signal_cost_table_renders_with_each_share_of_the_run():
    from bench.bench_signals import PARTS, SIGNALS, markdown
    from bench.render import signal_lines

    per_s = {"motion": 20.0, "shots": 90.0, "shots_pass": 20.0, "shots_model": 70.0, "fingerprint": 5.0,
             "languages": 0.1, "text_area": 0.5}  # CPU ms per second of video
    result = {"clips": 2, "video_s": 10.0,
              "signals": {k: {"cpu_s": v / 100, "per_video_ms": v * 5, "per_video_s_ms": v} for k, v in per_s.items()}}
    assert set(result["signals"]) == set(SIGNALS) | set(PARTS["shots"])
    run = {"tree_cpu_s": 20.0, "videos": 4}
    on = {"motion": True, "shots": False, "fingerprint": True, "languages": True, "text_area": True}
    results = {"micro": {"bench_signals": {"result": result, "markdown": markdown(result)}},
               "comparison": {"video_s": 10.0, "ours": run, "ours_ocr": run, "signals_on": on}}
    lines = signal_lines(results)
    table = "\n".join(lines)
    assert lines[0] == "### Signal costs per video and share of the run"
    assert "2.00 s" in table  # the run's CPU per second of video: 20 s over 10 s
    assert "| motion (`signals.motion`) | yes | 100.0 | 20.00 | 1.0% |" in table  # 0.02 / 2.0
    assert "| shots (`signals.shots`) | no | 450.0 | 90.00 | 4.3% |" in table  # off in the run: 0.09 / 2.09
    assert "| shots: TransNetV2 | no | 350.0 | 70.00 | 3.4% |" in table
    assert "| languages (`signals.language`) | yes | 0.5 | 0.10 | 0.0% |" in table
    assert table.count("\n| ") == 1 + len(per_s)  # the header, one row per signal and part
    assert "share" not in markdown(result).split("\n")[2]  # alone (the micro-benchmark section): no share
    assert signal_lines({"micro": {}, "comparison": results["comparison"]}) == []


def test_audio_kind_confusion_renders_per_true_label():
    """bench_music_speech's section of RESULTS.md: kinds per true label, words, the rule held out."""
    from bench.bench_music_speech import markdown

    def row(label, kind, words=0, held_out=False, rule_music=False, source="s"):
        return {"label": label, "source": source, "clip": f"{label}-{kind}-{words}", "held_out": held_out,
                "seconds": 4.0, "audio_kind": kind, "speech_s": 0.0, "no_speech_prob": 0.5, "avg_logprob": [-1.0],
                "temperature": [0.0], "words": words, "text": "", "beat": 0.5, "flatness": 0.01, "pitch_classes": 7,
                "rule_music": rule_music, "features_ms": 40.0, "stage_s": 1.0}

    rows = [row("speech", "speech", 3), row("speech", "sound"), row("music", "music", rule_music=True),
            row("music", "speech", 5, rule_music=True), row("music", "sound", held_out=True),
            row("sound", "sound"), row("sound", "music", held_out=True, rule_music=True), row("silence", "silence")]
    text = markdown({"rows": rows, "load_avg_before": 1.0, "load_avg_after": 1.5})
    assert "| speech | 2 | 1 | 0 | 1 | 0 | 0 | 1 |" in text
    assert "| music | 3 | 1 | 1 | 1 | 0 | 0 | 1 |" in text
    assert "| sound | 2 | 0 | 1 | 1 | 0 | 0 | 0 |" in text
    assert "| silence | 1 | 0 | 0 | 0 | 1 | 0 | 0 |" in text
    assert "| fitted on (2 music, 1 sound) | 2 | 0 | 1 | 0 |" in text
    assert "| held out (1 music, 1 sound) | 0 | 1 | 0 | 1 |" in text
    assert "| music | music-speech-5 |" in text and "| speech | speech-sound-0 |" in text  # listed for a look
    assert "10.0 ms per second of audio" in text


def test_sound_bench_day_is_not_a_copy_of_a_history_chunk():
    """The new day and each history chunk of bench_sounds draw from their own streams."""
    from bench import bench_sounds

    first = [bench_sounds.stream(key).integers(0, 2**62, 4).tolist() for key in (bench_sounds.DAY_STREAM, 0, 1, 2)]
    assert len({tuple(x) for x in first}) == 4


def test_sound_bench_hash_bits_reads_the_width_of_uniform_hashes():
    from bench.bench_sounds import hash_bits

    rng = np.random.default_rng(0)
    clips = [np.unique(rng.integers(0, 1 << 16, 3000)) for _ in range(4)]
    assert abs(hash_bits(clips) - 16) < 0.3
    assert hash_bits(clips[:1]) is None
