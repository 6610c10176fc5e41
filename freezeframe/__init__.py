"""freezeframe: run frozen video and text backbones once, cache multi-layer features, train light heads."""

from freezeframe.errors import BackboneError, FreezeframeError, InputError, StoreError
from freezeframe.store import FeatureSet, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "BackboneError",
    "FeatureSet",
    "FreezeframeError",
    "InputError",
    "Store",
    "StoreError",
    "__version__",
    "open_store",
]
