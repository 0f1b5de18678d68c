"""Model loading and inference engines (CLIP, Whisper), tiny test models, checkpoints; nothing here imports a stage."""
