"""Clarion: self-hostable multi-channel marketing campaigns."""

__version__ = "0.1.0"
