"""The verifier on honest and tampered bundles. A tampering miner re-signs (it owns its hotkey), so
most cases below re-sign the mutated bundle and check that the proof itself catches the change."""

import copy


from miner.proof import assemble_bundle, build_groups
from tests.conftest import make_ctx
from verification.bundle import BeaconModel, encode_bundle
from verification.verifier import Expectation


def resign(bundle, ctx, key, fingerprint=None):
    return assemble_bundle(ctx, key, fingerprint or bytes.fromhex(bundle.header.model_fingerprint), bundle.groups,
                           bundle.header)


def reasons(verdict):
    return {(r.group, r.rollout): r.reason for r in verdict.rollouts}


def test_honest_bundle_accepted_with_margin(verifier, honest_bundle, alice, ctx):
    exp = Expectation(netuid=ctx.netuid, window=ctx.window, hotkey=alice.ss58_address,
                      block_hash=ctx.block_hash, block_time=ctx.block_time)
    v = verifier.verify(honest_bundle, exp)
    assert v.ok, v.detail
    assert all(r.ok and r.reason == "ok" for r in v.rollouts)
    assert len(v.rollouts) == 2 * honest_bundle.header.group_size
    for r in v.rollouts:
        assert r.stats["max_sketch_dist"] <= 2
        assert r.stats["max_gap"] <= 1e-4
        assert r.stats["max_logprob_err"] < 1e-4


def test_bytes_round_trip_verifies(verifier, honest_bundle):
    assert verifier.verify_bytes(encode_bundle(honest_bundle)).ok


def test_edited_token_is_caught(verifier, bundle_copy, ctx, alice, tiny):
    r = bundle_copy.groups[0].rollouts[1]
    r.completion[5] = (int(r.completion[5]) + 1) % 256
    v = verifier.verify(resign(bundle_copy, ctx, alice))
    assert not v.ok
    rv = reasons(v)[(0, 1)]
    assert rv in {"sketch_mismatch", "sampling_mismatch"}
    failed = next(x for x in v.rollouts if (x.group, x.rollout) == (0, 1)).failed
    assert "sampling_mismatch" in failed
    assert reasons(v)[(0, 0)] == "ok"


def test_edited_token_without_resigning_breaks_root(verifier, bundle_copy):
    bundle_copy.groups[1].rollouts[0].completion[0] ^= 1
    v = verifier.verify(bundle_copy)
    assert v.reason == "rows_root_mismatch"
    assert all(r.reason == "rows_root_mismatch" for r in v.rollouts)


def test_edited_logprob(verifier, bundle_copy, ctx, alice):
    bundle_copy.groups[0].rollouts[2].logprobs[3] += 0.01
    v = verifier.verify(resign(bundle_copy, ctx, alice))
    assert reasons(v)[(0, 2)] == "logprob_mismatch"
    assert sum(1 for r in v.rollouts if not r.ok) == 1


def test_edited_commitment(verifier, bundle_copy, ctx, alice):
    bundle_copy.groups[1].rollouts[3].sketches[10, 2] += 50
    v = verifier.verify(resign(bundle_copy, ctx, alice))
    assert reasons(v)[(1, 3)] == "sketch_mismatch"


def test_signature_byte_flip(verifier, bundle_copy):
    sig = bytearray(bundle_copy.signature)
    sig[7] ^= 0x01
    bundle_copy.signature = bytes(sig)
    v = verifier.verify(bundle_copy)
    assert v.reason == "bad_signature" and not any(r.ok for r in v.rollouts)


def test_signature_by_another_hotkey(verifier, bundle_copy, bob):
    bundle_copy.signature = bob.sign(bundle_copy.header.signing_message())
    assert verifier.verify(bundle_copy).reason == "bad_signature"


def test_beacon_byte_flip_unsigned_and_resigned(verifier, bundle_copy, ctx, alice):
    b = bundle_copy.header.beacon
    sig = bytearray(bytes.fromhex(b.signature))
    sig[20] ^= 0x04
    forged = BeaconModel(chain_hash=b.chain_hash, round=b.round, signature=bytes(sig).hex(),
                         previous_signature=b.previous_signature)
    bundle_copy.header = bundle_copy.header.model_copy(update={"beacon": forged})
    assert verifier.verify(bundle_copy).reason == "bad_signature"
    ctx2 = type(ctx)(ctx.netuid, ctx.window, ctx.block_hash, ctx.block_time, forged.to_beacon())
    assert verifier.verify(resign(bundle_copy, ctx2, alice)).reason == "bad_beacon"


def test_stale_future_and_foreign_beacons(verifier, honest_bundle, ctx, alice, local_drand):
    from verification.drand_local import LocalDrand

    for beacon in (local_drand.sign(ctx.beacon.round - 1), local_drand.sign(ctx.beacon.round + 1),
                   LocalDrand("attacker").sign(ctx.beacon.round)):
        ctx2 = type(ctx)(ctx.netuid, ctx.window, ctx.block_hash, ctx.block_time, beacon)
        v = verifier.verify(resign(copy.deepcopy(honest_bundle), ctx2, alice))
        assert v.reason == "bad_beacon", v.detail


def test_replay_to_other_window_or_hotkey(verifier, honest_bundle, ctx, alice, bob):
    exp = Expectation(window=ctx.window + 1)
    assert verifier.verify(honest_bundle, exp).reason == "wrong_window"
    assert verifier.verify(honest_bundle, Expectation(hotkey=bob.ss58_address)).reason == "wrong_hotkey"
    assert verifier.verify(honest_bundle, Expectation(block_hash=b"\x01" * 32)).reason == "wrong_block"
    # bob re-signs alice's work as his own: the problems are derived from bob's hotkey
    stolen = resign(copy.deepcopy(honest_bundle), ctx, bob)
    v = verifier.verify(stolen, Expectation(hotkey=bob.ss58_address))
    assert v.reason == "bad_problem" and not any(r.ok for r in v.rollouts)
    # alice relabels last window's bundle for this window
    ctx_next = make_ctx(__import__("verification.drand_local", fromlist=["LocalDrand"]).LocalDrand(), window=ctx.window + 1)
    moved = resign(copy.deepcopy(honest_bundle), ctx_next, alice)
    assert verifier.verify(moved).reason == "bad_problem"


def test_misreported_reward_and_advantage(verifier, bundle_copy, ctx, alice):
    bundle_copy.groups[0].rollouts[0].reward = 1_000_000
    v = verifier.verify(resign(bundle_copy, ctx, alice))
    assert reasons(v)[(0, 0)] == "reward_mismatch"
    b2 = copy.deepcopy(bundle_copy)
    b2.groups[0].rollouts[0].reward = 0
    b2.groups[1].rollouts[2].advantage += 5
    v = verifier.verify(resign(b2, ctx, alice))
    assert reasons(v)[(1, 2)] == "advantage_mismatch"
    assert reasons(v)[(0, 0)] == "ok"


def test_truncated_rollout(verifier, bundle_copy, ctx, alice):
    r = bundle_copy.groups[0].rollouts[0]
    r.completion, r.logprobs, r.sketches = r.completion[:10], r.logprobs[:10], r.sketches[:10]
    v = verifier.verify(resign(bundle_copy, ctx, alice))
    assert reasons(v)[(0, 0)] == "bad_termination"


def test_model_swap_same_shape(tiny, local_drand, ctx, alice, verifier):
    """Generated by another model of the same shape, claiming the agreed fingerprint."""
    from verification.model import load_model

    other = load_model("tiny:1").with_generation(tiny.generation)
    groups = build_groups(other, ctx, alice.ss58_address, list(range(tiny.generation.groups)))
    forged = assemble_bundle(ctx, alice, tiny.fingerprint, groups, tiny.generation)
    v = verifier.verify(forged)
    assert not v.ok
    for r in v.rollouts:
        assert r.reason == "sketch_mismatch"
        assert {"sampling_mismatch", "logprob_mismatch"} <= set(r.failed)
    honest_named = assemble_bundle(ctx, alice, other.fingerprint, groups, other.generation)
    assert verifier.verify(honest_named).reason == "wrong_model"


def test_required_fingerprint(verifier, honest_bundle):
    assert verifier.verify(honest_bundle, Expectation(fingerprint=b"\x00" * 32)).reason == "wrong_model"


def test_sampled_groups_only(verifier, honest_bundle):
    v = verifier.verify(honest_bundle, groups=[1])
    assert v.ok and v.checked_groups == [1]
    assert {r.reason for r in v.rollouts if r.group == 0} == {"not_checked"}


def test_out_of_vocab_token(verifier, bundle_copy, ctx, alice):
    bundle_copy.groups[0].rollouts[0].completion[0] = 10**6
    v = verifier.verify(resign(bundle_copy, ctx, alice))
    assert reasons(v)[(0, 0)] == "bad_token"


def test_unopened_groups_get_every_check_that_needs_no_model(verifier, honest_bundle, ctx, alice, bob):
    """Group 0 is not opened: its problem, token range, termination, reward and advantages are still
    checked, so it can hold neither another miner's problem nor misreported rewards."""
    import pytest

    from verification.errors import ConfigError

    def edited(edit):
        b = copy.deepcopy(honest_bundle)
        edit(b.groups[0])
        return verifier.verify(resign(b, ctx, alice), groups=[1])

    def foreign(g):  # bob's problem in alice's group 0
        theirs = build_groups(verifier.lm, ctx, bob.ss58_address, [0])[0]
        g.prompt, g.rollouts = theirs.prompt, theirs.rollouts

    def reward(g):
        g.rollouts[0].reward = 1_000_000 - g.rollouts[0].reward

    def advantage(g):
        g.rollouts[1].advantage += 5

    def truncate(g):
        r = g.rollouts[0]
        r.completion, r.logprobs, r.sketches = r.completion[:3], r.logprobs[:3], r.sketches[:3]

    def token(g):
        g.rollouts[0].completion[0] = 10**6

    for edit, reason in ((foreign, "bad_problem"), (reward, "reward_mismatch"), (advantage, "advantage_mismatch"),
                         (truncate, "bad_termination"), (token, "bad_token")):
        v = edited(edit)
        assert not v.ok and v.reason == reason, (edit.__name__, v.reason)
        assert v.checked_groups == [1]
        assert all(r.reason in ("ok", "not_checked") for r in v.rollouts if r.group == 1)
    # an edit the model-free checks cannot see (a logprob) stays not_checked in an unopened group
    b = copy.deepcopy(honest_bundle)
    b.groups[0].rollouts[0].logprobs[2] += 0.5
    assert verifier.verify(resign(b, ctx, alice), groups=[1]).ok
    with pytest.raises(ConfigError):
        verifier.verify(honest_bundle, groups=[2])
    with pytest.raises(ConfigError):
        verifier.verify(honest_bundle, groups=[-1])


def test_mining_and_verifying_work_in_a_thread_with_grad_enabled(tiny, ctx, alice, verifier):
    """Grad mode is per thread: load_model's global switch never reaches a miner's or validator's
    worker thread, where grad is on. Mining and verifying there must give the same bundle and verdict."""
    import threading

    import torch

    from miner.proof import build_bundle
    from verification.bundle import rows_root

    result = {}

    def work():
        torch.set_grad_enabled(True)
        try:
            bundle = build_bundle(tiny, ctx, alice)
            result["bundle"] = bundle
            result["report"] = verifier.verify(bundle)
        except Exception as exc:  # surfaced by the assertion below
            result["error"] = exc

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert "error" not in result, result.get("error")
    assert rows_root(result["bundle"].groups) == rows_root(build_bundle(tiny, ctx, alice).groups)
    assert result["report"].ok, result["report"].detail
    assert result["report"].checked_groups == [0, 1] and all(r.reason == "ok" for r in result["report"].rollouts)


def _same_verdicts(batched, alone):
    """Equal verdicts: every rollout's ok, reason and failed checks; its statistics to honest fp32
    drift (rows padded beside other groups' rows move recomputed logprobs by ~1e-6 and a sketch
    coordinate by at most a rounding unit)."""
    import math

    assert (batched.ok, batched.reason, batched.checked_groups) == (alone.ok, alone.reason, alone.checked_groups)
    assert len(batched.rollouts) == len(alone.rollouts)
    for b, a in zip(batched.rollouts, alone.rollouts):
        assert (b.group, b.rollout, b.ok, b.reason, b.failed) == (a.group, a.rollout, a.ok, a.reason, a.failed)
        assert b.stats.keys() == a.stats.keys()
        for k, x in a.stats.items():
            if k.startswith("bad_") or k == "tokens":
                assert b.stats[k] == x, k
            elif "sketch" in k:
                assert abs(b.stats[k] - x) <= 1, (k, b.stats[k], x)
            else:
                assert math.isclose(b.stats[k], x, rel_tol=1e-4, abs_tol=2e-5), (k, b.stats[k], x)


def test_a_batched_window_gives_the_per_bundle_verdicts(tiny, local_drand, ctx, alice, bob, honest_bundle, verifier):
    """verify_many (the validator's window: every bundle's opened groups recomputed together, rows
    of different prompts and miners in shared forwards) decides each bundle as verify does alone,
    for honest and cheating bundles, under the default memory bound and under one small enough to
    split the window into many mixed batches."""
    from adversary import lib as A
    from adversary.cheaters import other_checkpoint
    from miner.proof import build_bundle
    from verification.verifier import BundleCheck, Verifier

    def exp(key):
        return Expectation(netuid=ctx.netuid, window=ctx.window, hotkey=key.ss58_address,
                           block_hash=ctx.block_hash, block_time=ctx.block_time, fingerprint=tiny.fingerprint)

    carol = A.keypair(3)
    swapped = A.generated_by(other_checkpoint(tiny, 0.05), tiny, ctx, carol)
    checks = [
        BundleCheck(honest_bundle, exp(alice)),
        BundleCheck(build_bundle(tiny, ctx, bob), exp(bob), groups=[1]),
        BundleCheck(A.resigned(honest_bundle, ctx, alice, A.edit_token), exp(alice)),
        BundleCheck(A.resigned(honest_bundle, ctx, alice, A.edit_logprob), exp(alice), groups=[0]),
        BundleCheck(A.resigned(honest_bundle, ctx, alice, A.misreport_reward), exp(alice), groups=[1]),
        BundleCheck(A.resigned(honest_bundle, ctx, alice, A.misreport_advantage), exp(alice)),
        BundleCheck(swapped, exp(carol)),
        BundleCheck(honest_bundle, exp(bob)),  # wrong_hotkey: no model run
        BundleCheck(resign(honest_bundle, ctx, bob), exp(bob)),  # alice's problems signed by bob: bad_problem
        BundleCheck(build_bundle(tiny, ctx, carol, 1), exp(carol)),  # a prefix: bad_params, no model run
    ]
    alone = [verifier.verify(c.bundle, c.expected, groups=c.groups) for c in checks]
    reasons_alone = [v.reason for v in alone]
    assert reasons_alone[:2] == ["ok", "ok"] and reasons_alone[7:] == ["wrong_hotkey", "bad_problem", "bad_params"]
    assert reasons_alone[2] in ("sketch_mismatch", "sampling_mismatch") and reasons_alone[3] == "logprob_mismatch"
    assert reasons_alone[4] == "reward_mismatch" and reasons_alone[5] == "advantage_mismatch"
    assert reasons_alone[6] in ("sketch_mismatch", "sampling_mismatch", "logprob_mismatch")
    for window_verifier in (Verifier(tiny, [local_drand.info], batch_size=None),
                            Verifier(tiny, [local_drand.info], batch_size=None, max_batch_bytes=12 << 20)):
        progress = []
        for i, c in enumerate(checks):
            c.progress = lambda n, i=i: progress.append(i)
        batched = window_verifier.verify_many(checks)
        for b, a in zip(batched, alone):
            _same_verdicts(b, a)
        # each opened group reported once, by its own bundle (none where the header is rejected)
        assert sorted(progress) == [i for i, a in enumerate(alone) if a.reason not in ("wrong_hotkey", "bad_params")
                                    for _ in a.checked_groups]


def test_recompute_batches_respect_the_memory_bound_and_mix_prompts(tiny, honest_bundle, ctx, alice):
    """plan_batches packs rows of different prompts up to the bound (and rows over it alone), and
    the batched proofs of a row equal its proofs recomputed in a batch of its own group."""
    import numpy as np

    from verification.model import RecomputeRow, _BYTES_PER_LOGIT, _body_bytes, plan_batches
    from verification.sampling import noise_keys
    from verification.sketch import sketch_vectors

    vectors = sketch_vectors(ctx.sketch_key, tiny.hidden_size)
    rows, alone = [], []
    for g in honest_bundle.groups:
        seed = ctx.problem_seed(alice.ss58_address, g.index)
        keys = [noise_keys(seed, r.index, len(r.completion)) for r in g.rollouts]
        rows += [RecomputeRow(g.prompt.tolist(), r.completion, k) for r, k in zip(g.rollouts, keys)]
        alone += tiny.recompute_proofs(g.prompt.tolist(), [r.completion for r in g.rollouts], keys, vectors)
    width = max(len(r.prompt) + len(r.completion) for r in rows)
    one_row = max(len(r.completion) for r in rows) * tiny.vocab_size * _BYTES_PER_LOGIT + _body_bytes(tiny, width)
    bound = 5 * one_row
    batches = plan_batches(tiny, rows, max_bytes=bound)
    assert sorted(i for b in batches for i in b) == list(range(len(rows)))
    assert all(1 <= len(b) <= 5 for b in batches) and max(len(b) for b in batches) == 5
    mixed = [b for b in batches if len({tuple(rows[i].prompt) for i in b}) > 1]
    assert mixed, "the bound should pack rows of both groups into one batch"
    assert plan_batches(tiny, rows, max_bytes=1) == [[i] for i in sorted(range(len(rows)),
                                                                          key=lambda i: -(len(rows[i].prompt) + len(rows[i].completion)))]
    assert all(len(b) <= 3 for b in plan_batches(tiny, rows, batch_size=3))
    got: dict = {}
    for batch, proofs in tiny.recompute_batches(rows, [vectors], max_bytes=bound, padding_side="left"):
        got.update(zip(batch, proofs))
    for i, (sk, lp, gap) in enumerate(alone):
        bsk, blp, bgap = got[i]
        assert np.abs(bsk.astype(int) - sk.astype(int)).max() <= 1
        assert np.abs(blp - lp).max() < 1e-5 and np.abs(bgap - gap).max() < 1e-5


def test_every_bundle_holds_exactly_the_checkpoints_groups(verifier, honest_bundle, ctx, alice):
    """Issue 24 item 5: the generation params fix the number of groups, so a miner commits all of
    its problems or none. A prefix (fewer groups), an extra group or no group at all is bad_params,
    decided before any model run, whichever groups are opened."""
    from miner.proof import build_bundle
    from verification.bundle import decode_bundle

    n = verifier.lm.generation.groups
    assert honest_bundle.header.n_groups == n and verifier.verify(honest_bundle).ok
    extra = assemble_bundle(ctx, alice, verifier.lm.fingerprint,
                            honest_bundle.groups + build_groups(verifier.lm, ctx, alice.ss58_address, [n]),
                            verifier.lm.generation)
    prefix = build_bundle(verifier.lm, ctx, alice, n - 1)
    empty = assemble_bundle(ctx, alice, verifier.lm.fingerprint, [], verifier.lm.generation)
    for bundle, count in ((prefix, n - 1), (extra, n + 1), (empty, 0)):
        data = encode_bundle(bundle)
        assert decode_bundle(data).header.n_groups == count  # well-formed: parsing allows 0..256
        for opened in (None, [0] if count else []):
            v = verifier.verify_bytes(data, groups=opened)
            assert not v.ok and v.reason == "bad_params", (count, v.reason)
            assert v.detail == f"n_groups {count} is not the checkpoint's groups {n}"
            assert all(r.reason == "bad_params" and not r.ok for r in v.rollouts)
            assert all(not r.stats for r in v.rollouts)  # nothing was recomputed
