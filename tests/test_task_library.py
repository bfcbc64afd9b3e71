"""Library-backed environments (verification/environments/library.py, reasoning_gym_envs.py;
docs/protocol.md section 8, "Library-backed environments"): the pin (version, file digests, self-check
item) refuses any other reasoning-gym with one TaskLibraryError naming the install command; params out
of range or over the prompt bound are refused; items are the same in fresh processes; the reward is
exact integer equality."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verification import environments
from verification.constants import BASE_GENERATION, MAX_ENV_PROMPT_BYTES, REASONING_GYM_VERSION
from verification.environments import REWARD_SCALE, library
from verification.environments.reasoning_gym_envs import MAX_ATTEMPTS, PROMPT_SUFFIX, library_seed
from verification.errors import EnvironmentSpecError, TaskLibraryError

from hidden_package import without_package
from verification.generation import GenerationParams
from verification.prf import prf

ROOT = Path(__file__).resolve().parents[1]
CHAIN = environments.get("rg_chain_sum")
ARITH = environments.get("rg_basic_arithmetic")
INSTALL = "pip install reasoning-gym==0.1.25"


def _params(name: str, params: dict) -> dict:
    return {**BASE_GENERATION, "environments": [{"name": name, "weight": 1, "params": params}]}


@pytest.fixture
def fresh_pin(monkeypatch):
    """The pin's per-process cache emptied for the test (and restored after), so its checks run again."""
    monkeypatch.setattr(library, "_checked", {})


def _run(code: str, tmp_path: Path | None = None, extra_path: str = "", hashseed: str = "0") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra_path, str(ROOT)) if p),
           "PYTHONHASHSEED": hashseed}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


_CHECK = """
from verification.constants import BASE_GENERATION
from verification.errors import TaskLibraryError
from verification.generation import GenerationParams

try:
    GenerationParams.from_json({**BASE_GENERATION, "environments": [{"name": "rg_chain_sum", "weight": 1,
        "params": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}}]})
except TaskLibraryError as e:
    print("TaskLibraryError", e.code, e)
    raise SystemExit(3)
print("accepted")
"""

# every import finder wrapped so that it sees neither the reasoning_gym package nor its distribution
# metadata: the interpreter behaves as one where reasoning-gym was never installed
_WITHOUT_RG = without_package('reasoning_gym', 'reasoning-gym')


def test_library_missing_is_one_typed_error_naming_the_install_command():
    res = _run(_WITHOUT_RG + _CHECK)
    assert res.returncode == 3, res.stdout + res.stderr
    assert "TaskLibraryError task_library reasoning-gym is not installed" in res.stdout
    assert INSTALL in res.stdout and "Traceback" not in res.stderr


def test_without_the_library_other_environments_still_work():
    """The import is lazy: params without an rg_* environment never touch reasoning-gym."""
    code = _WITHOUT_RG + ("import sys\nfrom verification.constants import BASE_GENERATION\n"
                          "from verification.generation import GenerationParams\nfrom verification import environments\n"
                          "p = GenerationParams.from_json(BASE_GENERATION)\n"
                          "print(environments.problem_for(b'x' * 32, p)[0], 'reasoning_gym' in sys.modules)\n")
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["add", "False"]


def test_other_version_is_refused(fresh_pin, monkeypatch):
    """The installed metadata is simulated (0.1.24); the check itself runs."""
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version",
                        lambda name: "0.1.24" if name == "reasoning-gym" else real(name))
    with pytest.raises(TaskLibraryError) as e:
        GenerationParams.from_json(_params("rg_basic_arithmetic", ARITH.DEFAULT_PARAMS))
    assert e.value.code == "task_library"
    assert "reasoning-gym 0.1.24 is installed" in str(e.value) and INSTALL in str(e.value)


def test_the_installed_release_passes_the_pin(fresh_pin):
    assert importlib.metadata.version("reasoning-gym") == REASONING_GYM_VERSION
    GenerationParams.from_json(_params("rg_chain_sum", CHAIN.DEFAULT_PARAMS))
    assert set(library._checked) == {"chain_sum"}  # only the dataset named was checked


def test_pinned_digests_are_the_wheels_record():
    record = importlib.metadata.distribution("reasoning-gym").read_text("RECORD")
    rows = {line.split(",")[0]: line.split(",")[1] for line in record.splitlines() if line}
    for rel, hexdigest in library.PINNED_FILES.items():
        b64 = rows["reasoning_gym/" + rel].removeprefix("sha256=")  # urlsafe base64 of the same 32 bytes
        assert base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex() == hexdigest


@pytest.fixture(scope="module")
def edited_copy(tmp_path_factory):
    """A copy of the installed reasoning_gym package whose chain_sum.py prints its question with
    another word (the item changes): first on the import path of the subprocesses below. The
    distribution metadata is still the real 0.1.25 one, so the version check passes."""
    src = Path(importlib.util.find_spec("reasoning_gym").origin).parent
    root = tmp_path_factory.mktemp("rg")
    shutil.copytree(src, root / "reasoning_gym", ignore=shutil.ignore_patterns("__pycache__"))
    target = root / "reasoning_gym" / "arithmetic" / "chain_sum.py"
    text = target.read_text()
    assert "State the final answer" in text
    target.write_text(text.replace("State the final answer", "Give the final answer"))
    return root, hashlib.sha256(target.read_bytes()).hexdigest()


def test_a_changed_generator_file_is_refused_by_its_digest(edited_copy):
    root, digest = edited_copy
    res = _run(_CHECK, extra_path=str(root))
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"reasoning-gym file {root / 'reasoning_gym' / 'arithmetic' / 'chain_sum.py'} has SHA-256 {digest}" in res.stdout
    assert library.PINNED_FILES["arithmetic/chain_sum.py"] in res.stdout and INSTALL in res.stdout
    assert "Traceback" not in res.stderr


def test_a_changed_item_is_refused_by_the_self_check(edited_copy):
    """Were the edited file's digest the pinned one, the self-check item still catches the change."""
    root, digest = edited_copy
    code = ("from verification.environments import library\n"
            f"library.PINNED_FILES['arithmetic/chain_sum.py'] = {digest!r}\n" + _CHECK)
    res = _run(code, extra_path=str(root))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "generator gives ('Give the final answer to the following arithmetic problem:" in res.stdout
    assert "for its pinned self-check item" in res.stdout and INSTALL in res.stdout


@pytest.mark.parametrize("name,params,match", [
    ("rg_chain_sum", {"min_terms": 1, "max_terms": 2, "min_digits": 1, "max_digits": 1}, r"min_terms must be an integer in \[2, 20\]"),
    ("rg_chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 19}, r"max_digits must be an integer in \[1, 18\]"),
    ("rg_chain_sum", {"min_terms": 3, "max_terms": 2, "min_digits": 1, "max_digits": 1}, r"min_terms must be <= rg_chain_sum.max_terms"),
    ("rg_chain_sum", {"min_terms": 2, "max_terms": 2, "min_digits": 1}, r"takes exactly the params"),
    ("rg_basic_arithmetic", {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1}, r"max_terms must be an integer in \[2, 2\]"),
    ("rg_basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 2, "max_digits": 1}, r"min_digits must be <="),
    ("rg_chain_sum", {"min_terms": 2, "max_terms": 20, "min_digits": 1, "max_digits": 18}, r"allow prompts of 531 UTF-8 bytes, more than MAX_ENV_PROMPT_BYTES = 448"),
])
def test_params_out_of_range_or_over_the_prompt_bound_are_refused(name, params, match):
    with pytest.raises(EnvironmentSpecError, match=match) as e:
        GenerationParams.from_json(_params(name, params))
    assert not isinstance(e.value, TaskLibraryError)


def test_prompt_bound_is_exact_for_fixed_shapes():
    """With one term count and one digit count every prompt is exactly max_prompt_bytes long (the
    bound is the worst draw, not a guess); 1-digit terms include 0, 2-digit ones start at 10."""
    for k, d in ((2, 1), (3, 2), (5, 4), (19, 18)):
        p = {"min_terms": k, "max_terms": k, "min_digits": d, "max_digits": d}
        if CHAIN.max_prompt_bytes(p) > MAX_ENV_PROMPT_BYTES:
            continue
        for i in range(5):
            assert len(CHAIN.generate(prf("t", k, d, i), p).prompt.encode()) == CHAIN.max_prompt_bytes(p)
    p = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    lengths = {len(ARITH.generate(prf("a", i), p).prompt.encode()) for i in range(300)}
    assert max(lengths) == ARITH.max_prompt_bytes(p)  # "Calculate 10 * 10." occurs


def test_the_derivation_is_the_protocols():
    seed = prf("derivation", 7)
    p = CHAIN.generate(seed, CHAIN.DEFAULT_PARAMS)
    lseed = int.from_bytes(prf("rg-seed", "rg_chain_sum", seed, 0)[:8], "big") >> 1
    assert p.answer["library_seed"] == lseed == library_seed("rg_chain_sum", seed, 0) and p.answer["attempt"] == 0
    question, answer = library.item("chain_sum", CHAIN.config(CHAIN.DEFAULT_PARAMS), lseed)
    assert p.prompt == question + " " + PROMPT_SUFFIX and p.answer["answer"] == int(answer)
    assert p.prompt.endswith(" = Give the final answer as a number on the last line.")


def test_a_non_integer_answer_takes_the_next_attempt_then_a_typed_error(monkeypatch):
    """The library is made to answer 1.5 on its first attempts (as decimal_chain_sum always would);
    the rule under test is the environment's."""
    real = library.item
    calls = []

    def first_non_integer(name, config, seed):
        calls.append(seed)
        q, a = real(name, config, seed)
        return (q, "1.5") if len(calls) <= 2 else (q, a)

    monkeypatch.setattr(library, "item", first_non_integer)
    seed = prf("non-integer", 1)
    p = CHAIN.generate(seed, CHAIN.DEFAULT_PARAMS)
    assert p.answer["attempt"] == 2 and calls == [library_seed("rg_chain_sum", seed, a) for a in range(3)]
    assert p.answer["library_seed"] == calls[-1]
    monkeypatch.setattr(library, "item", lambda name, config, seed: (real(name, config, seed)[0], "9.908"))
    with pytest.raises(TaskLibraryError, match=f"no integer answer in {MAX_ATTEMPTS} attempts"):
        CHAIN.generate(seed, CHAIN.DEFAULT_PARAMS)


_SETTINGS = st.one_of(
    st.tuples(st.just(CHAIN), st.integers(2, 12), st.integers(0, 4), st.integers(1, 10), st.integers(0, 4)),
    st.tuples(st.just(ARITH), st.just(2), st.just(0), st.integers(1, 12), st.integers(0, 4)),
)


@settings(max_examples=150)
@given(st.binary(min_size=32, max_size=32), _SETTINGS)
def test_any_seed_gives_an_integer_answer_a_bounded_prompt_and_an_exact_reward(seed, setting):
    env, k, dk, d, dd = setting
    lo_d, hi_d = d, min(d + dd, env.PARAM_RANGES["max_digits"][1])
    params = {"min_terms": k, "max_terms": min(k + dk, env.PARAM_RANGES["max_terms"][1]),
              "min_digits": lo_d, "max_digits": hi_d}
    if env.max_prompt_bytes(params) > MAX_ENV_PROMPT_BYTES:
        return
    p = env.generate(seed, params)
    a = p.answer["answer"]
    assert isinstance(a, int) and p.answer["attempt"] == 0
    assert len(p.prompt.encode("utf-8")) <= env.max_prompt_bytes(params) <= MAX_ENV_PROMPT_BYTES
    lo, hi = env.answer_range(params)
    assert lo <= a <= hi
    assert env.reward(p, str(a)) == REWARD_SCALE
    assert env.reward(p, f"So the result is\n{a}.") == REWARD_SCALE
    assert env.reward(p, str(a + 1)) == 0 and env.reward(p, f"{a}.5") == 0
    assert 0 < env.chance_reward(p) <= REWARD_SCALE / 2


def test_reward_never_evaluates_the_expression():
    p = CHAIN.generate(prf("eval", 3), {"min_terms": 3, "max_terms": 3, "min_digits": 2, "max_digits": 2})
    expr = p.answer["question"].split(": ")[1].rstrip(" =")
    last = int(expr.split()[-1])
    expected = REWARD_SCALE if last == p.answer["answer"] else 0
    assert CHAIN.reward(p, expr) == expected  # the last number of "a - b + c" is c, not the sum


def test_harder_steps_stay_valid_and_end():
    for env in (CHAIN, ARITH):
        p, steps = dict(env.DEFAULT_PARAMS), 0
        while (nxt := env.harder(p)) is not None:
            env.check_params(nxt)
            assert sum(nxt.values()) == sum(p.values()) + 1
            p, steps = nxt, steps + 1
        assert env.max_prompt_bytes(p) <= MAX_ENV_PROMPT_BYTES
        assert steps > 5
    assert CHAIN.harder(CHAIN.DEFAULT_PARAMS) == {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


_ITEMS = """
import hashlib, json
from verification import environments
from verification.prf import prf
out = []
for name, params in (("rg_chain_sum", {"min_terms": 2, "max_terms": 5, "min_digits": 1, "max_digits": 3}),
                     ("rg_basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 3})):
    env = environments.get(name)
    for i in range(200):
        p = env.generate(prf("determinism", name, i), params)
        out.append([p.prompt, p.answer["answer"], p.answer["library_seed"]])
print(hashlib.sha256(json.dumps(out).encode()).hexdigest())
"""


def test_items_are_the_same_in_fresh_processes_under_any_hash_seed():
    digests = {_run(_ITEMS, hashseed=h).stdout.strip() for h in ("0", "1", "4242", "random")}
    assert len(digests) == 1 and re.fullmatch(r"[0-9a-f]{64}", digests.pop())
    here = [[p.prompt, p.answer["answer"], p.answer["library_seed"]]
            for name, params in (("rg_chain_sum", {"min_terms": 2, "max_terms": 5, "min_digits": 1, "max_digits": 3}),
                                 ("rg_basic_arithmetic", {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 3}))
            for p in (environments.get(name).generate(prf("determinism", name, i), params) for i in range(200))]
    assert hashlib.sha256(json.dumps(here).encode()).hexdigest() == _run(_ITEMS).stdout.strip()


def _manifest_naming(name: str, params: dict) -> bytes:
    """The checkpoint vector's manifest with generation params naming `name` (re-encoded canonically;
    its signature no longer matches, which parse_manifest does not check)."""
    from verification.canonical import canonical_json

    doc = json.loads((ROOT / "tests" / "vectors" / "checkpoint.json").read_text())
    manifest = json.loads(doc["manifest"])
    manifest["generation"] = _params(name, params)
    return canonical_json(manifest)


def test_a_manifest_naming_an_rg_environment_this_node_cannot_make_is_no_verdict(fresh_pin, monkeypatch):
    """A node whose reasoning-gym is another release cannot make the checkpoint's problems: that is
    its own install's fault, so the announcement is unavailable to it, not void for everyone."""
    from verification.checkpoint import Announcement, check_announced_manifest, manifest_hash, parse_manifest
    from verification.errors import CheckpointInvalidError, CheckpointUnavailableError

    data = _manifest_naming("rg_chain_sum", CHAIN.DEFAULT_PARAMS)
    assert parse_manifest(data).generation.environments[0].name == "rg_chain_sum"  # the real library parses it
    real = importlib.metadata.version
    monkeypatch.setattr(library, "_checked", {})
    monkeypatch.setattr(importlib.metadata, "version", lambda n: "0.1.24" if n == "reasoning-gym" else real(n))
    with pytest.raises(TaskLibraryError):
        parse_manifest(data)
    ann = Announcement(5, bytes(32), manifest_hash(data), "file:///x", 0)
    with pytest.raises(CheckpointUnavailableError, match="cannot make the checkpoint's problems") as e:
        check_announced_manifest(ann, data, "5" * 48)
    assert not isinstance(e.value, CheckpointInvalidError)


def test_a_bundle_of_library_problems_is_mined_and_verified(tiny_base, ctx, alice, local_drand):
    """The tiny model under a mix of both rg_* environments: a miner's bundle verifies, its groups
    carry library prompts, and a reward the rule does not give is reward_mismatch."""
    import copy

    from miner.proof import assemble_bundle, build_bundle
    from verification.verifier import Verifier

    mix = {**BASE_GENERATION, "groups": 2, "group_size": 2, "max_new_tokens": 6, "environments": [
        {"name": "rg_chain_sum", "weight": 1, "params": CHAIN.DEFAULT_PARAMS},
        {"name": "rg_basic_arithmetic", "weight": 1, "params": ARITH.DEFAULT_PARAMS}]}
    lm = tiny_base.with_generation(GenerationParams.from_json(mix))
    bundle = build_bundle(lm, ctx, alice)
    verifier = Verifier(lm, [local_drand.info])
    verdict = verifier.verify(bundle)
    assert verdict.ok, verdict.detail
    assert {g.environment for g in bundle.groups} <= {"rg_chain_sum", "rg_basic_arithmetic"}
    forged = copy.deepcopy(bundle)
    row = forged.groups[0].rollouts[0]
    row.reward = REWARD_SCALE - row.reward if row.reward in (0, REWARD_SCALE) else 0
    forged = assemble_bundle(ctx, alice, bytes.fromhex(forged.header.model_fingerprint), forged.groups, forged.header)
    assert {(r.group, r.rollout): r.reason for r in verifier.verify(forged).rollouts}[(0, 0)] == "reward_mismatch"
