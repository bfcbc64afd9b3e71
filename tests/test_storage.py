"""Bundle stores (filesystem, S3 through moto's in-process S3) and the validator's fetcher."""

import boto3
import pytest
from moto import mock_aws

from adapters.fetch import Fetcher
from adapters.storage import FileStore, S3Store, bundle_key, open_store
from verification.errors import StorageError


def test_file_store_round_trip_and_location(tmp_path):
    store = FileStore(tmp_path / "s")
    key = bundle_key(1, 7, "5Hot")
    loc = store.put(key, b"bundle-bytes")
    assert loc.startswith("file://") and loc.endswith("rollproof/1/7/5Hot.rpb")
    assert store.get(key) == b"bundle-bytes" and store.exists(key)
    assert not list((tmp_path / "s").rglob("*.tmp"))
    assert Fetcher(file_roots=[tmp_path / "s"]).fetch(loc) == b"bundle-bytes"


def test_file_store_refuses_escaping_keys(tmp_path):
    with pytest.raises(StorageError, match="escapes"):
        FileStore(tmp_path).put("../evil", b"x")


def test_fetcher_limits(tmp_path):
    store = FileStore(tmp_path / "s")
    loc = store.put("big.rpb", b"x" * 100)
    with pytest.raises(StorageError, match="larger than"):
        Fetcher(file_roots=[tmp_path / "s"], max_bytes=99).fetch(loc)
    assert len(Fetcher(file_roots=[tmp_path / "s"], max_bytes=100).fetch(loc)) == 100
    outside = FileStore(tmp_path / "other").put("a.rpb", b"x")
    with pytest.raises(StorageError, match="outside"):
        Fetcher(file_roots=[tmp_path / "s"]).fetch(outside)
    with pytest.raises(StorageError, match="cannot read"):
        Fetcher(file_roots=[tmp_path / "s"]).fetch(loc + ".missing")
    with pytest.raises(StorageError, match="unsupported"):
        Fetcher().fetch("gopher://x/y")


def test_unreachable_http_location_is_a_typed_error():
    with pytest.raises(StorageError, match="cannot fetch"):
        Fetcher(timeout=2, allow_private=True).fetch("http://127.0.0.1:9/bundle.rpb")


@mock_aws
def test_s3_store_round_trip_and_limits():
    client = boto3.client("s3", region_name="us-east-1")
    client.create_bucket(Bucket="rollouts")
    store = S3Store("rollouts", prefix="sn1", client=client)
    key = bundle_key(1, 3, "5Hot")
    assert not store.exists(key)
    loc = store.put(key, b"\x00bundle")
    assert loc == "s3://rollouts/sn1/rollproof/1/3/5Hot.rpb"
    assert store.exists(key) and store.get(key) == b"\x00bundle"
    fetcher = Fetcher(s3_client=client)
    assert fetcher.fetch(loc) == b"\x00bundle"
    with pytest.raises(StorageError, match="limit|larger"):
        Fetcher(s3_client=client, max_bytes=3).fetch(loc)
    with pytest.raises(StorageError, match="cannot fetch"):
        fetcher.fetch("s3://rollouts/missing.rpb")
    with pytest.raises(StorageError, match="cannot upload"):
        S3Store("no-such-bucket", client=client).put("k", b"x")


def test_open_store_parses_specs(tmp_path):
    assert isinstance(open_store(str(tmp_path)), FileStore)
    with pytest.raises(StorageError, match="bucket"):
        open_store("s3://")
