"""Voice activity with silero-vad, and what it says about a video's audio.

``VoiceActivity`` loads the silero-vad model shipped in the ``silero-vad`` wheel once and finds
the speech spans of 16 kHz mono audio. It runs silero's *sequence* ONNX export
(``load_silero_vad(sequence=True)`` with ``get_speech_timestamps_sequence``): the same
per-frame probabilities as the streaming model (bit-exact, per silero's docs), but one ONNX
call per ~16 s block instead of one per 32 ms frame. CPU seconds per minute of speech on one
thread here: 0.076 this way, 0.18 with the streaming ONNX model, 0.51 with the TorchScript one
(same spans from all three); Whisper base's ``whisper.transcribe`` of the same minute took
10.7, so VAD adds ~0.7 %.

``classify_audio`` is pure: it names a clip's audio ``speech``, ``music``, ``sound`` or
``silence`` from its level, its speech spans and, for audible audio without speech, the signal
rule of ``extract.media.musicality`` (``non_speech_kind``). ``windows_with_speech`` says which Whisper
windows hold speech, so the decoder can skip the others.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from extract.media.audio import AUDIO_RATE
from extract.media.musicality import sounds_like_music
from extract.media.windows import SILENCE_FRAME_S, frame_mean_square, loudest_rms

AUDIO_KINDS = ("speech", "music", "sound", "silence", "none")  # "none": the video has no audio track


@dataclass(frozen=True)
class VadOptions:
    """How silero-vad turns per-frame speech probabilities into spans (``get_speech_timestamps``)."""

    threshold: float = 0.5  # frames with speech probability at or above start/continue speech
    min_speech_s: float = 0.25  # shorter speech spans are dropped, seconds
    min_silence_s: float = 0.1  # a span ends after this much non-speech, seconds
    speech_pad_s: float = 0.03  # each span is widened by this much on both sides, seconds

    def __post_init__(self) -> None:
        self._verify()

    def _verify(self) -> None:
        """Raise ValueError naming the key of the first setting silero-vad cannot use."""
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"whisper.vad_threshold: must be in (0, 1), got {self.threshold}")
        for key in ("min_speech_s", "min_silence_s", "speech_pad_s"):
            value = getattr(self, key)
            if not (np.isfinite(value) and value >= 0.0):
                raise ValueError(f"whisper.vad_{key}: must be a finite number of seconds >= 0, got {value}")


@dataclass(frozen=True)
class AudioActivity:
    """What a clip's audio holds: ``kind`` (one of ``AUDIO_KINDS``), ``speech_s`` (seconds of
    detected speech) and ``speech_ratio`` (``speech_s`` over the audio's duration, in [0, 1])."""

    kind: str
    speech_s: float
    speech_ratio: float


NO_AUDIO = AudioActivity("none", 0.0, 0.0)


class VoiceActivity:
    """silero-vad loaded once; ``speech_spans(audio)`` finds the speech in 16 kHz mono audio.

    ``VoiceActivity(VadOptions(threshold=0.5))``. The model runs on the CPU through
    onnxruntime with one thread (silero's own session settings); it is small enough that a GPU
    would not pay for the copy.
    """

    def __init__(self, options: VadOptions | None = None):
        self.options = options or VadOptions()
        self._model = _load_sequence_model()

    def speech_spans(self, audio: np.ndarray) -> list[tuple[float, float]]:
        """Speech spans of ``audio`` ``(m,) float32`` at 16 kHz in [-1, 1]: ``[(start_s, end_s), ...]``,
        seconds from the first sample, ordered and disjoint; ``[]`` for empty audio."""
        from silero_vad import get_speech_timestamps_sequence

        audio = _as_mono(audio)
        if audio.size == 0:
            return []
        o = self.options
        # Sample offsets, not return_seconds: silero rounds seconds to 0.1 s.
        spans = get_speech_timestamps_sequence(
            audio, self._model, threshold=o.threshold, sampling_rate=AUDIO_RATE,
            min_speech_duration_ms=round(o.min_speech_s * 1000),
            min_silence_duration_ms=round(o.min_silence_s * 1000),
            speech_pad_ms=round(o.speech_pad_s * 1000))
        return [(span["start"] / AUDIO_RATE, span["end"] / AUDIO_RATE) for span in spans]


def _load_sequence_model() -> Any:
    """silero-vad's sequence ONNX model from its wheel, leaving torch's thread count as it was."""
    import torch

    threads = torch.get_num_threads()
    try:
        # silero_vad.model calls torch.set_num_threads(1) when first imported, which would slow
        # a Whisper or CLIP model sharing this process: put the caller's setting back.
        import silero_vad
    finally:
        torch.set_num_threads(threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "This model support only 16000 sampling rate!": we give 16 kHz
        return silero_vad.load_silero_vad(sequence=True)


def _as_mono(audio: np.ndarray) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio: expected (m,) float32 16 kHz mono, got shape {audio.shape}")
    if not np.isfinite(audio).all():
        raise ValueError("audio: holds NaN or infinite samples")
    return audio


def speech_seconds(spans: Sequence[tuple[float, float]], duration_s: float) -> float:
    """Total length of ``spans`` (disjoint ``(start_s, end_s)``) inside ``[0, duration_s]``, seconds."""
    return float(sum(max(0.0, min(end, duration_s) - max(start, 0.0)) for start, end in spans))


def classify_audio(audio: np.ndarray, spans: Sequence[tuple[float, float]], silence_rms: float = 0.003,
                   min_speech_s: float = 0.5, min_speech_share: float = 0.25,
                   rate: int = AUDIO_RATE) -> AudioActivity:
    """Name the audio ``(m,) float32`` (in [-1, 1] at ``rate`` Hz) from its level and its speech ``spans``.

    - ``silence``: no ``SILENCE_FRAME_S`` (100 ms) stretch has an RMS at or above ``silence_rms``
      (0.003 is about -50 dBFS; the rule Whisper's windows use, ``extract.media.windows.is_silent``);
      silent audio has no speech (``speech_s`` 0) whatever the VAD said.
    - ``speech``: at least ``min_speech_s`` seconds of speech, making up at least
      ``min_speech_share`` of the audible time (the 100 ms stretches at or above ``silence_rms``),
      so a song with a two-second spoken intro stays music.
    - ``music`` / ``sound``: audible, but not speech by the rule above; which of the two is
      ``non_speech_kind``'s.
    - ``none``: empty audio (no track).
    ``speech_ratio`` is ``speech_s`` over the whole duration.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return NO_AUDIO
    duration_s = audio.size / rate
    if loudest_rms(audio, rate) < silence_rms:
        return AudioActivity("silence", 0.0, 0.0)
    speech_s = speech_seconds(spans, duration_s)
    frame = max(1, int(round(SILENCE_FRAME_S * rate)))
    audible_s = float((frame_mean_square(audio, frame) >= silence_rms ** 2).sum()) * frame / rate
    is_speech = speech_s >= min_speech_s and speech_s >= min_speech_share * min(audible_s, duration_s)
    kind = "speech" if is_speech else non_speech_kind(audio, silence_rms, rate)
    return AudioActivity(kind, speech_s, min(1.0, speech_s / duration_s))


def non_speech_kind(audio: np.ndarray, silence_rms: float = 0.003, rate: int = AUDIO_RATE) -> str:
    """``music`` or ``sound`` for audible audio ``(m,) float32`` without speech
    (``extract.media.musicality.sounds_like_music``: beat, spectral flatness, pitch classes)."""
    return "music" if sounds_like_music(audio, silence_rms, rate) else "sound"


def windows_with_speech(spans: Sequence[tuple[float, float]], windows: Sequence[tuple[float, float]],
                        min_overlap_s: float = 0.1) -> np.ndarray:
    """Which ``windows`` (``(start_s, end_s)`` each, e.g. Whisper's 30 s windows) hold speech:
    ``(n_windows,) bool``, True where the speech ``spans`` cover more than ``min_overlap_s``
    seconds of the window. The overlap floor keeps a span's padding (or the tail of a word
    cut by the window boundary) from sending a window without speech to the decoder."""
    bounds = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    if not len(spans):
        return np.zeros(len(bounds), dtype=bool)
    s = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    overlap = np.clip(np.minimum(bounds[:, None, 1], s[None, :, 1]) - np.maximum(bounds[:, None, 0], s[None, :, 0]),
                      0.0, None).sum(axis=1)
    return overlap > min_overlap_s
