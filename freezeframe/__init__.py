"""freezeframe: run frozen video and text backbones once, cache multi-layer features, train light heads.

One entry point per stage (`create_backbone`, `extract_features`, `train_head`, `open_store`, `list_backbones`,
`list_heads`); each is imported on first use, so `import freezeframe` loads neither torch nor zarr."""

from __future__ import annotations

import importlib
from typing import Any

from freezeframe.errors import BackboneError, FreezeframeError, InputError, StoreError

__version__ = "0.1.0"

# public name -> the module that defines it (imported when the name is first used)
_LAZY = {
    "FeatureSet": "freezeframe.store", "Store": "freezeframe.store", "open_store": "freezeframe.store",
    "create_backbone": "freezeframe.api", "list_backbones": "freezeframe.api", "extract_features": "freezeframe.api",
    "train_head": "freezeframe.api", "list_heads": "freezeframe.api",
}

__all__ = ["BackboneError", "FreezeframeError", "InputError", "StoreError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'freezeframe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
