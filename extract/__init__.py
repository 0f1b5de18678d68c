"""Multimodal video feature extraction: CLIP frames, Whisper transcripts, hashtag features -> Parquet."""

__version__ = "0.1.0"
