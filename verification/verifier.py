"""The Verifier: given a bundle, the beacon networks, the model and the environments, decide every
rollout and say why. Used unchanged by the validator and by the offline `rollproof verify`.

`verify` decides one bundle; `verify_many` decides many (a validator's window) with the same
verdicts: the checks that need no model run first for every bundle and yield the checked groups'
rollouts, one batched recompute runs over all of them (verification.model.recompute_batches: rows of
different groups and miners share forward passes up to a memory bound), then each rollout is
compared with its recomputed proofs.

Check order (first failure is the reason; later failures are listed in `failed`):
  bundle level: format -> rows_root -> signature -> window/hotkey/block -> beacon -> model -> params
                (group_size, max_new_tokens, then n_groups = the checkpoint's groups)
  every group:  problem (environment + prompt tokens derived from the window seed), then the checks
                that need no model run: tokens in range -> termination -> reward -> advantages
  opened groups (the model run): tokens in range -> sketch -> sampling -> logprobs -> termination
                -> reward, then advantages
A bundle-level failure rejects every rollout with that reason. Every group's problem is checked, so
each row of an accepted bundle answers one of its own signer's problems (docs/protocol.md section 13:
no other miner's rows can be appended to it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from typing import TYPE_CHECKING

import numpy as np

from verification import environments
from verification.bundle import Bundle, Group, decode_bundle, rows_root
from verification.challenge import problem_round
from verification.constants import GUMBEL_MARGIN, LOGPROB_ABS_TOL, SKETCH_TOL
from verification.drand import ChainInfo, verify_beacon
from verification.errors import BeaconError, BundleFormatError, ConfigError, RollproofError, SignatureError
from verification.grpo import advantages
from verification.sampling import noise_keys
from verification.signing import verify as verify_signature
from verification.sketch import sketch_distance, sketch_vectors
from verification.window import WindowContext

if TYPE_CHECKING:  # the model module needs torch; the verifier itself does not import it
    from verification.model import LoadedModel

# reason codes, in check order
OK = "ok"
REASONS = (
    "bundle_format", "bundle_too_large", "rows_root_mismatch", "bad_signature", "wrong_window", "wrong_hotkey", "wrong_block",
    "bad_beacon", "wrong_model", "bad_params", "bad_problem", "bad_token", "sketch_mismatch",
    "sampling_mismatch", "logprob_mismatch", "bad_termination", "reward_mismatch", "advantage_mismatch",
    "copycat", "not_checked",
)


@dataclass
class RolloutVerdict:
    group: int
    rollout: int
    ok: bool
    reason: str
    detail: str = ""
    failed: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


@dataclass
class BundleVerdict:
    ok: bool
    reason: str
    detail: str
    hotkey: str | None
    window: int | None
    checked_groups: list[int]
    rollouts: list[RolloutVerdict]

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def n_rejected(self) -> int:
        return sum(1 for r in self.rollouts if not r.ok and r.reason != "not_checked")


@dataclass(frozen=True)
class Expectation:
    """What the chain says about this bundle. Offline audits may leave fields None: they are then
    taken from the signed header and reported as unchecked against a chain."""

    netuid: int | None = None
    window: int | None = None
    hotkey: str | None = None
    block_hash: bytes | None = None
    block_time: int | None = None
    fingerprint: bytes | None = None


def format_verdict(exc: BundleFormatError) -> BundleVerdict:
    """The verdict on bytes that do not parse as a bundle (no rows to list)."""
    return BundleVerdict(False, exc.code if exc.code in REASONS else "bundle_format", str(exc), None, None, [], [])


@dataclass
class BundleCheck:
    """One bundle for verify_many: what verify takes."""

    bundle: Bundle
    expected: Expectation | None = None
    groups: list[int] | None = None  # the opened groups (None: all)
    progress: Callable[[int], None] | None = None  # called with 1 as each opened group is decided


@dataclass
class _Open:
    """A checked group whose rollouts await their recompute."""

    group: Group
    env: object
    problem: object
    first_row: int
    done: Callable[[list[RolloutVerdict]], None]


class Verifier:
    def __init__(self, lm: LoadedModel, beacon_networks: Iterable[ChainInfo], *,
                 batch_size: int | None = 8, padding_side: str = "right",
                 max_batch_bytes: int | None = None):
        """batch_size: most rollouts per recompute forward (None: as many as max_batch_bytes, the
        transient memory bound of one forward, allows; default verification.model.RECOMPUTE_BATCH_BYTES)."""
        if padding_side not in ("left", "right"):
            raise ValueError("padding_side must be 'left' or 'right'")
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be at least 1 (or None)")
        self.lm = lm
        self.networks = {info.chain_hash(): info for info in beacon_networks}
        self.batch_size = batch_size
        self.padding_side = padding_side
        if max_batch_bytes is None:
            from verification.model import RECOMPUTE_BATCH_BYTES

            max_batch_bytes = RECOMPUTE_BATCH_BYTES
        self.max_batch_bytes = max_batch_bytes

    # ---- bundle level -------------------------------------------------------------------------
    def verify_bytes(self, data: bytes, expected: Expectation | None = None, **kw) -> BundleVerdict:
        try:
            bundle = decode_bundle(data)
        except BundleFormatError as exc:
            return format_verdict(exc)
        return self.verify(bundle, expected, **kw)

    def verify(self, bundle: Bundle, expected: Expectation | None = None, *,
               groups: list[int] | None = None,
               progress: Callable[[int], None] | None = None) -> BundleVerdict:
        return self.verify_many([BundleCheck(bundle, expected, groups, progress)])[0]

    def verify_many(self, checks: Sequence[BundleCheck]) -> list[BundleVerdict]:
        """Every bundle's verdict, as verify gives it, with one batched recompute over all their
        opened groups. ConfigError (before any work) when a check opens a group its bundle lacks."""
        for c in checks:
            n = c.bundle.header.n_groups
            outside = [i for i in (c.groups or []) if not 0 <= i < n]
            if outside:
                raise ConfigError(f"group {outside[0]} is not in this bundle (it has groups 0..{n - 1})")
        rows: list = []
        opened: list[_Open] = []
        vector_sets: dict[bytes, int] = {}
        vectors: list[np.ndarray] = []
        assemble = [self._prepare(c, rows, opened, vector_sets, vectors) for c in checks]
        owner = np.zeros(len(rows), dtype=np.int64)
        waiting = [len(o.group.rollouts) for o in opened]
        for k, o in enumerate(opened):
            owner[o.first_row:o.first_row + waiting[k]] = k
            if not waiting[k]:
                o.done(self._check_advantages(o.group, []))
        recomputed: dict[int, tuple] = {}
        batches = self.lm.recompute_batches(rows, vectors, batch_size=self.batch_size, padding_side=self.padding_side,
                                            max_bytes=self.max_batch_bytes) if rows else []
        for batch, proofs in batches:
            for i, p in zip(batch, proofs):
                recomputed[i] = p
                k = int(owner[i])
                waiting[k] -= 1
                if waiting[k] == 0:  # the group's last rollout is in: decide the group now
                    o = opened[k]
                    mine = [recomputed.pop(o.first_row + j) for j in range(len(o.group.rollouts))]
                    o.done(self._check_advantages(o.group, [self.check_rollout(o.group, r, pr, o.env, o.problem)
                                                            for r, pr in zip(o.group.rollouts, mine)]))
        return [finish() for finish in assemble]

    def _prepare(self, check: BundleCheck, rows: list, opened: list[_Open], vector_sets: dict[bytes, int],
                 vectors: list[np.ndarray]) -> Callable[[], BundleVerdict]:
        """The model-free checks of one bundle. Appends the opened groups' rollouts to `rows` (and
        their groups to `opened`); returns what assembles the bundle's verdict once they are decided."""
        from verification.model import RecomputeRow

        bundle, h = check.bundle, check.bundle.header
        checked = list(range(h.n_groups)) if check.groups is None else sorted(set(check.groups))
        try:
            ctx = self._check_header(bundle, check.expected or Expectation())
        except _Reject as rej:
            verdict_rows = [RolloutVerdict(g.index, r.index, False, rej.reason, rej.detail, [rej.reason])
                            for g, r in bundle.rows()]
            verdict = BundleVerdict(False, rej.reason, rej.detail, h.hotkey, h.window, checked, verdict_rows)
            return lambda: verdict
        key = ctx.sketch_key
        if key not in vector_sets:
            vector_sets[key] = len(vectors)
            vectors.append(sketch_vectors(key, self.lm.hidden_size))
        vector_set = vector_sets[key]
        per_group: list[list[RolloutVerdict] | None] = []
        opened_here = set(checked)
        for g in bundle.groups:
            slot = len(per_group)
            per_group.append(None)
            seed = ctx.problem_seed(h.hotkey, g.index)
            found = self._problem(g, seed)
            if isinstance(found, list):
                per_group[slot] = found
                if check.progress and g.index in opened_here:
                    check.progress(1)
                continue
            env, problem, prompt = found
            if g.index not in opened_here:
                per_group[slot] = self._check_advantages(
                    g, [self.check_rollout_without_model(g, r, env, problem) for r in g.rollouts])
                continue

            def done(verdicts, slot=slot):
                per_group[slot] = verdicts
                if check.progress:
                    check.progress(1)

            opened.append(_Open(g, env, problem, len(rows), done))
            rows.extend(RecomputeRow(prompt, r.completion, noise_keys(seed, r.index, len(r.completion)), vector_set)
                        for r in g.rollouts)

        def finish() -> BundleVerdict:
            verdicts = [v for group in per_group for v in group]
            ok = all(v.ok for v in verdicts if v.reason != "not_checked")
            first_bad = next((v for v in verdicts if not v.ok and v.reason != "not_checked"), None)
            return BundleVerdict(ok, OK if ok else first_bad.reason, "" if ok else first_bad.detail,
                                 h.hotkey, h.window, checked, verdicts)

        return finish

    def _check_header(self, bundle: Bundle, exp: Expectation) -> WindowContext:
        h = bundle.header
        if rows_root(bundle.groups).hex() != h.rows_root:
            raise _Reject("rows_root_mismatch", "the rows do not hash to the signed rows_root")
        try:
            verify_signature(h.hotkey, h.signing_message(), bundle.signature)
        except SignatureError as exc:
            raise _Reject("bad_signature", str(exc)) from None
        if exp.netuid is not None and h.netuid != exp.netuid:
            raise _Reject("wrong_window", f"bundle is for netuid {h.netuid}, expected {exp.netuid}")
        if exp.window is not None and h.window != exp.window:
            raise _Reject("wrong_window", f"bundle is for window {h.window}, expected {exp.window}")
        if exp.hotkey is not None and h.hotkey != exp.hotkey:
            raise _Reject("wrong_hotkey", f"bundle is signed by {h.hotkey}, committed by {exp.hotkey}")
        if exp.block_hash is not None and h.block_hash != exp.block_hash.hex():
            raise _Reject("wrong_block", "block hash is not the chain's hash of the window start")
        if exp.block_time is not None and h.block_time != exp.block_time:
            raise _Reject("wrong_block", "block time is not the chain's time of the window start")
        beacon = h.beacon.to_beacon()
        info = self.networks.get(beacon.chain_hash)
        if info is None:
            raise _Reject("bad_beacon", f"beacon chain {beacon.chain_hash.hex()[:16]}… is not an accepted network")
        try:
            verify_beacon(info, beacon, expected_round=problem_round(info, h.block_time))
        except BeaconError as exc:
            raise _Reject("bad_beacon", str(exc)) from None
        required = exp.fingerprint if exp.fingerprint is not None else self.lm.fingerprint
        if h.model_fingerprint != required.hex():
            raise _Reject("wrong_model", f"bundle names model {h.model_fingerprint[:16]}…, required {required.hex()[:16]}…")
        if h.model_fingerprint != self.lm.fingerprint.hex():
            raise _Reject("wrong_model", "the loaded model is not the one the bundle names; load the right one")
        gen = self.lm.generation
        if h.group_size != gen.group_size or h.max_new_tokens != gen.max_new_tokens:
            raise _Reject("bad_params", f"group_size/max_new_tokens {h.group_size}/{h.max_new_tokens} "
                                        f"are not the checkpoint's {gen.group_size}/{gen.max_new_tokens}")
        if h.n_groups != gen.groups:  # all of the window's problems or none: no prefix, no empty bundle
            raise _Reject("bad_params", f"n_groups {h.n_groups} is not the checkpoint's groups {gen.groups}")
        return WindowContext(h.netuid, h.window, bytes.fromhex(h.block_hash), h.block_time, beacon)

    # ---- group and rollout level ---------------------------------------------------------------
    def _problem(self, g: Group, seed: bytes):
        """(environment, problem, prompt tokens) of the group's derived problem, or the group's
        bad_problem verdicts when it is not that problem."""
        try:
            env_name, problem = environments.problem_for(seed, self.lm.generation)
            expected_prompt = self.lm.chat_prompt_ids(problem.prompt)
        except RollproofError as exc:
            return [RolloutVerdict(g.index, r.index, False, "bad_problem", str(exc), ["bad_problem"]) for r in g.rollouts]
        if g.environment != env_name or list(map(int, g.prompt)) != expected_prompt:
            detail = (f"group {g.index} is not the problem derived from the window seed "
                      f"(environment {g.environment!r}, derived {env_name!r})")
            return [RolloutVerdict(g.index, r.index, False, "bad_problem", detail, ["bad_problem"]) for r in g.rollouts]
        return environments.get(env_name), problem, expected_prompt

    @staticmethod
    def _check_advantages(g: Group, verdicts: list[RolloutVerdict]) -> list[RolloutVerdict]:
        """The group's advantages against the rewards it reports (after the per-rollout checks)."""
        expected_adv = advantages([r.reward for r in g.rollouts])
        for v, r, a in zip(verdicts, g.rollouts, expected_adv):
            if r.advantage != a:
                v.failed.append("advantage_mismatch")
                if v.ok or v.reason == "not_checked":
                    v.ok, v.reason = False, "advantage_mismatch"
                    v.detail = f"advantage {r.advantage} != recomputed {a} (micro-units)"
        return verdicts

    def check_rollout_without_model(self, g, r, env, problem) -> RolloutVerdict:
        """The model-free checks of a rollout in a group the opening did not pick: token range,
        termination and reward. Passing them leaves it `not_checked` (not ok: its tokens were not
        recomputed)."""
        tokens = r.completion.astype(np.int64)
        if np.any(tokens >= self.lm.vocab_size):
            return RolloutVerdict(g.index, r.index, False, "bad_token", "token id outside the vocabulary", ["bad_token"])
        failed, details = self._termination_and_reward(tokens, r, env, problem)
        if failed:
            return RolloutVerdict(g.index, r.index, False, failed[0], details[failed[0]], failed)
        return RolloutVerdict(g.index, r.index, False, "not_checked")

    def _termination_and_reward(self, tokens: np.ndarray, r, env, problem) -> tuple[list[str], dict[str, str]]:
        failed: list[str] = []
        details: dict[str, str] = {}
        c = len(tokens)
        eos_at = np.flatnonzero(np.isin(tokens, np.fromiter(self.lm.eos_ids, dtype=np.int64))).tolist()
        max_new = self.lm.generation.max_new_tokens
        if (eos_at and eos_at[0] != c - 1) or (not eos_at and c != max_new):
            failed.append("bad_termination")
            details["bad_termination"] = (f"EOS at {eos_at[0]} of {c}" if eos_at
                                          else f"stopped at {c} tokens without EOS (max {max_new})")
        text = self.lm.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)
        reward = env.reward(problem, text)
        if reward != r.reward:
            failed.append("reward_mismatch")
            details["reward_mismatch"] = f"reported reward {r.reward}, recomputed {reward}"
        return failed, details

    def recompute(self, prompt: list[int], rollouts, problem_seed: bytes, vectors):
        """Per rollout (sketches [C,K], token logprobs [C], sampling gaps [C]), recomputed by
        the agreed model on its device in padded batches (verification.model.recompute_proofs)."""
        return self.lm.recompute_proofs(prompt, [r.completion for r in rollouts],
                                        [noise_keys(problem_seed, r.index, len(r.completion)) for r in rollouts],
                                        vectors, batch_size=self.batch_size, padding_side=self.padding_side,
                                        max_bytes=self.max_batch_bytes)

    def check_rollout(self, g, r, proofs, env, problem) -> RolloutVerdict:
        """All per-token and reward checks of one rollout against its recomputed proofs."""
        failed: list[str] = []
        details: dict[str, str] = {}
        tokens = r.completion.astype(np.int64)
        c = len(tokens)
        if np.any(tokens >= self.lm.vocab_size):
            return RolloutVerdict(g.index, r.index, False, "bad_token", "token id outside the vocabulary", ["bad_token"])
        sketches, true_lp, gaps = proofs
        dist = sketch_distance(sketches, r.sketches)
        bad_sketch = np.flatnonzero(dist > SKETCH_TOL)
        if len(bad_sketch):
            failed.append("sketch_mismatch")
            details["sketch_mismatch"] = (f"{len(bad_sketch)}/{c} positions beyond {SKETCH_TOL} units "
                                          f"(first at {int(bad_sketch[0])}, max {int(dist.max())})")
        bad_sample = np.flatnonzero(gaps > GUMBEL_MARGIN)
        if len(bad_sample):
            failed.append("sampling_mismatch")
            details["sampling_mismatch"] = (f"{len(bad_sample)}/{c} tokens are not the seeded sample "
                                            f"(first at {int(bad_sample[0])}, gap {gaps[bad_sample[0]]:.3g})")
        lp_err = np.abs(true_lp.astype(np.float64) - r.logprobs.astype(np.float64))
        bad_lp = np.flatnonzero(lp_err > LOGPROB_ABS_TOL)
        if len(bad_lp):
            failed.append("logprob_mismatch")
            details["logprob_mismatch"] = (f"{len(bad_lp)}/{c} logprobs off by more than {LOGPROB_ABS_TOL} "
                                           f"(max {lp_err.max():.4g})")
        more_failed, more_details = self._termination_and_reward(tokens, r, env, problem)
        failed += more_failed
        details |= more_details
        stats = {"tokens": c, "max_sketch_dist": int(dist.max()), "max_gap": float(gaps.max()),
                 "max_logprob_err": float(lp_err.max()), "mean_sketch_dist": float(dist.mean()),
                 "mean_gap": float(gaps.mean()), "mean_logprob_err": float(lp_err.mean()),
                 "bad_sketch_positions": int(len(bad_sketch)), "bad_sample_positions": int(len(bad_sample)),
                 "bad_logprob_positions": int(len(bad_lp))}
        if failed:
            return RolloutVerdict(g.index, r.index, False, failed[0], details[failed[0]], failed, stats)
        return RolloutVerdict(g.index, r.index, True, OK, "", [], stats)


class _Reject(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail
