"""Object stores (S3, file://) and the sync engine that publishes a repository to them.

Every reader and writer of a bucket goes through :class:`ObjectStore` from :func:`open_store`;
only ``store/s3.py`` talks to S3 itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from tritonops.store.base import DEFAULT_WORKERS, ObjectInfo, ObjectStore, check_key

if TYPE_CHECKING:
    from tritonops.config import RegionConfig

__all__ = ["DEFAULT_WORKERS", "ObjectInfo", "ObjectStore", "check_key", "open_store"]


def open_store(region: RegionConfig, region_name: str = "", max_workers: int = DEFAULT_WORKERS) -> ObjectStore:
    """The store for a region's ``bucket`` URL: ``s3://bucket/prefix`` or ``file:///path``."""
    u = urlparse(region.bucket)
    if u.scheme == "file":
        from tritonops.store.local import FileStore

        return FileStore(Path(u.path), region_name)
    from tritonops.store.s3 import S3Store

    return S3Store(region, region_name=region_name, max_workers=max_workers)
