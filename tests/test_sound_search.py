"""The same-sound search across history (``extract.index.sounds``) on real music: Debian
``drascula-music`` tracks and a real LibriVox reading (``pocketsphinx-testdata``) as a voice-over
(``make sounds-media``); two synthetic songs in one key and tempo (``extract.media.music.melody``)
as the hard negative.

A sound's later videos (another video id, a loud voice-over on top, 12 dB quieter, started 7.3 s
in, cut to 5 s) are named by its first video with the right offset; different music and a second
song in the same key and tempo are not; a sound first heard today is one sound for all of today's
videos; a video that already has a sound is not scanned again, yet its sound is still found
through the sound's first video.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from media import read_audio

from extract.index.sounds import SoundOptions, find_same_sounds, fingerprint_codes
from extract.media.audio import AUDIO_RATE
from extract.media.fingerprint import TIME_BITS, fingerprint, pack, sample, unpack
from extract.media.music import melody

MUSIC = Path("/usr/share/scummvm/drascula/audio")
SPEECH = Path("/usr/share/pocketsphinx/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav")
needs_media = pytest.mark.skipif(not (MUSIC / "track1.ogg").is_file() or not SPEECH.is_file(),
                                 reason="real music/speech not installed: `make sounds-media` (Debian drascula-music, "
                                        "pocketsphinx-testdata)")


def excerpt(audio: np.ndarray, start_s: float, length_s: float) -> np.ndarray:
    return audio[int(start_s * AUDIO_RATE):int((start_s + length_s) * AUDIO_RATE)]


def with_voice_over(music: np.ndarray, voice: np.ndarray) -> np.ndarray:
    """Speech mixed on top at the music's own RMS level (a loud voice-over)."""
    voice = np.resize(voice, len(music))
    return music + voice * np.sqrt(np.mean(music ** 2) / np.mean(voice ** 2))


def same_key_and_tempo() -> tuple[np.ndarray, np.ndarray]:
    """Two different tunes in C major at one tempo (12 s each), on two instruments. ``melody``
    renders a note (and its drum hit) sample-identically every time, so two tunes on one synthetic
    instrument, or over its drum loop, share identical audio: a shared recording, which two real
    songs never have (each recording of a note differs); hence two instruments and no loop."""
    scale = np.array([60, 62, 64, 65, 67, 69, 71, 72])
    tunes = [np.random.default_rng(seed).choice(scale, 40).tolist() for seed in (1, 2)]
    return (melody(tunes[0], beat_s=0.3, timbre="organ", drums=False)[0],
            melody(tunes[1], beat_s=0.3, timbre="brass", drums=False)[0])


def day(videos: dict[str, np.ndarray]) -> pa.Table:
    """A day's ``videos`` rows as committed: the fingerprint and its sample."""
    codes = [fingerprint(a) for a in videos.values()]
    return pa.table({"video_id": list(videos), "sound_fingerprint": pa.array([pack(c) for c in codes], pa.binary()),
                     "sound_keys": pa.array([pack(sample(c)) for c in codes], pa.binary())})


def lookup(tables: list[pa.Table]):
    """``find_same_sounds``' ``fingerprints``: the full fingerprints of the ids asked for, and
    every id asked for (in ``asked``)."""
    every = pa.concat_tables([t.select(["video_id", "sound_fingerprint"]) for t in tables]) if tables else None
    asked: list[str] = []

    def fingerprints(ids: list[str]) -> pa.Table:
        asked.extend(ids)
        return every.filter(pc.is_in(every["video_id"], value_set=pa.array(ids, pa.string())))

    return fingerprints, asked


def search(days: list[dict[str, np.ndarray]], known: pa.Table | None = None) -> tuple[dict[str, dict], object]:
    """Videos uploaded day by day (in dict order within a day); the last day is searched."""
    ids = [v for d in days for v in d]
    times = pa.array(np.arange(len(ids)) * 10**6, pa.timestamp("us", tz="UTC"))
    videos = pa.table({"video_id": ids, "upload_ts": times})
    history = [day(d) for d in days[:-1]]
    fingerprints, asked = lookup(history)
    result = find_same_sounds(videos, day(days[-1]), [t.select(["video_id", "sound_keys"]) for t in history], known,
                              fingerprints)
    return {r["video_id"]: r for r in result.table.to_pylist()}, (result, asked)


@pytest.fixture(scope="module")
def music() -> dict[str, np.ndarray]:
    if not (MUSIC / "track1.ogg").is_file() or not SPEECH.is_file():
        pytest.skip("real music/speech not installed: `make sounds-media`")
    tracks = {i: read_audio(MUSIC / f"track{i}.ogg") for i in (1, 2, 3)}
    return {"song": tracks[1], "other": tracks[2], "third": tracks[3], "voice": read_audio(SPEECH)}


@needs_media
def test_the_same_recording_is_one_sound_and_other_music_is_not(music):
    tune_a, tune_b = same_key_and_tempo()
    song = music["song"]
    day1 = {"song": excerpt(song, 10, 30), "other_song": excerpt(music["other"], 10, 30), "tune_a": tune_a}
    day2 = {
        "voice_over": with_voice_over(excerpt(song, 10, 30), music["voice"]),
        "quieter": 0.25 * excerpt(song, 10, 30),
        "later_start": excerpt(song, 17.3, 20),
        "cut_5s": excerpt(song, 22.1, 5),
        "other_song_again": 0.5 * excerpt(music["other"], 20, 10),
        "tune_b": tune_b,  # another tune, same key, tempo, timbre and drums
        "third_song": excerpt(music["third"], 10, 20),
    }
    found, (result, asked) = search([day1, day2])
    expected = {"voice_over": ("song", 0.0), "quieter": ("song", 0.0), "later_start": ("song", 7.3),
                "cut_5s": ("song", 12.1), "other_song_again": ("other_song", 10.0)}
    assert {k: r["sound_id"] for k, r in found.items()} == {k: v[0] for k, v in expected.items()}, found
    for name, (_, offset) in expected.items():
        assert found[name]["offset_s"] == pytest.approx(offset, abs=0.07), found[name]
        assert 0.0 < found[name]["score"] <= 1.0 and found[name]["matched_s"] > 3.0, found[name]
    assert found["cut_5s"]["matched_s"] <= 5.0
    assert result.stats.new_videos == len(day2) and result.stats.scanned_videos == len(day1)
    # the history's full fingerprints are read only for pairs whose samples agreed: the two sounds, and
    # tune_a, whose notes tune_b repeats sample for sample (``melody``), ruled out on the full fingerprints
    assert sorted(asked) == ["other_song", "song", "tune_a"], (asked, result.stats)


@needs_media
def test_first_format_rows_are_never_matched(music):
    """A history row written before version 0.4.0 (32-bit triple codes without a header, no
    ``sound_keys``) is not matched, even by a copy of its own recording; a rerun recomputes it."""
    old_codes = (np.arange(1, 400, dtype=np.int64) << 24) | np.arange(399)  # the first format: hash << 24 | frame
    song = excerpt(music["song"], 10, 30)
    history = pa.table({"video_id": ["old", "new_format"],
                        "sound_fingerprint": pa.array([old_codes.astype("<i8").tobytes(), pack(fingerprint(song))]),
                        "sound_keys": pa.array([None, pack(sample(fingerprint(song)))], pa.binary())})
    codes, counts, old = fingerprint_codes(history["sound_fingerprint"])
    assert counts.tolist() == [0, len(fingerprint(song))] and old == 1
    videos = pa.table({"video_id": ["old", "copy"], "upload_ts": pa.array([0, 10**6], pa.timestamp("us", tz="UTC"))})
    new = day({"copy": 0.5 * song})
    fingerprints, asked = lookup([history])
    result = find_same_sounds(videos, new, [history.slice(0, 1).select(["video_id", "sound_keys"])], None,
                              fingerprints)
    assert result.table.num_rows == 0 and asked == [] and result.stats.keyless_videos == 1
    # the same recording in the current format is found
    videos = pa.table({"video_id": ["new_format", "copy"],
                       "upload_ts": pa.array([0, 10**6], pa.timestamp("us", tz="UTC"))})
    result = find_same_sounds(videos, new, [history.slice(1).select(["video_id", "sound_keys"])], None, fingerprints)
    assert result.table["sound_id"].to_pylist() == ["new_format"] and asked == ["new_format"]


@needs_media
def test_a_sound_first_heard_today_and_known_sounds_across_days(music):
    song = music["song"]
    day1 = {"song": excerpt(song, 10, 30)}
    day2 = {"copy": 0.5 * excerpt(song, 15, 20)}
    found, _ = search([day1, day2])
    known = pa.table({"video_id": ["copy"], "sound_id": ["song"], "offset_s": pa.array([found["copy"]["offset_s"]],
                                                                                        pa.float32())})
    day3 = {"third": excerpt(music["third"], 10, 15), "third_again": excerpt(music["third"], 15, 10),
            "song_again": with_voice_over(excerpt(song, 30, 8), music["voice"])}
    found, (result, _) = search([day1, day2, day3], known)
    assert {k: r["sound_id"] for k, r in found.items()} == {"third_again": "third", "song_again": "song"}, found
    assert found["third_again"]["offset_s"] == pytest.approx(5.0, abs=0.07)
    assert found["song_again"]["offset_s"] == pytest.approx(20.0, abs=0.07)
    # "copy" already has its sound: only the sound's first video is scanned for it
    assert result.stats.skipped_videos == 1 and result.stats.scanned_videos == 1


@needs_media
@pytest.mark.xfail(strict=True, reason="known limit: a copy starting half a 32 ms frame off the original's frame grid "
                   "keeps 2-77 landmarks per 5 s on 8 tracks, 5 on track 1 (on the grid: 262-502); 16 ms frames "
                   "measured better with triples but then matched note-identical synthetic tunes: not yet retuned")
def test_a_cut_half_a_frame_off_the_grid(music):
    from extract.media.sound_match import match_fingerprints

    original = fingerprint(excerpt(music["song"], 10, 12))
    assert match_fingerprints(fingerprint(excerpt(music["song"], 16, 5)), original).same  # 6 s = 187.5 frames


def test_fingerprint_codes_reads_packed_columns_with_nulls_slices_and_first_format_values():
    codes = [np.arange(5, dtype=np.int64) << TIME_BITS, np.zeros(0, np.int64), np.array([7 << TIME_BITS | 3])]
    first_format = (np.array([9, 10], np.int64) << 24).astype("<i8").tobytes()  # no header
    column = pa.array([pack(codes[0]), None, first_format, pack(codes[2]), b""], pa.binary())
    flat, counts, old = fingerprint_codes(pa.chunked_array([column.slice(0, 1), column.slice(1)]))
    assert counts.tolist() == [5, 0, 0, 1, 0] and np.array_equal(flat, np.concatenate(codes)) and old == 1
    assert len(unpack(first_format)) == 0 and np.array_equal(unpack(pack(codes[0])), codes[0])
    with pytest.raises(ValueError, match="whole number"):
        fingerprint_codes(pa.array([b"123"], pa.binary()))


def test_options_name_the_bad_key():
    with pytest.raises(ValueError, match="sounds.min_share"):
        SoundOptions(min_share=0.0)


def random_day(rng: np.random.Generator, prefix: str, videos: int, landmarks: int) -> pa.Table:
    """Videos of random landmarks: keys from a 2^12 space (dense chance agreements), frames in 30 s."""
    codes = [(rng.integers(0, 1 << 12, landmarks) << TIME_BITS) | rng.integers(0, 900, landmarks)
             for _ in range(videos)]
    return pa.table({"video_id": [f"{prefix}{i:04d}" for i in range(videos)],
                     "sound_fingerprint": pa.array([pack(c) for c in codes], pa.binary()),
                     "sound_keys": pa.array([pack(sample(c)) for c in codes], pa.binary())})


def test_memory_held_grows_with_a_chunk_not_with_the_history():
    """Ten times the history scans ten times the agreements but holds one chunk's at a time."""
    import tracemalloc

    def run(chunks: int) -> tuple[object, int]:
        rng = np.random.default_rng(0)
        new = random_day(rng, "n", 50, 300)
        history = [random_day(np.random.default_rng([1, c]), f"h{c:02d}_", 200, 300) for c in range(chunks)]
        ids = [v for d in history for v in d["video_id"].to_pylist()] + new["video_id"].to_pylist()
        videos = pa.table({"video_id": ids, "upload_ts": pa.array(np.arange(len(ids)) * 10**6,
                                                                     pa.timestamp("us", tz="UTC"))})
        fingerprints, _ = lookup(history)
        tracemalloc.start()
        try:
            result = find_same_sounds(videos, new, (t.select(["video_id", "sound_keys"]) for t in history), None,
                                      fingerprints)
            return result, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    run(1)  # the kernels' first load (numba's cache, imports) is no part of what is measured
    (small, small_peak), (large, large_peak) = run(1), run(10)
    assert large.stats.scanned_videos == 10 * small.stats.scanned_videos
    assert large.stats.agreements > 8 * small.stats.agreements > 0
    assert large.stats.peak_chunk_agreements < 1.5 * small.stats.peak_chunk_agreements
    # the ten chunks' own fingerprints (10 x 200 x 300 x 8 B = 4.8 MB) are built before tracing starts
    assert large_peak < 2 * small_peak, (small_peak, large_peak)
    assert large.table.num_rows == small.table.num_rows == 0


def test_expand_details_exactly_the_wanted_pairs_agreements():
    """``pair_keys`` names every agreement's pair; ``expand`` gives the agreements of the pairs asked for."""
    from extract.index.landmark_join import DayIndex, expand, pair_keys

    rng = np.random.default_rng(3)
    q_owner = np.sort(rng.integers(5, 40, 3000)).astype(np.int32)
    q_hash, q_time = rng.integers(0, 300, 3000), rng.integers(0, 900, 3000).astype(np.int32)
    index = DayIndex.build(q_hash)
    h_owner = rng.integers(0, 30, 5000).astype(np.int32)
    h_codes = (rng.integers(0, 400, 5000) << TIME_BITS) | rng.integers(0, 900, 5000)
    key, who, frame, _ = index.probe(h_codes, h_owner)
    pair, hot = pair_keys(key, who, index.runs, index.order, q_owner, 10**9)
    every = np.array([(int(q_owner[q]) << 32) | int(w) for k, w in zip(key, who)
                      for q in index.order[index.runs[k]:index.runs[k + 1]] if q_owner[q] > w])
    assert hot == 0 and np.array_equal(np.sort(pair), np.sort(every))
    wanted = np.unique(pair)[::3]
    got, q_index, offset = expand(key, who, frame, index.runs, index.order, q_owner, q_time, 10**9, wanted)
    assert np.array_equal(np.sort(got), np.sort(pair[np.isin(pair, wanted)]))
    assert np.array_equal(q_owner[q_index], got >> 32)
    assert np.isin(offset, (h_codes & ((1 << TIME_BITS) - 1))[:, None] - q_time[None, :]).all()
    assert len(expand(key, who, frame, index.runs, index.order, q_owner, q_time, 10**9, wanted[:0])[0]) == 0
