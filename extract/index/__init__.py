"""The near-duplicate index over committed videos: LSH bands of frame hashes, joins against the history."""
