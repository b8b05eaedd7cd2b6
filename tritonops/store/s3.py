"""The S3 store on botocore: any S3-compatible endpoint (AWS, GCS interop, MinIO, rclone, moto).

Every file is hashed once, as it is sent, and the object carries the sha256 of the bytes sent as
metadata (``x-amz-meta-sha256``, what ``sync --verify`` compares). Three paths by size:

* up to ``IN_MEMORY_BYTES``: read into memory, hashed, sent in one PUT with Content-MD5 (the server
  rejects a corrupted body);
* up to ``MULTIPART_THRESHOLD_BYTES`` (rclone's default upload cutoff): one PUT streamed from the
  file, hashed as it is read; the last chunk is held back until the hash is known, so a file that
  differs from its manifest is never completed (the request is dropped before its last byte). One
  request instead of a multipart upload saves the server a reassembly of the whole object, and many
  files in flight keep the connections busy as parts would;
* larger: a multipart upload whose parts are sent in parallel while a separate thread hashes the
  file; it is completed only if the hash matches.

Bodies held in memory (whole small files, multipart parts) count against one budget for the store,
``BODY_BUDGET_BYTES``: many transfers in flight keep a far bucket busy, and the budget, not the
number of transfers, bounds the memory they take.

Payloads are not signed: SigV4 over plain HTTP would otherwise hash every body once more.

Clients use path-style addressing for S3-compatible endpoints, and checksums only when required:
boto3's newer default (a CRC32 trailer on every upload) is refused or mangled by several
S3-compatible stores, rclone and older MinIO among them. This is the only module that talks to botocore.

Time bounds: botocore's own retries (standard mode: throttling, 5xx, connection errors and
timeouts, with capped exponential backoff) are the only retries; nothing loops around them. So
every request (a GET, HEAD, LIST page, PUT, multipart part or completion, DELETE batch) ends within
one documented deadline, :func:`request_deadline_s` (148 s with the defaults), even against a
server that accepts connections and never answers. A failed multipart upload is aborted and the
sync fails; the next sync re-sends only what the bucket does not hold yet.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import botocore.exceptions
import botocore.handlers
import botocore.session
import botocore.utils
from botocore.config import Config as BotoConfig

from tritonops.config import Config, RegionConfig
from tritonops.errors import ConfigError, StoreError
from tritonops.fileio import HASH_CHUNK_BYTES, sha256_file
from tritonops.store.base import (
    DEFAULT_WORKERS,
    ConditionalWritesUnsupported,
    ObjectInfo,
    PreconditionFailed,
    ProgressFn,
    Versioned,
    check_key,
)
from tritonops.store.bodies import ByteBudget, Mismatch, VerifyingReader

log = logging.getLogger(__name__)

IN_MEMORY_BYTES = 8 << 20
MULTIPART_THRESHOLD_BYTES = 200 << 20
PART_BYTES = 16 << 20  # >= 5 MiB, the S3 minimum for every part but the last
BODY_BUDGET_BYTES = 256 << 20  # request bodies in memory, all transfers of a store together
SHA256_META = "sha256"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0  # per socket read: a slow but live server keeps a long transfer going
MAX_ATTEMPTS = 3  # botocore's total_max_attempts: the first try and two retries
MAX_BACKOFF_S = 20.0  # botocore's cap on one retry's backoff (standard mode)
EXPECT_CONTINUE_S = 1.0  # botocore waits this long for "100 Continue" before sending a PUT body

T = TypeVar("T")


def request_deadline_s(
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> float:
    """The longest one request can take against a server that never answers: every attempt runs
    into its connect timeout, botocore's wait for "100 Continue" and its read timeout, and every
    retry waits at most botocore's backoff cap."""
    per_attempt = connect_timeout_s + EXPECT_CONTINUE_S + read_timeout_s
    return max_attempts * per_attempt + (max_attempts - 1) * MAX_BACKOFF_S


_LOADER: list[Any] = []  # botocore's data loader, shared by every session of the process


def _data_loader() -> Any:
    """One loader for the process: it caches the S3 model and endpoint rules it reads (JSON that takes
    ~0.15 s to parse), so a second client, for another region or store, does not read them again."""
    if not _LOADER:
        import botocore.loaders

        _LOADER.append(botocore.loaders.create_loader())
    return _LOADER[0]


def _boto_session(region: RegionConfig) -> botocore.session.Session:
    """A botocore session (boto3's own adds nothing used here, and its import, s3transfer included,
    costs a tenth of a second of every command's start-up)."""
    bs = botocore.session.Session(profile=region.profile)
    bs.register_component("data_loader", _data_loader())
    if region.credentials_file is not None:
        bs.set_config_variable("credentials_file", str(region.credentials_file.expanduser()))
    try:
        bs.get_scoped_config()  # an unknown profile fails here, not at the first request
        return bs
    except botocore.exceptions.ProfileNotFound:
        # botocore names neither the bucket nor the file it looked in.
        where = region.credentials_file or "~/.aws/credentials and ~/.aws/config"
        raise StoreError(f"{region.bucket}: profile {region.profile!r} not found in {where}") from None


def s3_client(
    region: RegionConfig,
    max_pool_connections: int = 32,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    read_timeout_s: float = READ_TIMEOUT_S,
    max_attempts: int = MAX_ATTEMPTS,
) -> Any:
    """A botocore S3 client for the region's endpoint, configured as :class:`S3Store` uses it.

    The library reads and writes buckets through :class:`S3Store`; tests use this client to look
    at a bucket independently of the code under test.
    """
    cfg_kwargs: dict[str, Any] = {
        "connect_timeout": connect_timeout_s,
        "read_timeout": read_timeout_s,
        # Standard, not adaptive: adaptive adds a client-side rate limiter whose waits have no bound.
        "retries": {"total_max_attempts": max_attempts, "mode": "standard"},
        "max_pool_connections": max_pool_connections,
        "request_checksum_calculation": "when_required",
        "response_checksum_validation": "when_required",
        "parameter_validation": False,  # every call's parameters are built here, typed
    }
    # The sha256 of every body is checked by tritonops itself (and Content-MD5 by the server where
    # the body is in memory): signing the payload would hash each body once more.
    cfg_kwargs["s3"] = {"payload_signing_enabled": False}
    if region.endpoint_url:
        cfg_kwargs["s3"]["addressing_style"] = "path"
    session = _boto_session(region)
    client = session.create_client(
        "s3",
        endpoint_url=region.endpoint_url,
        region_name=region.s3_region or "us-east-1",
        config=BotoConfig(**cfg_kwargs),
    )
    # botocore asks "100 Continue" of every PUT body, which costs a round trip per object (at 50 ms,
    # 500 small files paid 25 s more than s5cmd). It saves sending a body the server would refuse:
    # worth it for large bodies only, as the Go SDK does.
    client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
    client.meta.events.register("before-call.s3", _expect_continue_for_large_bodies)
    return client


EXPECT_CONTINUE_MIN_BYTES = 2 << 20  # the Go SDK's cut-off


def _expect_continue_for_large_bodies(model: Any, params: dict[str, Any], **_: Any) -> None:
    body = params.get("body")
    if model.http.get("method") == "PUT" and hasattr(body, "read"):
        size = botocore.utils.determine_content_length(body)
        if size is None or size >= EXPECT_CONTINUE_MIN_BYTES:
            params["headers"]["Expect"] = "100-continue"


def _md5_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - integrity, not security


def _code(e: botocore.exceptions.ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class S3Store:
    """One region's bucket and prefix. Thread-safe: botocore clients may be shared between threads."""

    def __init__(
        self,
        region: RegionConfig,
        region_name: str = "",
        max_workers: int = DEFAULT_WORKERS,
        multipart_threshold_bytes: int = MULTIPART_THRESHOLD_BYTES,
        part_bytes: int = PART_BYTES,
        in_memory_bytes: int = IN_MEMORY_BYTES,
        body_budget_bytes: int = BODY_BUDGET_BYTES,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.region_name = region_name
        self.bucket = region.bucket_name
        self.prefix = region.prefix
        self.endpoint = region.endpoint_url or "AWS"
        self.multipart_threshold_bytes = multipart_threshold_bytes
        self.part_bytes = part_bytes
        self.in_memory_bytes = in_memory_bytes
        # Parts and whole files run in separate pools: a file task waiting on its parts never
        # starves the pool its parts need.
        self.deadline_s = request_deadline_s(connect_timeout_s, read_timeout_s, max_attempts)
        self._attempts = max_attempts
        self._client = s3_client(
            region, max_workers * 2 + 4, connect_timeout_s=connect_timeout_s, read_timeout_s=read_timeout_s,
            max_attempts=max_attempts,
        )  # fmt: skip
        self._part_pool = ThreadPoolExecutor(max_workers, thread_name_prefix="s3-part")
        self._bodies = ByteBudget(body_budget_bytes)
        self._hash_pool = ThreadPoolExecutor(2, thread_name_prefix="s3-hash")
        self._lock = threading.Lock()

    # -- naming and errors -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        check_key(key, self.url)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _rel(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _error(self, op: str, key: str, e: BaseException) -> StoreError:
        where = f"region {self.region_name}: " if self.region_name else ""
        target = f"{self.url}/{key}" if key else self.url
        if isinstance(e, botocore.exceptions.ClientError):
            code = _code(e)
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return StoreError(f"{where}bucket {self.bucket!r} does not exist at {self.endpoint}")
            if code in (
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "403",
                "Forbidden",
            ) or (status == 403):
                return StoreError(f"{where}access denied to {target} at {self.endpoint} ({code or status})")
            msg = e.response.get("Error", {}).get("Message", "") or str(status)
            return StoreError(f"{where}{op} {target} failed: {code} {msg}".strip())
        if isinstance(e, botocore.exceptions.NoCredentialsError):
            return StoreError(f"{where}no S3 credentials found for {self.url} (environment, profile or role)")
        if isinstance(
            e, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError)
        ):
            return StoreError(
                f"{where}cannot reach S3 endpoint {self.endpoint} for {self.url} ({self._attempts} attempts)"
            )
        if isinstance(e, (botocore.exceptions.ReadTimeoutError, botocore.exceptions.ConnectionClosedError)):
            return StoreError(
                f"{where}{op} {target}: S3 endpoint {self.endpoint} did not answer "
                f"({self._attempts} attempts; deadline {self.deadline_s:.0f} s)"
            )
        if isinstance(e, botocore.exceptions.BotoCoreError):
            return StoreError(f"{where}{op} {target} failed: {type(e).__name__}: {e}")
        if isinstance(e, OSError):
            return StoreError(f"{where}{op} {target} failed: {e.strerror or e}")
        raise e

    def _call(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """One operation; botocore retries each request inside it, nothing retries around it."""
        try:
            return fn()
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, OSError) as e:
            raise self._error(op, key, e) from None

    # -- ObjectStore ---------------------------------------------------------------------------

    def create(self) -> None:
        def go() -> None:
            try:
                self._client.head_bucket(Bucket=self.bucket)
            except botocore.exceptions.ClientError as e:
                if _code(e) not in ("404", "NoSuchBucket", "NotFound"):
                    raise
                self._client.create_bucket(Bucket=self.bucket)

        self._call("create", "", go)

    def _get_object(self, full: str) -> dict[str, Any] | None:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=full)
        except botocore.exceptions.ClientError as e:
            if _code(e) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def get(self, key: str) -> bytes | None:
        full = self._key(key)

        def go() -> bytes | None:
            r = self._get_object(full)
            return None if r is None else bytes(r["Body"].read())

        return self._call("get", key, go)

    def hash_bytes(self, key: str) -> str | None:
        full = self._key(key)

        def go() -> str | None:
            r = self._get_object(full)
            if r is None:
                return None
            h = hashlib.sha256()
            with contextlib.closing(r["Body"]) as body:
                for chunk in body.iter_chunks(HASH_CHUNK_BYTES):
                    h.update(chunk)
            return h.hexdigest()

        return self._call("get", key, go)

    def head(self, key: str) -> ObjectInfo | None:
        full = self._key(key)

        def go() -> ObjectInfo | None:
            try:
                r = self._client.head_object(Bucket=self.bucket, Key=full)
            except botocore.exceptions.ClientError as e:
                if _code(e) in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            meta = {k.lower(): v for k, v in (r.get("Metadata") or {}).items()}
            return ObjectInfo(key, int(r["ContentLength"]), meta.get(SHA256_META))

        return self._call("head", key, go)

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix

        def go() -> list[ObjectInfo]:
            out = []
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for o in page.get("Contents", []):
                    mod = o.get("LastModified")
                    out.append(
                        ObjectInfo(
                            self._rel(o["Key"]), int(o["Size"]), None, str(o.get("ETag") or "") or None,
                            mod.timestamp() if mod is not None else None,
                        )
                    )
            return sorted(out, key=lambda o: o.key)

        return self._call("list", prefix, go)

    def put_bytes(self, key: str, data: bytes, sha256: str) -> None:
        full = self._key(key)
        self._call(
            "put",
            key,
            lambda: self._client.put_object(
                Bucket=self.bucket,
                Key=full,
                Body=data,
                ContentMD5=_md5_b64(data),
                Metadata={SHA256_META: sha256},
            ),
        )

    def put_file(
        self, key: str, path: str, size: int, sha256: str, progress: ProgressFn | None = None
    ) -> str:
        if size >= self.multipart_threshold_bytes:
            return self._call("multipart upload", key, lambda: self._multipart(key, path, size, sha256, progress))
        if size > self.in_memory_bytes:
            return self._call("put", key, lambda: self._put_streamed(key, path, size, sha256, progress))
        with self._bodies.hold(size):
            with open(path, "rb") as f:
                data = f.read(size + 1)
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256 or len(data) != size:
                return digest  # the caller reports the mismatch; nothing was sent
            self.put_bytes(key, data, sha256)
            del data
        if progress:
            progress(size)
        return digest

    def _put_streamed(self, key: str, path: str, size: int, sha256: str, progress: ProgressFn | None) -> str:
        full = self._key(key)
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size != size:  # seen before a byte is sent
                return sha256_file(Path(path))
            body = VerifyingReader(f, size, sha256, progress)
            try:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=body, Metadata={SHA256_META: sha256})
            except botocore.exceptions.BotoCoreError:
                # botocore wraps what the body raised; a rewind after a mismatch fails, so no retry.
                if body.mismatch is not None:
                    return body.mismatch  # the request was dropped before its last byte: no object
                raise
        return sha256

    def _multipart(self, key: str, path: str, size: int, sha256: str, progress: ProgressFn | None) -> str:
        full = self._key(key)
        hashing = self._hash_pool.submit(sha256_file, Path(path))
        mpu = self._client.create_multipart_upload(
            Bucket=self.bucket, Key=full, Metadata={SHA256_META: sha256}
        )
        upload_id = mpu["UploadId"]
        n_parts = (size + self.part_bytes - 1) // self.part_bytes
        fd = os.open(path, os.O_RDONLY)

        def part(i: int) -> dict[str, Any]:
            offset = i * self.part_bytes
            n = min(self.part_bytes, size - offset)
            with self._bodies.hold(n):
                body = os.pread(fd, n, offset)
                r = self._client.upload_part(
                    Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=i + 1,
                    Body=body, ContentMD5=_md5_b64(body),
                )  # fmt: skip
                del body
            if progress:
                progress(n)
            return {"PartNumber": i + 1, "ETag": r["ETag"]}

        futures: list[Any] = []
        try:
            futures = [self._part_pool.submit(part, i) for i in range(n_parts)]
            parts = [f.result() for f in futures]
            digest = hashing.result()
            if digest != sha256:
                raise Mismatch(digest)
            self._client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
            return digest
        except Mismatch as m:
            self._abort(full, upload_id)
            return m.digest
        except BaseException:
            for f in futures:
                f.cancel()
            self._abort(full, upload_id)
            raise
        finally:
            os.close(fd)

    def _abort(self, full: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            log.warning("could not abort multipart upload of %s: %s", full, type(e).__name__)

    def delete(self, keys: Iterable[str]) -> None:
        full = [self._key(k) for k in keys]
        for i in range(0, len(full), 1000):
            batch = full[i : i + 1000]
            r = self._call(
                "delete",
                batch[0],
                lambda b=batch: self._client.delete_objects(  # type: ignore[misc]
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in b], "Quiet": True}
                ),
            )
            errors = r.get("Errors") or []
            if errors:
                e0 = errors[0]
                raise StoreError(
                    f"delete {self.url}/{self._rel(e0.get('Key', ''))} failed: {e0.get('Code')} "
                    f"({len(errors)} of {len(batch)} keys not deleted)"
                )

    # -- ConditionalStore: S3 conditional writes (If-None-Match: *, If-Match: <etag>) -------------

    def get_versioned(self, key: str) -> Versioned | None:
        full = self._key(key)

        def go() -> Versioned | None:
            r = self._get_object(full)
            return None if r is None else Versioned(bytes(r["Body"].read()), str(r.get("ETag") or ""))

        return self._call("get", key, go)

    def _conditional(self, op: str, key: str, fn: Callable[[], T]) -> T:
        """One conditional request: a condition that does not hold is :class:`PreconditionFailed`.
        412 is the condition; 409 (ConditionalRequestConflict) is AWS's answer to a concurrent
        conditional write of the same key; NoSuchKey answers If-Match on an object already gone."""
        try:
            return fn()
        except botocore.exceptions.ClientError as e:
            code = _code(e)
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                where = f"region {self.region_name}: " if self.region_name else ""
                msg = f"{where}{op} {self.url}/{key}: condition failed ({code or status})"
                raise PreconditionFailed(msg, key) from None
            if status == 501 or code == "NotImplemented":
                raise ConditionalWritesUnsupported(
                    f"{self.url} at {self.endpoint}: conditional writes not implemented ({code or status})", self.url
                ) from None
            raise self._error(op, key, e) from None
        except (botocore.exceptions.BotoCoreError, OSError) as e:
            raise self._error(op, key, e) from None

    def put_if_absent(self, key: str, data: bytes) -> str:
        full = self._key(key)
        r = self._conditional("create", key, lambda: self._client.put_object(
            Bucket=self.bucket, Key=full, Body=data, ContentMD5=_md5_b64(data), IfNoneMatch="*",
        ))  # fmt: skip
        return str(r.get("ETag") or "")

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        full = self._key(key)
        r = self._conditional("replace", key, lambda: self._client.put_object(
            Bucket=self.bucket, Key=full, Body=data, ContentMD5=_md5_b64(data), IfMatch=etag,
        ))  # fmt: skip
        return str(r.get("ETag") or "")

    def delete_if_match(self, key: str, etag: str) -> None:
        full = self._key(key)
        try:
            self._conditional("delete", key, lambda: self._client.delete_object(
                Bucket=self.bucket, Key=full, IfMatch=etag,
            ))  # fmt: skip
        except PreconditionFailed:
            if self.get_versioned(key) is not None:  # replaced by someone else: not ours to delete
                raise

    def close(self) -> None:
        self._part_pool.shutdown(wait=False, cancel_futures=True)
        self._hash_pool.shutdown(wait=False, cancel_futures=True)


def check_profiles(cfg: Config) -> None:
    """``config validate``: every region's ``profile`` exists in its credentials file (or the default
    AWS files). Raises ConfigError naming the file and key of the first one missing."""
    src = cfg.source or "<config>"
    for name, region in sorted(cfg.regions.items()):
        if region.profile is None:
            continue
        creds = region.credentials_file.expanduser() if region.credentials_file else None
        bs = botocore.session.Session()
        if creds is not None:
            bs.set_config_variable("credentials_file", str(creds))
        if region.profile not in bs.available_profiles:
            where = creds or "~/.aws/credentials and ~/.aws/config"
            raise ConfigError(f"{src}: regions.{name}.profile: profile {region.profile!r} not found in {where}")
