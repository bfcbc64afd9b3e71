import json
import subprocess
import sys

import numpy as np
import pytest

from verification.bundle import encode_bundle
from verification.fingerprint import tensor_leaf, tensors_root


def test_tensor_leaf_binds_name_dtype_shape_bytes():
    a = np.arange(6, dtype=np.float32)
    base = tensor_leaf("w", a)
    assert tensor_leaf("v", a) != base
    assert tensor_leaf("w", a.astype(np.float64)) != base
    assert tensor_leaf("w", a.reshape(2, 3)) != base
    b = a.copy(); b[0] = np.nextafter(b[0], 1, dtype=np.float32)
    assert tensor_leaf("w", b) != base
    assert tensors_root([("a", a), ("b", b)]) == tensors_root([("b", b), ("a", a)])
    with pytest.raises(ValueError):
        tensors_root([("a", a), ("a", b)])


def test_tiny_fingerprint_is_stable_and_seed_specific(tiny_base):
    from verification.model import load_model

    assert load_model("tiny").fingerprint == tiny_base.fingerprint
    assert load_model("tiny:3").fingerprint != tiny_base.fingerprint


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "rollproof.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_verify_accepts_then_rejects(tmp_path, base_bundle):
    good = tmp_path / "good.rpb"
    good.write_bytes(encode_bundle(base_bundle))
    res = _cli("verify", str(good), "--model", "tiny", "--json")
    assert res.returncode == 0, res.stderr
    verdict = json.loads(res.stdout)
    assert verdict["ok"] and len(verdict["rollouts"]) == 8 * base_bundle.header.group_size
    # flip one byte of the hotkey signature
    raw = bytearray(good.read_bytes())
    at = raw.rfind(b'"signature":"') + 14
    raw[at] = ord("0") if raw[at] != ord("0") else ord("1")
    bad = tmp_path / "bad.rpb"
    bad.write_bytes(bytes(raw))
    res = _cli("verify", str(bad), "--model", "tiny")
    assert res.returncode == 1
    assert "bad_signature" in res.stdout


def test_cli_verify_errors_are_clean(tmp_path):
    junk = tmp_path / "junk.rpb"
    junk.write_bytes(b"\x00garbage")
    res = _cli("verify", str(junk), "--model", "tiny")
    assert res.returncode == 1 and "bundle_format" in res.stdout
    res = _cli("verify", str(junk), "--model", str(tmp_path))
    assert res.returncode == 2 and "error" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_verify_rejects_a_wrong_group_count_with_its_reason(tmp_path, base_bundle, tiny_base, ctx, alice):
    """docs/protocol.md sections 9-10: n_groups must be the checkpoint's `groups` (8 for the base
    params). A bundle of no groups, or a prefix of the groups, is rejected (exit 1) as bad_params,
    the same verdict the Verifier gives, before any model run."""
    from typer.testing import CliRunner

    from miner.proof import assemble_bundle
    from rollproof.cli import app

    prefix = assemble_bundle(ctx, alice, tiny_base.fingerprint, base_bundle.groups[:3], tiny_base.generation)
    empty = assemble_bundle(ctx, alice, tiny_base.fingerprint, [], tiny_base.generation)
    for bundle, n in ((empty, 0), (prefix, 3)):
        path = tmp_path / f"{n}.rpb"
        path.write_bytes(encode_bundle(bundle))
        out = CliRunner().invoke(app, ["verify", str(path), "--model", "tiny"], env={"COLUMNS": "200"})
        assert out.exit_code == 1, out.output
        assert f"REJECTED (bad_params: n_groups {n} is not the checkpoint's groups 8)" in out.output
        as_json = CliRunner().invoke(app, ["verify", str(path), "--model", "tiny", "--json"])
        verdict = json.loads(as_json.stdout)
        assert as_json.exit_code == 1 and not verdict["ok"] and verdict["reason"] == "bad_params"
        assert len(verdict["rollouts"]) == n * tiny_base.generation.group_size
