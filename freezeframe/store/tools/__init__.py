"""The store's tools, apart from its core (format, shards, markers, index, readers, writers): verify, publish,
convert, remove, and the exports (per-video .npy files, the memmap training layout)."""
