"""Small helpers with no place in the network, data or training layers."""

from lesionseg.utils.archives import UnsafeArchiveError, safe_extract

__all__ = ["UnsafeArchiveError", "safe_extract"]
