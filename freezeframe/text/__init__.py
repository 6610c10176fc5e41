"""Captions and text features."""

from freezeframe.text.captions import Caption, read_captions

__all__ = ["Caption", "read_captions"]
