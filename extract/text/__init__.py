"""Captions, hashtags and the text features computed from them."""
