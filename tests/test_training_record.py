"""The training record (verification/training_record.py), its settings (trainer/record.py) and the
optimizer file (trainer/optimizer_files.py): every record round-trips through its one encoding,
and every malformed form is one TrainingRecordError naming what is wrong. Pure and fast."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import verification.training_record as tr
from trainer.policy import LORA_TARGETS, LoraSettings
from trainer.record import TRAINER_SETTINGS, settings_from_json, settings_json
from trainer.step import TrainConfig
from verification.canonical import canonical_json
from verification.constants import BASE_GENERATION, MAX_TRAINING_RECORD_BYTES
from verification.errors import TrainingRecordError
from verification.generation import GenerationParams
from verification.training_record import (
    CandidateEvent,
    ReturnToAnchor,
    TrainingRecord,
    WindowEvent,
    parse_training_record,
)

PARAMS = GenerationParams.from_json(BASE_GENERATION)
TRAINER = {"publish_every": 1, "max_staleness": 2, "heldout_problems": 6, "heldout_rollouts": 2, "gate_margin": 1.0,
           "raise_difficulty_above": None, "reset_on_withheld": True}
SETTINGS = settings_json(LoraSettings(rank=4, alpha=8.0), TrainConfig(), TRAINER)

# ---- strategies ----------------------------------------------------------------------------------
hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
any_float = st.floats(allow_nan=True, allow_infinity=True)
finite = st.floats(allow_nan=False, allow_infinity=False)
rewards = st.integers(0, 1_000_000)


@st.composite
def window_events(draw, window: int) -> WindowEvent:
    outcome = draw(st.sampled_from(tr.OUTCOMES))
    ran = outcome in ("applied", "skipped")
    stat = finite if outcome == "applied" else any_float  # a skipped step may be non-finite (the breaker)
    step = ({k: draw(stat).hex() for k in ("grad_norm", "clipped_share", "loss")} if ran else None)
    rows = tuple(draw(st.lists(hex32, min_size=1, max_size=5))) if ran else ()
    reason = "applied" if outcome == "applied" else draw(st.text(max_size=30))
    return WindowEvent(window, draw(st.none() | hex32), draw(st.dictionaries(st.integers(0, 65535), hex32, max_size=3)),
                       outcome, reason, rows, draw(st.integers(0, 1000)), step)


@st.composite
def candidates(draw, version: int, stage: str, n: int) -> CandidateEvent:
    # with the gate's greedy results (per problem 0 or 1) or without (a gate that did not measure them)
    problems = draw(st.integers(0, 6))
    greedy = [tuple(draw(st.lists(st.integers(0, 1), min_size=problems, max_size=problems))) for _ in range(2)]
    return CandidateEvent(version, stage, PARAMS, tuple(draw(st.lists(rewards, min_size=n, max_size=n))),
                          tuple(draw(st.lists(rewards, min_size=n, max_size=n))), draw(hex32), *greedy)


@st.composite
def records(draw) -> TrainingRecord:
    """A record of 1 to 3 spans (windows, then a candidate: withheld or expired, and after a withheld
    one maybe a return to the anchor), the last candidate announced with the record's version."""
    parent_version = draw(st.integers(0, 50))
    spans = draw(st.integers(1, 3))
    # candidate versions increase from above the parent's; the last one is the record's
    versions = sorted(draw(st.lists(st.integers(parent_version + 1, parent_version + 60), min_size=spans,
                                    max_size=spans, unique=True)))
    version = versions[-1]
    first = draw(st.integers(0, 1 << 40))
    gaps = draw(st.lists(st.integers(1, 3), min_size=spans * 3, max_size=spans * 3))
    n = draw(st.integers(1, 6))
    events, window, g = [], first, iter(gaps)
    for s in range(spans):
        for _ in range(draw(st.integers(1, 3))):
            events.append(draw(window_events(window)))
            window += next(g)
        last_span = s == spans - 1
        stage = "announced" if last_span else draw(st.sampled_from(("withheld", "expired")))
        events.append(draw(candidates(versions[s], stage, n)))
        if stage == "withheld" and draw(st.booleans()):
            events.append(ReturnToAnchor())
    windows = [e.window for e in events if isinstance(e, WindowEvent)]
    parent_fp = draw(hex32)
    older = sorted(set(draw(st.lists(st.integers(0, max(0, parent_version - 1)), max_size=3))), reverse=True)
    lineage = ((parent_fp, parent_version),) + tuple((draw(hex32), v) for v in older if v < parent_version)
    base = parent_version == 0
    return TrainingRecord(
        netuid=draw(st.integers(0, 65535)), version=version, parent_fingerprint=parent_fp,
        parent_version=parent_version, parent_manifest_sha256=None if base else draw(hex32),
        start_adapter_sha256=draw(hex32), start_optimizer_sha256=None if base else draw(hex32),
        validator_uid=draw(st.integers(0, 65535)), validator_hotkey=draw(st.text("abcdefXYZ123", min_size=1, max_size=48)),
        first_window=windows[0], last_window=windows[-1], lineage=lineage, settings=SETTINGS,
        world_size=draw(st.integers(1, 8)), events=tuple(events), end_adapter_sha256=events[-1].adapter_sha256,
        end_optimizer_sha256=draw(hex32))


@settings(max_examples=150)
@given(records())
def test_every_record_round_trips_through_its_one_encoding(record):
    data = record.to_bytes()
    parsed = parse_training_record(data)
    assert parsed == record
    assert parsed.to_bytes() == data
    assert data == canonical_json(json.loads(data))


# ---- one fixed record to break -------------------------------------------------------------------
def _record(parent_version: int = 3) -> TrainingRecord:
    h = [bytes([i]) * 32 for i in range(1, 12)]
    step = {"grad_norm": (0.5).hex(), "clipped_share": (0.0).hex(), "loss": (-0.25).hex()}
    events = (
        WindowEvent(10, h[0].hex(), {3: h[1].hex(), 4: h[2].hex()}, "applied", "applied", (h[3].hex(), h[4].hex()),
                    0, step),
        CandidateEvent(parent_version + 1, "withheld", PARAMS, (0, 1_000_000), (0, 0), h[5].hex()),
        ReturnToAnchor(),
        WindowEvent(11, None, {}, "not_trained", "no ledger entry", (), 0, None),
        WindowEvent(12, h[6].hex(), {3: h[1].hex()}, "applied", "applied", (h[7].hex(),), 1, step),
        CandidateEvent(parent_version + 2, "announced", PARAMS, (0, 1_000_000), (1_000_000, 1_000_000), h[8].hex()),
    )
    return TrainingRecord(1, parent_version + 2, "ab" * 32, parent_version, "cd" * 32, "ef" * 32, "01" * 32, 7,
                          "5Validator", 10, 12, (("ab" * 32, parent_version), ("12" * 32, parent_version - 1)),
                          SETTINGS, 1, events, h[8].hex(), h[9].hex())


def _obj() -> dict:
    return json.loads(_record().to_bytes())


def _refused(obj_or_bytes, match: str) -> None:
    data = obj_or_bytes if isinstance(obj_or_bytes, bytes) else canonical_json(obj_or_bytes)
    with pytest.raises(TrainingRecordError, match=match):
        parse_training_record(data)


def test_the_fixed_record_parses():
    assert parse_training_record(_record().to_bytes()) == _record()
    assert _record().data_hashes() == [(bytes([i]) * 32).hex() for i in (1, 2, 3, 7)]


def test_not_canonical_is_refused():
    obj = _obj()
    _refused(json.dumps(obj, indent=1).encode(), "canonical")
    _refused(json.dumps(dict(reversed(list(obj.items()))), separators=(",", ":")).encode(), "canonical")
    _refused(canonical_json(obj).replace(b'"netuid":1', b'"netuid":1.0'), "netuid must be an integer")
    _refused(canonical_json(obj) + b"\n", "canonical")
    _refused(b"\xff" + canonical_json(obj), "not JSON")
    _refused(b"[]", "keys")


def test_a_record_over_the_bound_is_refused(monkeypatch):
    data = _record().to_bytes()
    _refused(data + b" " * (MAX_TRAINING_RECORD_BYTES + 1 - len(data)), f"limit {MAX_TRAINING_RECORD_BYTES}")
    monkeypatch.setattr(tr, "MAX_TRAINING_RECORD_BYTES", len(data))
    assert parse_training_record(data) == _record()  # exactly at the bound: fine
    monkeypatch.setattr(tr, "MAX_TRAINING_RECORD_BYTES", len(data) - 1)
    _refused(data, f"{len(data)} bytes, limit {len(data) - 1}")


def test_a_record_nesting_too_deep_is_refused():
    _refused(b"[" * 5000 + b"]" * 5000, "nests too deep")


@pytest.mark.parametrize("where", ["", "parent", "start", "validator", "windows", "end", "lineage.0",
                                   "events.0", "events.0.step", "events.1", "events.1.heldout", "events.2",
                                   "settings"])
def test_unknown_keys_are_refused(where):
    obj = _obj()
    target = obj
    for part in filter(None, where.split(".")):
        target = target[int(part)] if part.isdigit() else target[part]
    target["extra"] = 1
    _refused(obj, "exactly the keys")


@pytest.mark.parametrize("where", ["format", "events.0.rows", "events.1.adapter_sha256", "end.optimizer_sha256"])
def test_missing_keys_are_refused(where):
    obj = _obj()
    *path, last = where.split(".")
    target = obj
    for part in path:
        target = target[int(part)] if part.isdigit() else target[part]
    del target[last]
    _refused(obj, "exactly the keys")


def test_window_events_out_of_order_are_refused():
    obj = _obj()
    ev = obj["events"]
    ev[3], ev[4] = ev[4], ev[3]  # window 12 before window 11
    _refused(obj, "increasing window order")
    obj = _obj()
    obj["events"][4]["window"] = 11  # window 11 twice
    _refused(obj, "increasing window order, once each")


def test_window_events_must_span_the_stated_windows():
    obj = _obj()
    obj["windows"]["last"] = 13
    _refused(obj, "span exactly first..last")
    obj = _obj()
    obj["windows"]["first"] = 9
    _refused(obj, "span exactly first..last")
    obj = _obj()
    obj["windows"] = {"first": 12, "last": 10}
    _refused(obj, "first window after the last")


@settings(max_examples=40)
@given(records(), st.data())
def test_any_two_window_events_swapped_are_refused(record, data):
    idx = [i for i, e in enumerate(record.events) if isinstance(e, WindowEvent)]
    if len(idx) < 2:
        return
    a, b = sorted(data.draw(st.lists(st.sampled_from(idx), min_size=2, max_size=2, unique=True)))
    events = list(record.events)
    events[a], events[b] = events[b], events[a]
    with pytest.raises(TrainingRecordError, match="window order"):
        parse_training_record(replace(record, events=tuple(events)).to_bytes())


def test_the_last_event_must_be_this_checkpoint_announced():
    obj = _obj()
    obj["events"][-1]["stage"] = "withheld"
    _refused(obj, "the last event is this checkpoint, announced")
    obj = _obj()
    obj["events"][-1]["version"] = obj["version"] + 1
    _refused(obj, "the last event is this checkpoint, announced")
    obj = _obj()
    obj["events"].append({"kind": "return_to_anchor"})
    _refused(obj, "the last event is this checkpoint, announced")
    obj = _obj()
    obj["events"] = obj["events"][:3]  # ends on the withheld candidate's return: windows end at 10
    obj["windows"]["last"] = 10
    _refused(obj, "the last event is this checkpoint, announced")
    obj = _obj()
    obj["events"][1]["stage"] = "announced"
    _refused(obj, "only the last candidate is announced")
    obj = _obj()
    obj["end"]["adapter_sha256"] = "99" * 32
    _refused(obj, "the announced candidate's adapter is the record's end")


def test_an_event_of_no_known_kind_is_refused():
    obj = _obj()
    obj["events"][2] = {"kind": "rewind"}
    _refused(obj, "unknown event kind")
    obj = _obj()
    obj["events"] = []
    _refused(obj, "non-empty list")


@pytest.mark.parametrize("parent_version,version", [(3, 3), (4, 3), (0, 0)])
def test_a_parent_version_at_or_above_the_version_is_refused(parent_version, version):
    obj = _obj()
    obj["parent"]["version"] = parent_version
    obj["lineage"][0]["version"] = parent_version
    obj["version"] = version
    obj["events"][-1]["version"] = max(version, 1)
    _refused(obj, "the parent's version is below this one" if version >= 1 else r"version must be an integer in \[1")


def test_only_a_record_from_the_base_model_starts_fresh():
    obj = _obj()
    obj["start"]["optimizer_sha256"] = None  # parent v3, but a fresh optimizer
    _refused(obj, "only a record whose parent is the base model")
    obj = _obj()
    obj["parent"]["manifest_sha256"] = None
    _refused(obj, "only a record whose parent is the base model")
    base = json.loads(replace(_record(0), lineage=(("ab" * 32, 0),), parent_manifest_sha256=None,
                              start_optimizer_sha256=None).to_bytes())
    assert parse_training_record(canonical_json(base)).parent_version == 0
    base["start"]["optimizer_sha256"] = "01" * 32
    _refused(base, "only a record whose parent is the base model")


BAD_HEX = ["AB" * 32, "ab" * 31, "ab" * 33, "zz" * 32, 12, None]


@pytest.mark.parametrize("bad", BAD_HEX)
@pytest.mark.parametrize("where", ["parent.fingerprint", "start.adapter_sha256", "end.optimizer_sha256",
                                   "lineage.1.fingerprint", "events.0.rows.1", "events.0.report_sha256",
                                   "events.0.bundles.3", "events.5.adapter_sha256"])
def test_bad_hex_is_refused(where, bad):
    if bad is None and where.endswith("report_sha256"):
        return  # a window the trainer got no report for: null is its form
    obj = _obj()
    *path, last = where.split(".")
    target = obj
    for part in path:
        target = target[int(part)] if isinstance(target, list) else target[part]
    if isinstance(target, list):
        target[int(last)] = bad
    else:
        target[last] = bad
    with pytest.raises(TrainingRecordError):
        parse_training_record(canonical_json(obj))


def test_bundle_uids_are_decimal():
    obj = _obj()
    obj["events"][0]["bundles"] = {"03": "11" * 32}
    _refused(obj, "decimal strings")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_an_applied_step_with_a_non_finite_result_is_refused(value):
    obj = _obj()
    obj["events"][0]["step"]["grad_norm"] = value
    _refused(obj, "finite")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_skipped_step_may_record_the_non_finite_result_that_tripped_its_breaker(value):
    obj = _obj()
    obj["events"][0]["outcome"] = "skipped"
    obj["events"][0]["reason"] = "non_finite"
    obj["events"][0]["step"]["loss"] = value
    assert parse_training_record(canonical_json(obj)).events[0].step["loss"] == value


@pytest.mark.parametrize("value", ["0.5", "1e-3", "0X1.0p+0", "0x1.0", "", 0.5, None])
def test_a_step_statistic_that_is_not_a_hex_float_is_refused(value):
    obj = _obj()
    obj["events"][0]["step"]["clipped_share"] = value
    _refused(obj, "float.hex")


def test_steps_and_rows_are_stated_exactly_when_a_step_ran():
    obj = _obj()
    obj["events"][3]["step"] = obj["events"][0]["step"]  # not_trained with a step
    _refused(obj, "a step is stated exactly when one ran")
    obj = _obj()
    obj["events"][0]["rows"] = []
    _refused(obj, "rows are listed exactly when a step ran")
    obj = _obj()
    obj["events"][0]["outcome"] = "finished"
    _refused(obj, "outcome must be one of")
    obj = _obj()
    obj["events"][0]["reason"] = "x" * (tr.MAX_REASON_CHARS + 1)
    _refused(obj, "reason must be a short string")


def test_held_out_rewards_pair_up_and_stay_in_range():
    obj = _obj()
    obj["events"][5]["heldout"]["candidate"] = [1_000_000]
    _refused(obj, "pair up")
    obj = _obj()
    obj["events"][5]["heldout"] = {"parent": [], "candidate": []}
    _refused(obj, "pair up")
    obj = _obj()
    obj["events"][5]["heldout"]["candidate"] = [0, 1_000_001]
    _refused(obj, "held-out rewards must be an integer")
    obj = _obj()
    obj["events"][5]["generation"]["temperature_milli"] = 1
    _refused(obj, "generation params")
    obj = _obj()
    obj["events"][1]["stage"] = "rejected"
    _refused(obj, "stage must be one of")


def test_greedy_results_are_optional_pair_up_and_are_zero_or_one():
    obj = _obj()
    assert "greedy" not in obj["events"][5]  # a gate that did not measure greedy decoding: no key
    assert parse_training_record(canonical_json(obj)).events[5].parent_greedy == ()
    obj["events"][5]["greedy"] = {"parent": [1, 0, 1], "candidate": [0, 0, 1]}
    parsed = parse_training_record(canonical_json(obj)).events[5]
    assert (parsed.parent_greedy, parsed.candidate_greedy) == ((1, 0, 1), (0, 0, 1))
    assert parsed.to_json()["greedy"] == obj["events"][5]["greedy"]
    for bad, match in (({"parent": [1, 0], "candidate": [0]}, "pair up"), ({"parent": [], "candidate": []}, "pair up"),
                       ({"parent": [2], "candidate": [0]}, "greedy result must be an integer in \\[0, 1\\]"),
                       ({"parent": [True], "candidate": [0]}, "greedy result must be an integer"),
                       ({"parent": [1]}, "greedy must have exactly the keys"),
                       ([1, 0], "greedy must have exactly the keys")):
        obj["events"][5]["greedy"] = bad
        _refused(obj, match)


def test_the_lineage_must_start_at_the_parent_and_descend():
    obj = _obj()
    obj["lineage"] = obj["lineage"][1:]  # starts at the grandparent
    _refused(obj, "the lineage starts with the parent")
    obj = _obj()
    obj["lineage"][0]["fingerprint"] = "77" * 32
    _refused(obj, "the lineage starts with the parent")
    obj = _obj()
    obj["lineage"] = list(reversed(obj["lineage"]))
    _refused(obj, "the lineage starts with the parent")
    obj = _obj()
    obj["lineage"][1]["version"] = obj["lineage"][0]["version"]
    _refused(obj, "lineage versions descend")
    obj = _obj()
    obj["lineage"] = []
    _refused(obj, "lineage must list 1 to 1024")


@pytest.mark.parametrize("field,value", [("netuid", 65536), ("netuid", -1), ("version", True), ("world_size", 0),
                                         ("format", "rollproof-training/2")])
def test_out_of_range_scalars_are_refused(field, value):
    obj = _obj()
    obj[field] = value
    with pytest.raises(TrainingRecordError):
        parse_training_record(canonical_json(obj))


def test_settings_must_be_three_objects():
    obj = _obj()
    obj["settings"]["lora"] = []
    _refused(obj, "settings are objects")
    obj = _obj()
    del obj["settings"]["trainer"]
    _refused(obj, "exactly the keys")


# ---- settings (trainer/record.py) ----------------------------------------------------------------
positive = st.floats(min_value=5e-324, allow_infinity=False, allow_nan=False)
nonneg = st.floats(min_value=0.0, allow_infinity=False, allow_nan=False)
unit = st.floats(min_value=0.0, max_value=1.0)
lora_settings = st.builds(LoraSettings, rank=st.integers(1, 256), alpha=positive,
                          dropout=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
                          target_modules=st.lists(st.sampled_from(LORA_TARGETS), min_size=1, unique=True).map(tuple),
                          init_seed=st.integers(0, 2**63))
train_configs = st.builds(TrainConfig, lr=positive, betas=st.tuples(finite, finite), adam_eps=finite,
                          weight_decay=finite, micro_batch_size=st.integers(1, 1024), clip_grad_norm=positive,
                          max_grad_norm_skip=positive, max_clipped_share=unit, eps_low=finite, eps_high=finite,
                          kl_coef=nonneg, temperature=st.none() | positive)
trainer_settings = st.fixed_dictionaries({
    "publish_every": st.integers(1, 1000), "max_staleness": st.integers(0, 1000),
    "heldout_problems": st.integers(1, 1000), "heldout_rollouts": st.integers(1, 64), "gate_margin": nonneg,
    "raise_difficulty_above": st.none() | finite, "reset_on_withheld": st.booleans()})


def _same(a, b) -> bool:
    """Equal, and every float bit for bit (so -0.0 is not 0.0)."""
    if isinstance(a, float) or isinstance(b, float):
        return type(a) is type(b) and a.hex() == b.hex()
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@settings(max_examples=200)
@given(lora_settings, train_configs, trainer_settings)
def test_settings_round_trip_exactly(lora, train, trainer):
    encoded = settings_json(lora, train, trainer)
    back = settings_from_json(json.loads(canonical_json(encoded)))  # as stored in the record
    assert back.lora == lora and back.train == train
    for f in fields(TrainConfig):
        assert _same(getattr(back.train, f.name), getattr(train, f.name)), f.name
    for k in ("alpha", "dropout", "rank", "init_seed", "target_modules"):
        assert _same(getattr(back.lora, k), getattr(lora, k)), k
    for k in TRAINER_SETTINGS:
        assert _same(getattr(back, k), trainer[k]), k
    assert settings_json(back.lora, back.train, {k: getattr(back, k) for k in TRAINER_SETTINGS}) == encoded


def _settings() -> dict:
    return json.loads(canonical_json(SETTINGS))


@pytest.mark.parametrize("part,key,value", [
    ("train", "lr", "inf"), ("train", "lr", "nan"), ("train", "lr", (float("inf")).hex()),
    ("train", "max_grad_norm_skip", "inf"), ("train", "adam_eps", "-inf"), ("train", "temperature", "nan"),
    ("train", "lr", "5e-05"), ("train", "lr", 5e-05), ("train", "lr", None), ("train", "micro_batch_size", "0x1.0p+3"),
    ("train", "betas", ["0x1.ccccccccccccdp-1"]), ("train", "betas", ["0x1.ccccccccccccdp-1", "nan"]),
    ("lora", "alpha", "inf"), ("lora", "rank", 4.0), ("lora", "target_modules", "q_proj"),
    ("lora", "target_modules", []), ("lora", "dropout", "0x1.0p+0"),
    ("trainer", "gate_margin", "inf"), ("trainer", "gate_margin", None), ("trainer", "gate_margin", "-0x1.0p+0"),
    ("trainer", "raise_difficulty_above", "nan"), ("trainer", "raise_difficulty_above", "high"),
    ("trainer", "heldout_problems", 0), ("trainer", "reset_on_withheld", 1), ("trainer", "publish_every", True),
])
def test_malformed_settings_are_one_typed_error(part, key, value):
    s = _settings()
    s[part][key] = value
    with pytest.raises(TrainingRecordError):
        settings_from_json(s)


@pytest.mark.parametrize("part", ["lora", "train", "trainer"])
def test_settings_with_unknown_or_missing_keys_are_refused(part):
    s = _settings()
    s[part]["extra"] = 1
    with pytest.raises(TrainingRecordError, match="exactly the keys"):
        settings_from_json(s)
    s = _settings()
    s[part].pop(next(iter(s[part])))
    with pytest.raises(TrainingRecordError, match="exactly the keys"):
        settings_from_json(s)


# ---- the optimizer file --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_policy():
    from trainer.policy import make_policy
    from verification.model import load_model

    return make_policy(load_model("tiny"), LoraSettings(rank=2, alpha=4.0))


def _stepped_optimizer(policy, seed: int):
    import torch

    from trainer.step import make_optimizer

    torch.manual_seed(seed)
    opt = make_optimizer(policy, TrainConfig(lr=1e-3))
    for _ in range(2):
        for p in policy.adapter_parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    return opt


def test_optimizer_state_round_trips_bit_for_bit(tiny_policy):
    import torch

    from trainer.optimizer_files import load_optimizer_state, optimizer_from_bytes, optimizer_tensors, optimizer_to_bytes
    from trainer.step import make_optimizer

    before = {n: p.detach().clone() for n, p in tiny_policy.named_adapter_parameters()}
    opt = _stepped_optimizer(tiny_policy, 1)
    tensors = optimizer_tensors(tiny_policy, opt.state_dict())
    assert tensors and len(tensors) == 3 * len(tiny_policy.adapter_parameters())
    data = optimizer_to_bytes(tensors)
    assert optimizer_to_bytes(optimizer_from_bytes(data)) == data  # one encoding
    fresh = make_optimizer(tiny_policy, TrainConfig(lr=1e-3))
    load_optimizer_state(tiny_policy, fresh, optimizer_from_bytes(data))
    again = optimizer_tensors(tiny_policy, fresh.state_dict())
    assert set(again) == set(tensors) and all(torch.equal(again[k], tensors[k]) for k in tensors)
    assert optimizer_to_bytes(again) == data
    # the loaded optimizer takes the same next step as the original
    for p in tiny_policy.adapter_parameters():
        p.grad = torch.ones_like(p)
    snap = {n: p.detach().clone() for n, p in tiny_policy.named_adapter_parameters()}
    opt.step()
    after_original = {n: p.detach().clone() for n, p in tiny_policy.named_adapter_parameters()}
    with torch.no_grad():
        for n, p in tiny_policy.named_adapter_parameters():
            p.copy_(snap[n])
    fresh.step()
    assert all(torch.equal(p, after_original[n]) for n, p in tiny_policy.named_adapter_parameters())
    with torch.no_grad():
        for n, p in tiny_policy.named_adapter_parameters():
            p.copy_(before[n])


def test_malformed_optimizer_files_are_one_typed_error(tiny_policy):
    import torch
    from safetensors.torch import save

    from trainer.optimizer_files import (
        METADATA_KEY, load_optimizer_state, optimizer_from_bytes, optimizer_tensors, optimizer_to_bytes,
    )
    from trainer.step import make_optimizer

    tensors = optimizer_tensors(tiny_policy, _stepped_optimizer(tiny_policy, 2).state_dict())
    data = optimizer_to_bytes(tensors)
    meta = {METADATA_KEY: canonical_json({"format": "rollproof-adamw/1"}).decode()}
    for bad in (b"", b"\x00" * 8, data[:-5], b"junk" + data):
        with pytest.raises(TrainingRecordError, match="does not decode"):
            optimizer_from_bytes(bad)
    with pytest.raises(TrainingRecordError, match="is not rollproof-adamw/1"):
        optimizer_from_bytes(save(tensors))
    nan = dict(tensors)
    k = next(iter(nan))
    nan[k] = torch.full_like(nan[k], float("nan"))
    with pytest.raises(TrainingRecordError, match="finite float32"):
        optimizer_from_bytes(save(nan, metadata=meta))
    half = {k: v.to(torch.float16) for k, v in tensors.items()}
    with pytest.raises(TrainingRecordError, match="finite float32"):
        optimizer_from_bytes(save(half, metadata=meta))
    fresh = make_optimizer(tiny_policy, TrainConfig())
    partial = {k: v for k, v in tensors.items() if not k.endswith(".exp_avg_sq")}
    with pytest.raises(TrainingRecordError, match="lacks part"):
        load_optimizer_state(tiny_policy, fresh, partial)
    with pytest.raises(TrainingRecordError, match="unknown tensors"):
        load_optimizer_state(tiny_policy, fresh, {**tensors, "lm_head.exp_avg": torch.zeros(1)})
    reshaped = dict(tensors)
    name = next(k for k in tensors if k.endswith(".exp_avg"))
    reshaped[name] = torch.zeros(reshaped[name].numel() + 1)
    with pytest.raises(TrainingRecordError, match="wrong shape"):
        load_optimizer_state(tiny_policy, fresh, reshaped)
