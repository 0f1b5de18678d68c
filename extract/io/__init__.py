"""Input and output below every layer: file systems for local paths and object stores, fetching, listings."""
