"""Small helpers with no place in the network, data or training layers."""

from lesionseg.utils.archives import UnsafeArchiveError, safe_extract
from lesionseg.utils.clock import RunningClock
from lesionseg.utils.files import describe_os_error, replacing, write_text_atomically

__all__ = [
    "RunningClock",
    "UnsafeArchiveError",
    "describe_os_error",
    "replacing",
    "safe_extract",
    "write_text_atomically",
]
