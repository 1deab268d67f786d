"""The offline stage: videos + manifest → sharded HDF5 feature cache."""

from extract.cache import Cache, open_cache

__all__ = ["Cache", "open_cache"]
