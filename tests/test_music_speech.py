"""No words on music, words on short speech: real clips through the Whisper stage with real
Whisper base weights (``.build/whisper-base.pt``, see ``extract.models.whisper.base_weights_path``).

Speech: Debian ``pocketsphinx-testdata`` (``goforward.raw``: "go forward ten meters", 1.8 s of
speech in 5 s) and more of its clips; music: Debian ``drascula-music`` 4 s excerpts on which
Whisper's own gating wrote words (``bench/bench_music_speech.py`` measured them). Both are
installed by ``make sounds-media``; without them or the weights the test skips.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from extract.config import Config
from extract.media.audio import AUDIO_RATE
from extract.tools.whisper_eval import base_weights_path
from extract.rows import batch_to_rows, rows_to_batch
from media import read_audio

SPEECH = Path("/usr/share/pocketsphinx/test/data")
MUSIC = Path("/usr/share/scummvm/drascula/audio")
SPEECH_CLIPS = {"goforward.raw": ("go", "forward", "meters"),  # Whisper writes "10"
                "numbers.raw": (), "something.raw": (),
                "cards/001.wav": ()}
# (track, start as a fraction of the track): 4 s excerpts where Whisper's gating alone wrote words
MUSIC_CLIPS = ((1, 0.3), (29, 0.3), (29, 0.7))




@pytest.mark.slow
def test_music_gets_no_words_and_short_speech_keeps_them():
    weights = base_weights_path()
    if not weights.is_file():
        pytest.skip(f"real Whisper base weights not found at {weights} (extract.models.whisper.base_weights_path)")
    if not (SPEECH / "goforward.raw").is_file() or not (MUSIC / "track1.ogg").is_file():
        pytest.skip("real music/speech not installed: `make sounds-media`")
    from extract.stages.transcribe import TranscribeStage

    clips = {name: read_audio(SPEECH / name) for name in SPEECH_CLIPS}
    for track, fraction in MUSIC_CLIPS:
        audio = read_audio(MUSIC / f"track{track}.ogg")
        start = int(max(0, len(audio) - 4 * AUDIO_RATE) * fraction)
        clips[f"track{track}@{fraction}"] = audio[start:start + 4 * AUDIO_RATE]
    config = Config().replace(**{"models.whisper.name": str(weights), "runtime.device": "cpu",
                                 "models.clip.pretrained": None})
    rows = [{"video_id": name, "has_audio": True, "audio": audio, "error_stage": None} for name, audio in clips.items()]
    done = {row["video_id"]: row for row in batch_to_rows(TranscribeStage(config)(rows_to_batch(rows)))}
    for name, words in SPEECH_CLIPS.items():
        text = done[name]["transcript_text"].lower()
        assert text and done[name]["audio_kind"] == "speech", (name, done[name])
        assert all(word in text for word in words), (name, text)
    for track, fraction in MUSIC_CLIPS:
        row = done[f"track{track}@{fraction}"]
        assert row["transcript_text"] == "" and row["audio_kind"] != "speech", row
