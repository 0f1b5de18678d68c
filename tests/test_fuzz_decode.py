"""Mutation fuzz tier: structured mutants of real clips (``tests/mutate.py``) through ``DecodeStage``.

Where ``test_fuzz.py`` draws random byte edits with hypothesis, this tier enumerates the
structures a parser walks: truncation at every 5 %, every MP4 box's size and every sample
table's entry count set to extreme values, every Matroska/WebM element size set to its
largest value or "unknown", codec identifiers swapped for same-length others (``avc1`` ->
``hvc1``, ``V_VP9`` -> ``V_AV1``), plus seeded bit flips and byte insertions, over four seed
clips (MP4 H.264/AAC with the index at the end, MP4 HEVC/AAC with the index first, WebM
VP9/Opus, Matroska VP8/AAC). Each mutant must end in exactly one well-formed row, a feature
row or an error row (``test_fuzz.check_one``), and the stage must still decode a good file
afterwards. The default suite runs a fixed-seed slice of ``SLICE`` mutants covering every
family; ``@pytest.mark.slow`` runs them all (more than 1,000) and prints the counts.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

import mutate
from extract.stages.decode import DecodeStage
from extract.tools.samples import write_clip
from test_fuzz import CONFIG, check_one

SLICE = 60
SLICE_SEED = 22
MUTATION_SEED = 0
FAMILIES = {"bitflip", "insert", "truncate", "boxsize", "tablecount", "ebmlsize", "tag", "codecid"}


def _seed_clips(folder: Path) -> dict[str, Path]:
    return {
        "mp4-h264-aac": write_clip(folder / "h264.mp4", 1.0, 64, 48, 10.0, gop=5),
        "mp4-hevc-faststart": write_clip(folder / "hevc.mp4", 1.0, 64, 64, 10.0, gop=5, codec="libx265",
                                         muxer_options={"movflags": "faststart"},
                                         encoder_options={"x265-params": "log-level=none"}),
        "webm-vp9-opus": write_clip(folder / "vp9.webm", 1.0, 64, 48, 10.0, gop=5, codec="libvpx-vp9",
                                    audio_codec="libopus"),
        "mkv-vp8-aac": write_clip(folder / "vp8.mkv", 1.0, 64, 48, 10.0, gop=5, codec="libvpx"),
    }


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Path]:
    return _seed_clips(tmp_path_factory.mktemp("fuzz-decode-seeds"))


@pytest.fixture(scope="module")
def mutants(seeds) -> list[tuple[str, str, bytes]]:
    """``(seed clip, mutant name, bytes)`` for every family of every seed clip."""
    out = []
    for clip, path in seeds.items():
        suffix = path.suffix
        out += [(clip + suffix, name, data) for name, data in mutate.all_mutants(path.read_bytes(), MUTATION_SEED)]
    return out


@pytest.fixture(scope="module")
def stage():
    s = DecodeStage(CONFIG)
    yield s
    s.close()


def _run(stage: DecodeStage, chosen: list[tuple[str, str, bytes]], folder: Path) -> Counter:
    """Decode each mutant through the stage (one well-formed row each, asserted by
    ``check_one``); counts by ``(family, outcome)``, the outcome ``ok`` or the error type."""
    outcomes: Counter = Counter()
    for i, (clip, name, data) in enumerate(chosen):
        path = folder / f"{i:05d}{Path(clip).suffix}"
        path.write_bytes(data)
        try:
            row = check_one(stage, path)
        except AssertionError as exc:
            raise AssertionError(f"mutant {clip}:{name}: {exc}") from exc
        outcomes[mutate.family(name), row["error_type"] or "ok"] += 1
        path.unlink()
    return outcomes


def _totals(by_family: Counter) -> Counter:
    totals: Counter = Counter()
    for (_, outcome), n in by_family.items():
        totals[outcome] += n
    return totals


def _still_decodes(stage: DecodeStage, seeds: dict[str, Path]) -> None:
    for path in seeds.values():
        assert check_one(stage, path)["error_stage"] is None, path


def _sample(mutants: list[tuple[str, str, bytes]], n: int) -> list[tuple[str, str, bytes]]:
    named = [(f"{name}|{clip}", data) for clip, name, data in mutants]  # the name first: its family leads
    return [(key.split("|")[1], key.split("|")[0], data) for key, data in mutate.stratified_sample(named, n, SLICE_SEED)]


def test_mutants_reach_every_structure(seeds, mutants):
    """The families find their structures in the seed clips, and the mutants differ from them."""
    by_clip = Counter((clip.split(".")[0], mutate.family(name)) for clip, name, _ in mutants)
    for clip in ("mp4-h264-aac", "mp4-hevc-faststart"):
        assert by_clip[clip, "boxsize"] > 100 and by_clip[clip, "tablecount"] >= 30 and by_clip[clip, "tag"] >= 10
        assert by_clip[clip, "ebmlsize"] == 0
    for clip in ("webm-vp9-opus", "mkv-vp8-aac"):
        assert by_clip[clip, "ebmlsize"] > 100 and by_clip[clip, "codecid"] >= 4 and by_clip[clip, "boxsize"] == 0
    assert {mutate.family(name) for _, name, _ in mutants} == FAMILIES
    originals = {clip + path.suffix: path.read_bytes() for clip, path in seeds.items()}
    assert all(data != originals[clip] for clip, _, data in mutants)
    assert len(mutants) >= 1000
    h264 = originals["mp4-h264-aac.mp4"]
    cuts = mutate.truncations(h264)
    assert [len(d) for _, d in cuts] == [len(h264) * i // 20 for i in range(1, 20)]
    assert mutate.bit_flips(h264, 1) == mutate.bit_flips(h264, 1) != mutate.bit_flips(h264, 2)  # seeded


def test_box_and_element_walkers_find_the_index(seeds):
    h264 = seeds["mp4-h264-aac"].read_bytes()
    kinds = [b.kind for b in mutate.mp4_boxes(h264)]
    assert kinds[:4] == [b"ftyp", b"free", b"mdat", b"moov"] and kinds.count(b"trak") == 2
    assert {b"stsz", b"stco", b"avcC", b"esds"} <= set(kinds)
    ids = [e.element_id for e in mutate.ebml_elements(seeds["webm-vp9-opus"].read_bytes())]
    assert ids[0] == 0x1A45DFA3 and 0x18538067 in ids and 0x1F43B675 in ids and ids.count(0x86) == 2  # CodecID x2


def test_mutant_slice_ends_in_one_well_formed_row_each(stage, seeds, mutants, tmp_path):
    chosen = _sample(mutants, SLICE)
    assert {mutate.family(name) for _, name, _ in chosen} == FAMILIES
    outcomes = _totals(_run(stage, chosen, tmp_path))
    assert sum(outcomes.values()) == SLICE
    assert outcomes["ok"] > 0 and len(outcomes) >= 3, outcomes  # decodable and rejected mutants both seen
    _still_decodes(stage, seeds)


@pytest.mark.slow
def test_all_mutants_end_in_one_well_formed_row_each(stage, seeds, mutants, tmp_path):
    started = time.monotonic()
    by_family = _run(stage, mutants, tmp_path)
    elapsed = time.monotonic() - started
    outcomes = _totals(by_family)
    assert sum(outcomes.values()) == len(mutants) >= 1000
    _still_decodes(stage, seeds)
    print(f"\nmutation fuzz: {len(mutants)} files in {elapsed:.0f} s: {dict(outcomes.most_common())}")
    for fam in sorted(FAMILIES):
        print(f"  {fam}: {dict((o, n) for (f, o), n in sorted(by_family.items()) if f == fam)}")
