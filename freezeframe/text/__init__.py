"""Captions and text features."""

from freezeframe.text.captions import Caption, read_captions
from freezeframe.text.encoders import TextConfig
from freezeframe.text.extract import TextReport, extract_text

__all__ = ["Caption", "TextConfig", "TextReport", "extract_text", "read_captions"]
