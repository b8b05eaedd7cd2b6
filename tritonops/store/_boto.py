"""boto3 clients for a region's bucket, configured the same way everywhere.

Path-style addressing for S3-compatible endpoints, and checksums only when required: boto3's
newer default (a CRC32 trailer on every upload) is refused or mangled by several S3-compatible
stores, rclone and older MinIO among them.
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.session
from botocore.config import Config as BotoConfig
from botocore.exceptions import ProfileNotFound

from tritonops.config import RegionConfig
from tritonops.errors import StoreError

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 5


def boto_session(region: RegionConfig) -> boto3.Session:
    bs = botocore.session.Session(profile=region.profile)
    if region.credentials_file is not None:
        bs.set_config_variable("credentials_file", str(region.credentials_file.expanduser()))
    try:
        return boto3.Session(botocore_session=bs)
    except ProfileNotFound:
        # botocore names neither the bucket nor the file it looked in.
        where = region.credentials_file or "~/.aws/credentials and ~/.aws/config"
        raise StoreError(f"{region.bucket}: profile {region.profile!r} not found in {where}") from None


def s3_client(region: RegionConfig, max_pool_connections: int = 32) -> Any:
    cfg_kwargs: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "read_timeout": READ_TIMEOUT_S,
        "retries": {"max_attempts": MAX_ATTEMPTS, "mode": "adaptive"},
        "max_pool_connections": max_pool_connections,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
    }
    if region.endpoint_url:
        cfg_kwargs["s3"] = {"addressing_style": "path"}
    session = boto_session(region)
    return session.client(
        "s3",
        endpoint_url=region.endpoint_url,
        region_name=region.s3_region or "us-east-1",
        config=BotoConfig(**cfg_kwargs),
    )
