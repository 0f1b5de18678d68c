"""Music or other sound, from the signal alone (``extract.media.musicality``), on labelled real
audio (``bench.labelled_audio``: two game scores, recorded sound effects, real speech; ``make
sounds-media`` installs them, else these tests skip). No Whisper weights: the audio kind up to
the point where Whisper's words come in (``classify_audio`` with the real silero-vad).
``bench/bench_music_speech.py`` measures the whole labelled set; this is a cheaper slice of it.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.labelled_audio import labelled_clips
from extract.media.musicality import MusicFeatures, is_music, music_blocks, music_features, sounds_like_music
from extract.models.vad import VoiceActivity, classify_audio

SILENCE_RMS = 0.003  # whisper.silence_rms's default


@pytest.fixture(scope="module")
def clips():
    try:
        return labelled_clips(tracks=3)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def _share(members, want_music: bool) -> float:
    return float(np.mean([sounds_like_music(c.audio, SILENCE_RMS) == want_music for c in members]))


def test_rule_tells_music_from_sound_on_real_audio(clips):
    """Both scores are mostly music and the recorded sounds mostly not, on the clips the rule was
    fitted on and on those held out (asc-music, the odd-numbered OpenSFX sounds) alike."""
    for held_out in (False, True):
        music = [c for c in clips if c.label == "music" and c.held_out == held_out]
        sound = [c for c in clips if c.label == "sound" and c.held_out == held_out]
        assert len(music) >= 6 and len(sound) >= 20, (len(music), len(sound))
        assert _share(music, True) >= 0.8, [(c.name, music_features(c.audio)) for c in music]
        assert _share(sound, False) >= 0.85, [(c.name, music_features(c.audio)) for c in sound]
    for source in ("drascula-music", "asc-music"):
        assert _share([c for c in clips if c.source == source], True) >= 0.6, source


def test_features_part_music_from_sound(clips):
    """Each feature on its own points the right way: music keeps a beat, is tonal and visits
    more pitch classes than the recorded sounds (medians over the labelled clips)."""
    features = {label: [music_features(c.audio) for c in clips if c.label == label] for label in ("music", "sound")}
    median = {label: {k: float(np.median([getattr(f, k) for f in fs])) for k in ("beat", "flatness", "pitch_classes")}
              for label, fs in features.items()}
    assert median["music"]["beat"] > median["sound"]["beat"], median
    assert median["music"]["flatness"] < median["sound"]["flatness"], median
    assert median["music"]["pitch_classes"] > median["sound"]["pitch_classes"], median
    for fs in features.values():
        assert all(-1.0 <= f.beat <= 1.0 and 0.0 <= f.flatness <= 1.0 and 0 <= f.pitch_classes <= 12 for f in fs)


def test_rule_thresholds():
    assert is_music(MusicFeatures(beat=0.6, flatness=0.5, pitch_classes=0))
    assert is_music(MusicFeatures(beat=0.0, flatness=0.01, pitch_classes=8))
    assert not is_music(MusicFeatures(beat=0.1, flatness=0.01, pitch_classes=2))
    assert not is_music(MusicFeatures(beat=0.1, flatness=0.2, pitch_classes=9))


def test_blocks_cover_long_audio_sparsely():
    audio = np.zeros(16_000 * 60, np.float32)
    blocks = music_blocks(audio)
    assert len(blocks) == 5 and all(len(b) == 64_000 for b in blocks)
    assert [len(b) for b in music_blocks(audio[:16_000])] == [16_000]
    assert not sounds_like_music(audio, SILENCE_RMS)  # no audible block: no vote for music


def test_audio_kinds_of_real_clips_without_whisper(clips):
    """``classify_audio`` with the real silero-vad: real short speech is speech, score excerpts
    music, recorded sound effects sound, the quiet ones silence (Whisper's words are the
    weights tier's: tests/test_music_speech.py)."""
    vad = VoiceActivity()
    kinds = {c.name: classify_audio(c.audio, vad.speech_spans(c.audio), SILENCE_RMS).kind for c in clips}
    for label, want, floor in (("speech", "speech", 1.0), ("music", "music", 0.8), ("sound", "sound", 0.85),
                               ("silence", "silence", 1.0)):
        members = [c.name for c in clips if c.label == label]
        got = [kinds[name] for name in members]
        assert members and got.count(want) >= floor * len(members), (label, dict(zip(members, got)))
