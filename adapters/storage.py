"""Where bundles live between a miner's upload and a validator's download.

A miner writes through a `BundleStore` (filesystem by default, or any S3-compatible service:
AWS S3, Cloudflare R2, MinIO) and commits the returned location URI on chain. A validator reads
any committed location with `Fetcher.fetch`, which enforces a size limit and a timeout and raises
StorageError (never returns partial data)."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from adapters.files import atomic_write
from verification.constants import FETCH_TIMEOUT_S, MAX_BUNDLE_BYTES
from verification.errors import StorageError


def bundle_key(netuid: int, window: int, hotkey: str) -> str:
    return f"rollproof/{netuid}/{window}/{hotkey}.rpb"


class BundleStore:
    def put(self, key: str, data: bytes) -> str:  # pragma: no cover - interface
        """Store data under key; return the location URI validators will fetch."""
        raise NotImplementedError

    def get(self, key: str, max_bytes: int = MAX_BUNDLE_BYTES) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def exists(self, key: str) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


class FileStore(BundleStore):
    """A directory; locations are file:// URIs. Writes are atomic (temp file + rename)."""

    def __init__(self, root: Path | str):
        self.root = Path(root).expanduser().resolve()

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the store root")
        return path

    def put(self, key: str, data: bytes) -> str:
        path = self.path(key)
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc}") from exc
        return path.as_uri()

    def get(self, key: str, max_bytes: int = MAX_BUNDLE_BYTES) -> bytes:
        return _read_file(self.path(key), max_bytes)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()


class S3Store(BundleStore):
    """An S3-compatible bucket through boto3. `endpoint_url` selects R2/MinIO; credentials come from
    the usual boto3 sources (environment, ~/.aws). Locations are s3://bucket/key."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, client=None, timeout: float = FETCH_TIMEOUT_S):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client or make_s3_client(endpoint_url, region, timeout)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ContentType="application/octet-stream")
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot upload s3://{self.bucket}/{self._key(key)}: {exc}") from exc
        return f"s3://{self.bucket}/{self._key(key)}"

    def get(self, key: str, max_bytes: int = MAX_BUNDLE_BYTES) -> bytes:
        return _read_s3(self.client, self.bucket, self._key(key), max_bytes)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"cannot reach s3://{self.bucket}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach s3://{self.bucket}: {exc}") from exc


def make_s3_client(endpoint_url: str | None = None, region: str | None = None, timeout: float = FETCH_TIMEOUT_S):
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2})
    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region or "auto", config=config)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    if len(data) > max_bytes:
        raise StorageError(f"{path} is larger than {max_bytes} bytes")
    return data


def _read_s3(client, bucket: str, key: str, max_bytes: int) -> bytes:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        # one request: the range caps the download at max_bytes + 1, which the length check catches
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{max_bytes}")["Body"]
        data = body.read(max_bytes + 1)
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"cannot fetch s3://{bucket}/{key}: {exc}") from exc
    if len(data) > max_bytes:
        raise StorageError(f"s3://{bucket}/{key} is larger than {max_bytes} bytes")
    return data


def _read_http(url: str, max_bytes: int, timeout: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked by caller
            length = resp.headers.get("Content-Length")
            if length is not None and int(length) > max_bytes:
                raise StorageError(f"{url} is {length} bytes, limit {max_bytes}")
            data = resp.read(max_bytes + 1)
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise StorageError(f"cannot fetch {url}: {exc}") from exc
    if len(data) > max_bytes:
        raise StorageError(f"{url} is larger than {max_bytes} bytes")
    return data


class Fetcher:
    """Reads committed locations for a validator. file:// is allowed only under `file_roots` (a
    validator must not read arbitrary local files because a miner said so); s3:// uses the
    validator's own client; http(s):// needs nothing."""

    def __init__(self, *, file_roots: list[Path] | None = None, s3_client=None,
                 timeout: float = FETCH_TIMEOUT_S, max_bytes: int = MAX_BUNDLE_BYTES):
        self.file_roots = [Path(r).expanduser().resolve() for r in (file_roots or [])]
        self.s3_client = s3_client
        self.timeout = timeout
        self.max_bytes = max_bytes

    def fetch(self, location: str, max_bytes: int | None = None) -> bytes:
        """The bytes at location, at most max_bytes (default: the fetcher's bundle limit)."""
        limit = self.max_bytes if max_bytes is None else max_bytes
        parsed = urllib.parse.urlparse(location)
        if parsed.scheme == "file":
            path = Path(urllib.parse.unquote(parsed.path)).resolve()
            if not any(root == path or root in path.parents for root in self.file_roots):
                raise StorageError(f"{location} is outside the directories this validator reads")
            return _read_file(path, limit)
        if parsed.scheme == "s3":
            if self.s3_client is None:
                self.s3_client = make_s3_client(timeout=self.timeout)
            return _read_s3(self.s3_client, parsed.netloc, parsed.path.lstrip("/"), limit)
        if parsed.scheme in ("http", "https"):
            return _read_http(location, limit, self.timeout)
        raise StorageError(f"unsupported location scheme {parsed.scheme!r}")


def open_store(spec: str, *, endpoint_url: str | None = None) -> BundleStore:
    """`s3://bucket[/prefix]` or a directory path."""
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[5:].partition("/")
        if not bucket:
            raise StorageError("s3 store needs a bucket: s3://bucket[/prefix]")
        return S3Store(bucket, prefix=prefix, endpoint_url=endpoint_url)
    return FileStore(spec)
