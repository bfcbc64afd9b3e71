"""docs/schemas/verify.schema.json and trace.schema.json against the real `rollproof verify --json`
and `--trace` output: an accepted bundle, a rollout rejected by the model checks, a bundle-level
rejection whose trace stops at the beacon, and bytes that do not parse. The schemas are strict
(no extra keys, reason codes enumerated, the ok/reason/failed relations), so drift in the output or
in the reason codes fails here."""

import base64
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import referencing
from referencing.jsonschema import DRAFT202012

from verification.verifier import REASONS

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
VERIFY = json.loads((SCHEMAS / "verify.schema.json").read_text())
TRACE = json.loads((SCHEMAS / "trace.schema.json").read_text())
REGISTRY = referencing.Registry().with_resource(VERIFY["$id"], DRAFT202012.create_resource(VERIFY))
VERIFY_VALIDATOR = jsonschema.Draft202012Validator(VERIFY, format_checker=jsonschema.FormatChecker())
TRACE_VALIDATOR = jsonschema.Draft202012Validator(TRACE, registry=REGISTRY)


def _base_bytes(bundle) -> bytes:
    """An honest bundle of the base params: what `rollproof verify --model tiny` checks against."""
    from verification.bundle import encode_bundle

    return encode_bundle(bundle)


def _verify(tmp_path, data: bytes, *args) -> tuple[int, dict]:
    path = tmp_path / "b.rpb"
    path.write_bytes(data)
    res = subprocess.run([sys.executable, "-m", "rollproof.cli", "verify", str(path), "--model", "tiny", *args],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout)


def test_the_schemas_are_valid_json_schemas():
    jsonschema.Draft202012Validator.check_schema(VERIFY)
    jsonschema.Draft202012Validator.check_schema(TRACE)


def test_the_schema_lists_the_verifiers_reason_codes():
    failures = set(VERIFY["$defs"]["failure"]["enum"])
    assert failures == set(REASONS) - {"copycat", "not_checked"}  # those two are not verifier failures
    assert VERIFY["$defs"]["failure"]["enum"] == [r for r in REASONS if r in failures]  # check order


def test_an_accepted_bundle(tmp_path, base_bundle):
    code, out = _verify(tmp_path, _base_bytes(base_bundle), "--json")
    VERIFY_VALIDATOR.validate(out)
    assert code == 0 and out["ok"] and all(r["stats"] for r in out["rollouts"])
    rows = [(r["group"], r["rollout"]) for r in out["rollouts"]]
    n_groups, group_size = base_bundle.header.n_groups, base_bundle.header.group_size
    assert out["checked_groups"] == list(range(n_groups))  # offline, without --groups: every group, ascending
    assert rows == sorted(rows) and len(rows) == n_groups * group_size


def test_a_rollout_rejected_by_the_model_checks(tmp_path, ctx, alice, base_bundle):
    from adversary.lib import edit_logprob, resigned
    from verification.bundle import encode_bundle

    bad = encode_bundle(resigned(base_bundle, ctx, alice, edit_logprob))
    code, out = _verify(tmp_path, bad, "--trace", "--groups", "0")  # one run for the trace: the model is slow to load
    TRACE_VALIDATOR.validate(out)
    rollouts = out["verdict"]["rollouts"]
    assert code == 1 and rollouts[0]["reason"] == "logprob_mismatch" and rollouts[0]["failed"][0] == "logprob_mismatch"
    assert rollouts[0]["stats"]["bad_logprob_positions"] == 1
    assert {r["reason"] for r in rollouts[1:] if r["group"] == 0} == {"ok"}
    assert {r["reason"] for r in rollouts if r["group"] != 0} == {"not_checked"}
    assert out["trace"]["checked_groups"] == [0] == out["verdict"]["checked_groups"]


def test_a_bundle_level_rejection_and_a_trace_that_stops_at_the_beacon(tmp_path, base_bundle):
    code, out = _verify(tmp_path, _base_bytes(base_bundle), "--trace", "--no-local-drand")
    TRACE_VALIDATOR.validate(out)
    assert code == 1 and out["verdict"]["reason"] == "bad_beacon" and "beacon_error" in out["trace"]
    assert all(r["failed"] == ["bad_beacon"] and r["stats"] == {} for r in out["verdict"]["rollouts"])


@pytest.mark.parametrize("flag", ["--json", "--trace"])
def test_bytes_that_do_not_parse(tmp_path, flag):
    code, out = _verify(tmp_path, b"RPROOF1\n{not json", flag)
    (VERIFY_VALIDATOR if flag == "--json" else TRACE_VALIDATOR).validate(out)
    verdict = out if flag == "--json" else out["verdict"]
    assert code == 1 and verdict["reason"] == "bundle_format" and verdict["hotkey"] is None
    if flag == "--trace":
        assert out["trace"] is None


def _accepted_verdict() -> dict:
    rollout = {"group": 0, "rollout": 0, "ok": True, "reason": "ok", "detail": "", "failed": [], "stats": {}}
    return {"ok": True, "reason": "ok", "detail": "", "hotkey": "5Grw", "window": 7, "checked_groups": [0],
            "rollouts": [rollout]}


@pytest.mark.parametrize("mutate", [
    lambda v: v.update(reason="logprob_mismatch"),                      # ok with a failure reason
    lambda v: v.update(ok=False),                                       # rejected with reason ok
    lambda v: v["rollouts"][0].update(reason="nonsense"),               # an unknown reason code
    lambda v: v["rollouts"][0].update(ok=False),                        # a rollout's ok against its reason
    lambda v: v["rollouts"][0].update(reason="reward_mismatch", ok=False),  # a failure with no failed list
    lambda v: v.update(extra=1),                                        # a key the schema does not know
    lambda v: v.update(hotkey=None),                                    # unparsed, yet accepted
    lambda v: v["rollouts"][0].update(stats={"tokens": 3}),             # partial stats
])
def test_the_verify_schema_refuses_inconsistent_verdicts(mutate):
    VERIFY_VALIDATOR.validate(_accepted_verdict())
    bad = _accepted_verdict()
    mutate(bad)
    with pytest.raises(jsonschema.ValidationError):
        VERIFY_VALIDATOR.validate(bad)
