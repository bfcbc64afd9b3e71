"""A miner's S3 store with a public URL, against a real S3 API on loopback (moto's server mode): the
miner writes with its credentials, commits the public location, and a party holding no credentials
reads the bundle over plain HTTP through the validator's fetcher."""

import hashlib
import json
import urllib.request

import pytest

from adapters.fetch import Fetcher
from adapters.storage import S3Store, check_public_url, make_s3_client, open_store
from verification.commitment import MAX_BASE_BYTES, bundle_name, decode_commitment, encode_commitment
from verification.constants import MAX_COMMITMENT_BYTES
from verification.errors import StorageError

BUCKET = "rollproof-pub"


@pytest.fixture()
def s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    # the miner's write secrets (moto accepts any); the reader below never sees them
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "miner-writer")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "miner-secret")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = make_s3_client(endpoint, "us-east-1", timeout=10)
    client.create_bucket(Bucket=BUCKET)
    # what an operator sets up once (docs/operating.md): anonymous GetObject on the bucket
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                       "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}))
    yield endpoint, client
    server.stop()


def test_a_public_location_is_readable_without_credentials(s3_server, monkeypatch):
    endpoint, client = s3_server
    public = f"{endpoint}/{BUCKET}"  # path-style public address of the bucket
    store = S3Store(BUCKET, prefix="sn1", client=client, public_url=public + "/")
    data = b"RPROOF1\n" + bytes(range(256)) * 40
    digest = hashlib.sha256(data).digest()
    window = 123_456

    location = store.put(bundle_name(window, digest), data)
    assert location == f"{public}/sn1/{window}/{digest.hex()}.rpb"
    assert store.exists(bundle_name(window, digest))
    # the object really is in the bucket, under the prefix
    assert client.get_object(Bucket=BUCKET, Key=f"sn1/{window}/{digest.hex()}.rpb")["Body"].read() == data

    commitment = encode_commitment(window, digest, location)
    assert commitment.endswith(store.base_location().encode())  # only the base is committed
    assert len(commitment) <= MAX_COMMITMENT_BYTES

    # a validator: no credentials anywhere, only the commitment bytes
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    resolved = decode_commitment(commitment).location
    assert resolved == location
    fetched = Fetcher(timeout=10, allow_private=True).fetch(resolved)
    assert hashlib.sha256(fetched).digest() == digest
    # and a bare HTTP GET (no Authorization header) returns the same bytes
    with urllib.request.urlopen(urllib.request.Request(resolved), timeout=10) as resp:  # noqa: S310
        assert resp.status == 200 and resp.read() == data


def test_without_a_public_url_the_location_is_s3(s3_server):
    _, client = s3_server
    store = S3Store(BUCKET, prefix="p", client=client)
    assert store.put("7/x.rpb", b"x") == f"s3://{BUCKET}/p/7/x.rpb"
    assert store.base_location() == f"s3://{BUCKET}/p/"


def test_an_r2_public_base_fits_a_subtensor_commitment():
    store = S3Store("b", prefix="rp", client=object(),
                    public_url="https://pub-0123456789abcdef0123456789abcdef.r2.dev")
    assert store.base_location() == "https://pub-0123456789abcdef0123456789abcdef.r2.dev/rp/"
    assert len(store.base_location()) <= MAX_BASE_BYTES


@pytest.mark.parametrize("url", ["ftp://host/b", "https://", "https://h/b?sig=1", "https://h/b#x",
                                 "https://user:pw@h/b", "https://h/a b", "s3://bucket"])
def test_bad_public_urls_are_refused(url):
    with pytest.raises(StorageError):
        check_public_url(url)


def test_a_public_url_needs_an_s3_store(tmp_path):
    with pytest.raises(StorageError, match="s3://"):
        open_store(str(tmp_path), public_url="https://pub.example")
    store = open_store("s3://bkt/pre", endpoint_url="http://127.0.0.1:9", public_url="https://pub.example/")
    assert isinstance(store, S3Store) and store.base_location() == "https://pub.example/pre/"
