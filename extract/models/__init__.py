"""Model loading and inference engines (CLIP, Whisper), checkpoints; nothing here imports a stage."""
