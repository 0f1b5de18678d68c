"""Audio embeddings pooled from Whisper's encoder output over the frames of real audio.

The property checks run on the seeded tiny random Whisper (``make_tiny_whisper``, built with
whisper's own classes) and on plain arrays; the similarity check needs the real Whisper base
checkpoint (``base_weights_path()``, marker ``weights``) and is skipped without it.
"""

from __future__ import annotations

import numpy as np
import pytest

from extract.media.audio import AUDIO_RATE
from extract.media.music import melody
from extract.models.audio_embedding import audio_embedding, pooled_embedding, real_audio_frames, window_frame_sums
from extract.tools.tiny import make_tiny_whisper
from extract.tools.whisper_eval import base_weights_path

TUNE_A = [60, 62, 64, 65, 67, 65, 64, 62, 60, 64, 67, 72, 67, 64, 60, 55]
TUNE_B = [69, 69, 76, 76, 78, 78, 76, 74, 74, 73, 73, 71, 71, 69, 64, 64]
TUNE_C = [48, 55, 52, 55, 50, 57, 53, 57, 48, 55, 52, 55, 47, 55, 50, 55]


def encode(model, clips: list[np.ndarray]):
    """Whisper's encoder output ``(n, 1500, d_model)`` for clips of up to 30 s, each padded to
    30 s as ``whisper.transcribe`` pads it, and their lengths in seconds."""
    import torch
    import whisper

    mels = torch.stack([whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(clip)),
                                                    model.dims.n_mels) for clip in clips])
    with torch.no_grad():
        features = model.encoder(mels.to(next(model.parameters()).dtype))
    return features, [len(clip) / AUDIO_RATE for clip in clips]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import whisper

    return whisper.load_model(make_tiny_whisper(tmp_path_factory.mktemp("whisper")), device="cpu")


def test_tiny_encoder_pools_the_real_frames(tiny):
    clip = melody(TUNE_A, seed=1)[0][: 5 * AUDIO_RATE]
    features, seconds = encode(tiny, [clip])
    assert features.shape == (1, 1500, tiny.dims.n_audio_state)
    got = audio_embedding(features, seconds)
    assert got.dtype == np.float32 and got.shape == (tiny.dims.n_audio_state,)
    assert np.isfinite(got).all() and abs(np.linalg.norm(got) - 1.0) < 1e-5
    reference = features[0, :250].double().mean(dim=0).numpy()  # 5 s = 250 frames of 20 ms
    np.testing.assert_allclose(got, reference / np.linalg.norm(reference), atol=1e-6)
    # The padding frames do not count: garbage there changes nothing.
    spoiled = features.clone()
    spoiled[:, 250:] = float("nan")
    np.testing.assert_array_equal(audio_embedding(spoiled, seconds), got)
    # All 1500 frames would give another vector.
    assert float(audio_embedding(features, [30.0]) @ got) < 1 - 1e-4


def test_windows_weigh_by_their_frames(tiny):
    song = melody(TUNE_A * 5, seed=2)[0]  # ~25 s
    first, second = song[: 20 * AUDIO_RATE], song[20 * AUDIO_RATE:]
    features, seconds = encode(tiny, [first, second])
    got = audio_embedding(features, seconds)
    frames = real_audio_frames(seconds)
    stacked = np.concatenate([features[0, : frames[0]].double().numpy(), features[1, : frames[1]].double().numpy()])
    mean = stacked.mean(axis=0)
    np.testing.assert_allclose(got, mean / np.linalg.norm(mean), atol=1e-6)
    # Sums per batch combine per video: pooling window by window equals pooling both at once.
    a, b = window_frame_sums(features[:1], seconds[:1]), window_frame_sums(features[1:], seconds[1:])
    np.testing.assert_allclose(pooled_embedding(np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])),
                               got, atol=1e-7)


def test_torch_numpy_and_float16_agree(tiny):
    import torch

    features, seconds = encode(tiny, [melody(TUNE_B, seed=3)[0]])
    from_torch = audio_embedding(features, seconds)
    np.testing.assert_allclose(audio_embedding(features.numpy(), seconds), from_torch, atol=1e-7)
    half = audio_embedding(features.to(torch.float16), seconds)
    assert half.dtype == np.float32
    np.testing.assert_allclose(half, from_torch, atol=2e-3)


def test_no_audio_and_non_finite_frames():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 1500, 8)).astype(np.float32)
    assert audio_embedding(features, [0.0, 0.0]) is None
    assert audio_embedding(np.zeros((0, 1500, 8), np.float32), []) is None
    assert audio_embedding(np.zeros((1, 1500, 8), np.float32), [3.0]) is None  # a zero mean has no direction
    broken = features.copy()
    broken[0, 10] = np.inf
    broken[1, :] = np.nan
    got = audio_embedding(broken, [1.0, 2.0])  # 50 frames of window 0, one of them dropped
    expected = np.delete(features[0, :50], 10, axis=0).mean(axis=0)
    np.testing.assert_allclose(got, expected / np.linalg.norm(expected), rtol=1e-5)
    assert audio_embedding(np.full((1, 1500, 8), np.nan, np.float32), [5.0]) is None
    with pytest.raises(ValueError, match="real_s"):
        audio_embedding(features, [1.0])
    with pytest.raises(ValueError, match="skip_s"):
        window_frame_sums(features, [1.0, 1.0], skip_s=[0.0])


def test_skip_leaves_out_audio_pooled_before():
    """A window resumed 2 s early pools only its frames after those 2 s (100 frames)."""
    features = np.random.default_rng(1).normal(size=(2, 1500, 8)).astype(np.float32)
    sums, counts = window_frame_sums(features, [30.0, 10.0], skip_s=[0.0, 2.0])
    assert counts.tolist() == [1500, 400]
    np.testing.assert_allclose(sums[1], features[1, 100:500].sum(axis=0, dtype=np.float64), rtol=1e-9)
    expected = np.concatenate([features[0], features[1, 100:500]]).astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(pooled_embedding(sums, counts), expected / np.linalg.norm(expected), rtol=1e-5)


def test_real_audio_frames():
    assert real_audio_frames([5.0, 30.0, 31.0, 0.01, 0.0, 0.02, 29.99]).tolist() == [250, 1500, 1500, 1, 0, 1, 1500]
    assert real_audio_frames([10.0], n_audio_ctx=100).tolist() == [100]
    with pytest.raises(ValueError, match="finite"):
        real_audio_frames([float("nan")])


# Minutes-scale tier like the other real-weights checks (~10-20 s here): `make test` runs it, `make check` does not.
@pytest.mark.weights
@pytest.mark.slow
def test_same_melody_embeds_closer_than_another_with_base_weights():
    """Re-renderings of one melody (another timbre, 5 % tempo jitter and another gain; or tempo
    jitter with noise at -50 dB) embed nearer to the first rendering than two other melodies do,
    and nearer to it than to those melodies.

    Measured here (cosines): brass/jitter/gain 0.986 and jitter/noise 0.996 to the original,
    against 0.968 and 0.968 between the original and the other melodies. White noise at -40 dB
    or louder pulls an embedding towards other noisy audio (0.970 to the original), so the
    noisy rendering here is a faint one.
    """
    import torch
    import whisper

    path = base_weights_path()
    if not path.is_file():
        pytest.skip(f"real Whisper base weights not found at {path}: set EXTRACT_WHISPER_BASE or build them "
                    "with ../shared/tools/whisper_base_weights.py (see extract.tools.whisper_eval.base_weights_path)")
    torch.manual_seed(0)
    model = whisper.load_model(str(path), device="cpu")
    clips = {"a": melody(TUNE_A, seed=1)[0],
             "a_brass": melody(TUNE_A, timbre="brass", tempo_jitter=0.05, amplitude=0.15, seed=2)[0],
             "a_noisy": melody(TUNE_A, tempo_jitter=0.05, noise_db=-50, seed=5)[0],
             "b": melody(TUNE_B, seed=3)[0],
             "c": melody(TUNE_C, beat_s=0.4, seed=4)[0]}
    features, seconds = encode(model, list(clips.values()))
    emb = {name: audio_embedding(features[i:i + 1], seconds[i:i + 1]) for i, name in enumerate(clips)}
    for again in ("a_brass", "a_noisy"):
        same = float(emb["a"] @ emb[again])
        for other in ("b", "c"):
            assert same > float(emb["a"] @ emb[other]), (again, other, same, float(emb["a"] @ emb[other]))
            assert same > float(emb[again] @ emb[other]), (again, other, same, float(emb[again] @ emb[other]))


@pytest.mark.gpu
def test_pooled_on_the_gpu_equals_the_cpu(tiny):
    """The masked sums run where the encoder output is: CUDA sums equal the CPU's."""
    features, seconds = encode(tiny, [melody(TUNE_B, seed=5)[0], melody(TUNE_C, seed=6)[0][: 3 * AUDIO_RATE]])
    on_cpu = window_frame_sums(features, seconds, [0.0, 1.0])
    on_gpu = window_frame_sums(features.cuda().half(), seconds, [0.0, 1.0])
    np.testing.assert_array_equal(on_gpu[1], on_cpu[1])
    np.testing.assert_allclose(on_gpu[0], window_frame_sums(features.half(), seconds, [0.0, 1.0])[0], rtol=1e-9)
