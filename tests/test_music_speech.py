"""No words on music, words on short speech, and the right audio kind: labelled real clips
(``bench.labelled_audio``) through the Whisper stage with real Whisper base weights
(``.build/whisper-base.pt``, see ``extract.models.whisper.base_weights_path``).

The slice: every speech clip (pocketsphinx-testdata, whisper's jfk; "go forward ten meters" is
1.8 s of speech in 2.8 s), the drascula-music tracks on whose 4 s excerpts Whisper's gating
alone wrote words (1, 29) and the three the benchmark's real clips use (3, 11, 23), every
asc-music excerpt, every third OpenSFX sound and both silent clips. ``make sounds-media``
installs the packages; without them or the weights the test skips. The whole set is
``bench/bench_music_speech.py``'s (``make bench``).
"""

from __future__ import annotations

import pytest

from bench.labelled_audio import labelled_clips
from extract.config import Config
from extract.rows import batch_to_rows, rows_to_batch
from extract.tools.whisper_eval import base_weights_path

DRASCULA_TRACKS = ("track1.ogg", "track29.ogg", "track3.ogg", "track11.ogg", "track23.ogg")
WORDS = {"goforward.raw": ("go", "forward", "meters")}  # Whisper writes "10"


def _in_slice(clip) -> bool:
    if clip.source == "drascula-music":
        return clip.name.split("@")[0] in DRASCULA_TRACKS
    if clip.source == "openttd-opensfx" and clip.label == "sound":
        return int(clip.name.split(":")[0]) % 3 == 0
    return True


@pytest.mark.weights
@pytest.mark.slow
def test_labelled_clips_get_their_kind_and_music_no_words():
    weights = base_weights_path()
    if not weights.is_file():
        pytest.skip(f"real Whisper base weights not found at {weights} (extract.models.whisper.base_weights_path)")
    try:
        clips = [c for c in labelled_clips() if _in_slice(c)]
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    from extract.stages.transcribe import TranscribeStage

    stage = TranscribeStage(Config().replace(**{"models.whisper.name": str(weights), "runtime.device": "cpu",
                                                "models.clip.pretrained": None}))
    rows = [{"video_id": c.name, "has_audio": True, "audio": c.audio, "error_stage": None} for c in clips]
    done = {row["video_id"]: row for row in batch_to_rows(stage(rows_to_batch(rows)))}
    by_label = {label: [done[c.name] for c in clips if c.label == label]
                for label in ("speech", "music", "sound", "silence")}
    assert len(by_label["music"]) == 16 and len(by_label["sound"]) >= 15, {k: len(v) for k, v in by_label.items()}

    for row in by_label["speech"]:
        assert row["transcript_text"] and row["audio_kind"] == "speech", row
    for name, words in WORDS.items():
        assert all(w in done[name]["transcript_text"].lower() for w in words), done[name]["transcript_text"]
    for row in by_label["music"] + by_label["sound"] + by_label["silence"]:
        assert row["transcript_text"] == "" and row["audio_kind"] != "speech", row
    kinds = {label: [r["audio_kind"] for r in members] for label, members in by_label.items()}
    assert kinds["music"].count("music") >= 0.8 * len(kinds["music"]), kinds["music"]
    assert kinds["sound"].count("sound") >= 0.8 * len(kinds["sound"]), kinds["sound"]
    assert kinds["silence"] == ["silence"] * len(kinds["silence"]), kinds["silence"]
