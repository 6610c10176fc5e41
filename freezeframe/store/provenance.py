"""Provenance: how every number in a feature set was made, and which parts must match to append."""

from __future__ import annotations

import hashlib
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from freezeframe.errors import StoreError

# Keys that describe the run rather than the numbers: they may differ between appends.
VOLATILE_KEYS = ("created", "software")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def software_versions(*packages: str) -> dict[str, str | None]:
    names = ("freezeframe", "numpy", "zarr", *packages)
    return {"python": platform.python_version(), **{name: package_version(name) for name in names}}


def file_sha256(path: str | Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


def provenance_sha256(provenance: dict) -> str:
    """sha256 of a provenance dict in canonical JSON: recorded in every commit marker, so `verify` sees an edit."""
    import json

    text = json.dumps(provenance, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stamp(provenance: dict, *packages: str) -> dict:
    """Add the volatile part (time, software versions) to a provenance dict."""
    return {**provenance, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "software": software_versions(*packages), "platform": sys.platform}


# Keys older sets recorded that repeat another one: `frames_per_view` is `sampling.frames_per_clip`.
REDUNDANT_KEYS = ("frames_per_view",)


def identity(provenance: dict) -> dict:
    return {k: v for k, v in provenance.items() if k not in (*VOLATILE_KEYS, *REDUNDANT_KEYS, "platform")}


def differences(stored: dict, new: dict, prefix: str = "") -> list[str]:
    """Human-readable list of keys whose values differ between two provenance dicts."""
    out = []
    for key in sorted(set(stored) | set(new)):
        a, b = stored.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: store has {a!r}, this run has {b!r}")
    return out


def refuse_append(name: str, store: object, diffs: list[str]) -> None:
    """The one-line refusal to append to feature set `name` of `store` when its recipe differs (`diffs`)."""
    if diffs:
        raise StoreError(f"feature set {name!r} in {store} was made differently, so this run cannot append to it "
                         f"({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}); pass --name to start a new "
                         "feature set.")
