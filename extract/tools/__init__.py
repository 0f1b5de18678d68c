"""Tooling outside the production path: sample clips, tiny test models, staging real weights, evaluation helpers."""
