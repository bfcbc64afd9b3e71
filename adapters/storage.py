"""Where bundles live between a miner's upload and a validator's download.

A miner writes through a `BundleStore` (filesystem by default, or any S3-compatible service:
AWS S3, Cloudflare R2, MinIO) and commits the returned location URI on chain. A validator reads
any committed location with `adapters.fetch.Fetcher`."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from adapters.fetch import read_local_file
from adapters.fetch import read_s3_object as _read_s3
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

    def base_location(self) -> str:  # pragma: no cover - interface
        """The location every key is under, ending in "/" (what a commitment carries as its base)."""
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
        return read_local_file(self.path(key), max_bytes)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def base_location(self) -> str:
        return self.root.as_uri().rstrip("/") + "/"


class S3Store(BundleStore):
    """An S3-compatible bucket through boto3. `endpoint_url` selects R2/MinIO; credentials come from
    the usual boto3 sources (environment, ~/.aws) and are used only to write.

    Locations: with `public_url` (the public HTTPS address of the bucket: an R2 public bucket's
    r2.dev URL or custom domain, an S3 bucket with a public-read policy, a CDN in front of it), an
    object with key K is at `<public_url>/K`, readable by every validator without credentials;
    without it, `s3://bucket/K`, which only a validator holding read credentials for this bucket can
    fetch (one operator's own miners and validators, not a public subnet)."""

    def __init__(self, bucket: str, *, prefix: str = "", endpoint_url: str | None = None,
                 region: str | None = None, client=None, timeout: float = FETCH_TIMEOUT_S,
                 public_url: str | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.public_url = check_public_url(public_url) if public_url is not None else None
        self.client = client or make_s3_client(endpoint_url, region, timeout)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def location(self, key: str) -> str:
        """The URI validators fetch for key."""
        if self.public_url is not None:
            return f"{self.public_url}/{self._key(key)}"
        return f"s3://{self.bucket}/{self._key(key)}"

    def base_location(self) -> str:
        """The location every key is under, ending in "/" (what a commitment carries as its base)."""
        return self.location("")

    def put(self, key: str, data: bytes) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            # no ACL: R2 has none and new S3 buckets refuse them; public read is the bucket's policy
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                                   ContentType="application/octet-stream")
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"cannot upload s3://{self.bucket}/{self._key(key)}: {exc}") from exc
        return self.location(key)

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


def check_public_url(url: str) -> str:
    """A bucket's public address: http(s)://host[/path], no query, fragment, credentials or
    whitespace; returned without a trailing "/"."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise StorageError(f"public URL {url!r} must be https://host[/path] (the bucket's public address)")
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise StorageError(f"public URL {url!r} must not carry a query, fragment or credentials")
    if any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        raise StorageError("public URL contains whitespace or control characters")
    return url.rstrip("/")


def open_store(spec: str, *, endpoint_url: str | None = None, public_url: str | None = None) -> BundleStore:
    """`s3://bucket[/prefix]` or a directory path. `public_url` (s3 stores only): the bucket's
    public HTTPS address, which the miner then commits instead of s3://."""
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[5:].partition("/")
        if not bucket:
            raise StorageError("s3 store needs a bucket: s3://bucket[/prefix]")
        return S3Store(bucket, prefix=prefix, endpoint_url=endpoint_url, public_url=public_url)
    if public_url is not None:
        raise StorageError("a public URL goes with an s3:// store (--store s3://BUCKET/PREFIX)")
    return FileStore(spec)
