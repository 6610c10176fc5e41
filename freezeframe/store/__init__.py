"""Feature stores: one schema over Zarr (and later HDF5) shards, committed atomically, read by video id."""

from freezeframe.store.feature_set import FeatureSet
from freezeframe.store.tools.publish import publish_store
from freezeframe.store.shard import ShardWriter
from freezeframe.store.store import Store, open_store
from freezeframe.store.tools.verify import VerifyReport, verify_store
from freezeframe.store.writer import FeatureSetWriter
from freezeframe.store.tools.xarray_view import to_xarray

__all__ = ["FeatureSet", "FeatureSetWriter", "ShardWriter", "Store", "VerifyReport", "open_store", "publish_store",
           "to_xarray", "verify_store"]
