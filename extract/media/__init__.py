"""Untrusted media: probing, sampling, frame geometry, video and audio decoding, isolated decode processes."""
