"""Extraction: sources, decoding and frame sampling, frozen backbones, and the extraction runner."""

from freezeframe.extract.augment import AugmentConfig
from freezeframe.extract.backbones import CLIP_FEATURES, ClipBackbone, ClipConfig
from freezeframe.extract.decode import VideoReadError, iter_chunks, open_video
from freezeframe.extract.preprocess import ExactPreprocessor, PreprocessConfig, fast_preprocess
from freezeframe.extract.runner import ExtractConfig, ExtractionReport, run_extraction
from freezeframe.extract.sampling import SamplingConfig, sample_indices
from freezeframe.extract.sources import VideoSource, collect_sources

__all__ = [
    "AugmentConfig", "CLIP_FEATURES", "ClipBackbone", "ClipConfig", "ExactPreprocessor", "ExtractConfig",
    "ExtractionReport", "PreprocessConfig", "SamplingConfig", "VideoReadError", "VideoSource", "collect_sources",
    "fast_preprocess", "iter_chunks", "open_video", "run_extraction", "sample_indices",
]
