"""The validator's Prometheus metrics move as it works: a real Validator (tiny model, embedded EVM
chain, honest and cheating miners) records into a registry that is scraped the way Prometheus
reads it (generate_latest, then prometheus_client's text-format parser), and the values read back
are checked against what the validator did: journal stages counted once across a restart on the
same journal, a cheater's verdict reason under its uid, a refused weight set counted failed and its
retry counted, a rate-limited set, a catch-up after a lag."""

from __future__ import annotations

import time

import net_env
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.outage import Backoff
from adversary.cheaters import EditedTokensMiner
from miner.service import Miner
from validator.defaults import MAX_CATCH_UP_WINDOWS
from validator.service import Validator
from verification.challenge import window_start_block
from verification.commitment import encode_commitment
from verification.constants import PROTOCOL_VERSION
from verification.errors import ChainError, CheckpointError

FAST = Backoff(initial_s=0.001, max_s=0.002)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, frozenset], float]:
    """Every sample of the registry's exposition: (sample name, its labels) -> value."""
    text = generate_latest(registry).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name: str, **labels) -> float:
    """One sample's value; 0 when the exposition has no such sample (a counter never moved)."""
    return samples.get((name, frozenset((k, str(v)) for k, v in labels.items())), 0.0)


def stages(samples) -> dict[str, float]:
    return {dict(labels)["stage"]: v for (name, labels), v in samples.items()
            if name == "rollproof_validator_window_stages_total"}


class Net(net_env.Net):
    """The shared network with the last key as its validator, recording into `registry`."""

    def __init__(self, tmp_path, lm, drand, keys):
        super().__init__(tmp_path, lm, drand, keys)
        self.vkey = keys[-1]
        self.chain.set_validator_permit(self.uid(self.vkey))

    def miner(self, key, cls=Miner, name="m"):
        return super().miner(key, cls, name)

    def validator(self, registry, **kw) -> Validator:  # the validator's key is fixed here
        return super().validator(self.vkey, "v", registry=registry, backoff=FAST, **kw)


@pytest.fixture()
def keys():
    from bittensor.sp_core import Keypair

    return [Keypair.create_from_uri(f"//metrics-validator/{n}") for n in ("honest", "cheater", "validator")]


@pytest.fixture()
def net(tmp_path, tiny, local_drand, keys):
    return Net(tmp_path, tiny, local_drand, keys)


def test_a_window_moves_every_metric_and_a_restart_counts_no_stage_twice(net, keys):
    honest, cheater, _ = keys
    hu, cu = net.uid(honest), net.uid(cheater)
    w = net.next_window()
    assert net.miner(honest, name="h").run_window(w).stage == "committed"
    assert net.miner(cheater, cls=EditedTokensMiner, name="c").run_window(w).stage == "committed"
    registry = CollectorRegistry()
    dying = net.validator(registry)
    s = scrape(registry)
    (build,) = [dict(lb) for (n, lb), v in s.items() if n == "rollproof_build_info" and v == 1]
    assert build["role"] == "validator" and build["protocol"] == str(PROTOCOL_VERSION) and build["version"]
    assert value(s, "rollproof_dependency_up", role="validator", dependency="chain_writes") == 1
    net.open(dying, w)

    # the validator dies after scoring, before its ledger entry is sent
    real_record = net.chain.record_scores
    net.chain.record_scores = lambda *a, **kw: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        dying.process_window(w)
    net.chain.record_scores = real_record
    s = scrape(registry)
    assert stages(s) == {"scored": 1}
    assert value(s, "rollproof_window", role="validator") == w
    assert value(s, "rollproof_checkpoint_version", role="validator") == 0
    assert value(s, "rollproof_validator_miners") == 2
    assert value(s, "rollproof_validator_fetch_results_total", uid=hu, result="ok") == 1
    assert value(s, "rollproof_validator_fetch_results_total", uid=cu, result="ok") == 1
    assert value(s, "rollproof_validator_miner_verdicts_total", uid=hu, reason="ok") == 1
    cheat_reasons = {dict(lb)["reason"]: v for (n, lb), v in s.items()
                     if n == "rollproof_validator_miner_verdicts_total" and dict(lb)["uid"] == str(cu)}
    assert cheat_reasons.keys() <= {"sketch_mismatch", "sampling_mismatch"} and sum(cheat_reasons.values()) == 1, \
        cheat_reasons
    (cheat_reason,) = cheat_reasons
    checked = value(s, "rollproof_validator_rollouts_checked_total")
    by_reason = {dict(lb)["reason"]: v for (n, lb), v in s.items() if n == "rollproof_validator_rollout_verdicts_total"}
    assert checked > 0 and sum(by_reason.values()) == checked
    assert by_reason["ok"] > 0 and by_reason[cheat_reason] > 0
    assert value(s, "rollproof_validator_miner_score", uid=hu) == 1.0
    assert value(s, "rollproof_validator_miner_score", uid=cu) == 0.0
    assert value(s, "rollproof_validator_window_seconds_count") == 1
    assert value(s, "rollproof_validator_window_seconds_sum") > 0
    assert value(s, "rollproof_validator_fetch_seconds_count") == 2  # one per miner's bundle
    assert 0 < value(s, "rollproof_validator_fetch_seconds_sum") <= value(s, "rollproof_validator_window_seconds_sum")
    assert value(s, "rollproof_validator_verification_seconds_count") == 1
    assert 0 < value(s, "rollproof_validator_verification_seconds_sum") <= value(s, "rollproof_validator_window_seconds_sum")
    assert value(s, "rollproof_validator_weight_sets_total", result="set") == 0

    # a new process on the same journal (recording into the same registry, so the totals are the
    # two processes' sum): the scored stage is not counted again, nor any outcome journaled before
    again = net.validator(registry)
    again.verify_commitments = lambda *a, **kw: pytest.fail("re-verified after restart")
    res = again.process_window(w)
    assert res.wrote_ledger and res.wrote_weights
    s = scrape(registry)
    assert stages(s) == {"scored": 1, "ledgered": 1, "weights_intent": 1, "counted": 1}
    assert value(s, "rollproof_validator_fetch_results_total", uid=hu, result="ok") == 1
    assert value(s, "rollproof_validator_miner_verdicts_total", uid=cu, reason=cheat_reason) == 1
    assert value(s, "rollproof_validator_rollouts_checked_total") == checked
    assert value(s, "rollproof_validator_weight_sets_total", result="set") == 1
    assert value(s, "rollproof_validator_miner_weight", uid=hu) == 1.0
    assert s[("rollproof_validator_miner_weight", frozenset({("uid", str(cu))}))] == 0.0  # in the set, at weight 0
    assert value(s, "rollproof_validator_chain_write_retries_total", write="ledger") == 0

    # and a third finds the window finished: nothing moves
    before = scrape(registry)
    net.validator(registry).process_window(w)
    after = scrape(registry)
    assert stages(after) == stages(before)
    assert value(after, "rollproof_validator_weight_sets_total", result="set") == 1


def test_fetch_results_before_the_verifier_and_an_all_zero_set(net, keys, tmp_path):
    honest, cheater, _ = keys
    from bittensor.sp_core import Keypair

    from verification.bundle import bundle_hash

    # a miner whose commitment points at a file that is not there, and one that committed junk
    # under its true hash (fetched fine, then fails the bundle format)
    absent, junk = (Keypair.create_from_uri(f"//metrics-validator/{n}") for n in ("absent", "junk"))
    net.chain.register(absent)
    net.chain.register(junk)
    w = net.next_window()
    junk_bytes = b"rollproof? no, junk"
    net.chain.commit(junk, w, encode_commitment(w, bundle_hash(junk_bytes), net.store.put("junk.rpb", junk_bytes)))
    loc = net.store.put("x.rpb", b"not the committed bytes")
    net.chain.commit(honest, w, encode_commitment(w, b"\x01" * 32, loc))
    net.chain.commit(cheater, w, b"garbage")
    net.chain.commit(absent, w, encode_commitment(w, b"\x02" * 32, (tmp_path / "store" / "gone.rpb").as_uri()))
    registry = CollectorRegistry()
    v = net.validator(registry)
    net.open(v, w)
    res = v.process_window(w)
    assert not res.wrote_weights
    s = scrape(registry)
    assert value(s, "rollproof_validator_fetch_results_total", uid=net.uid(honest), result="hash_mismatch") == 1
    assert value(s, "rollproof_validator_fetch_results_total", uid=net.uid(cheater), result="bad_commitment") == 1
    assert value(s, "rollproof_validator_fetch_results_total", uid=net.uid(absent), result="fetch_failed") == 1
    assert value(s, "rollproof_validator_miner_verdicts_total", uid=net.uid(absent), reason="fetch_failed") == 1
    junk_fetches = {dict(lb)["result"]: v for (n, lb), v in s.items()
                    if n == "rollproof_validator_fetch_results_total" and dict(lb)["uid"] == str(net.uid(junk))}
    assert junk_fetches == {"ok": 1}
    (junk_reason,) = [dict(lb)["reason"] for (n, lb), v in s.items()
                      if n == "rollproof_validator_miner_verdicts_total" and dict(lb)["uid"] == str(net.uid(junk))]
    assert junk_reason == res.report["miners"][[m["uid"] for m in res.report["miners"]].index(net.uid(junk))]["reason"]
    assert junk_reason not in ("ok", "fetch_failed", "hash_mismatch", "bad_commitment")
    assert value(s, "rollproof_validator_rollouts_checked_total") == 0
    assert value(s, "rollproof_validator_weight_sets_total", result="all_zero") == 1
    assert value(s, "rollproof_validator_weight_sets_total", result="set") == 0
    assert stages(s) == {"scored": 1, "ledgered": 1, "weights_intent": 1, "counted": 1}
    assert not any(n == "rollproof_validator_miner_weight" for n, _ in s)  # no set landed


def test_a_refused_weight_set_counts_failed_and_its_retry(net, keys):
    honest = keys[0]
    w = net.next_window()
    assert net.miner(honest, name="h").run_window(w).stage == "committed"
    registry = CollectorRegistry()
    v = net.validator(registry)
    net.open(v, w)
    real = net.chain.set_weights

    def refuse(keypair, window, uids, weights):  # what finney answers a validator below min stake
        raise ChainError(f"weights for window {window} failed: NotEnoughStakeToSetWeights")

    net.chain.set_weights = refuse
    assert v.score_window(w) is None
    finished = []
    v._write_pending(finished)  # one pass of the loop's writes
    assert finished == [] and v.state.stage(w) == "weights_intent"
    s = scrape(registry)
    assert value(s, "rollproof_validator_weight_sets_total", result="failed") == 1
    assert value(s, "rollproof_validator_chain_write_retries_total", write="weights") == 0
    assert value(s, "rollproof_dependency_up", role="validator", dependency="chain_writes") == 0
    assert value(s, "rollproof_dependency_outages_total", role="validator", dependency="chain_writes") == 1
    assert stages(s) == {"scored": 1, "ledgered": 1, "weights_intent": 1}

    v._write_retry_at = 0.0  # its backoff passed
    v._write_pending(finished)  # refused again
    s = scrape(registry)
    assert value(s, "rollproof_validator_weight_sets_total", result="failed") == 2
    assert value(s, "rollproof_validator_chain_write_retries_total", write="weights") == 1
    assert value(s, "rollproof_dependency_failures_total", role="validator", dependency="chain_writes") == 2

    net.chain.set_weights = real  # the stake arrives
    time.sleep(0.01)
    v._write_pending(finished)
    assert [r.window for r in finished] == [w] and finished[0].wrote_weights
    s = scrape(registry)
    assert value(s, "rollproof_validator_chain_write_retries_total", write="weights") == 2
    assert value(s, "rollproof_validator_chain_write_retries_total", write="ledger") == 0
    assert value(s, "rollproof_validator_weight_sets_total", result="set") == 1
    assert value(s, "rollproof_dependency_up", role="validator", dependency="chain_writes") == 1
    assert value(s, "rollproof_dependency_outage_seconds_total", role="validator", dependency="chain_writes") > 0
    assert value(s, "rollproof_validator_miner_weight", uid=net.uid(honest)) == 1.0
    assert stages(s) == {"scored": 1, "ledgered": 1, "weights_intent": 1, "counted": 1}


def test_rate_limited_windows_are_deferred_then_dropped_past_the_cap(net, keys, caplog):
    """Windows closed under the weight rate limit are deferred; the next set keeps at most
    max_combined windows and drops the older one: each log line has its metric."""
    import logging

    caplog.set_level(logging.INFO, logger="rollproof.validator")
    registry = CollectorRegistry()
    v = net.validator(registry, max_combined=2)
    ready = {"now": False}
    net.chain.weights_ready = lambda uid: ready["now"]
    for i in range(3):
        w = net.next_window()
        net.chain.commit(keys[1], w, b"garbage")  # scored zero: the set is planned, never sent
        net.open(v, w)
        ready["now"] = i == 2
        assert not v.process_window(w).wrote_weights
        if i == 0:
            first = w
    s = scrape(registry)
    assert value(s, "rollproof_validator_weight_sets_total", result="rate_limited") == 2
    assert value(s, "rollproof_validator_weight_sets_total", result="all_zero") == 1
    assert stages(s) == {"scored": 3, "ledgered": 3, "deferred": 2, "dropped": 1, "weights_intent": 1, "counted": 2}
    assert v.state.stage(first) == "dropped"
    lines = [r.getMessage() for r in caplog.records if r.name == "rollproof.validator"]
    assert sum("rate limit has not passed" in m for m in lines) == 2
    assert sum(m.startswith(f"window {first} dropped") for m in lines) == 1
    assert sum("every miner scored zero" in m for m in lines) == 1


def test_a_lag_moves_catch_up_skips_once_per_window(net, keys):
    registry = CollectorRegistry()
    v = net.validator(registry)
    start = net.next_window()
    v.state.set_stage(start - 1, "checkpoint_failed")
    assert scrape(registry) and stages(scrape(registry)) == {"checkpoint_failed": 1}
    net.chain.mine(window_start_block(start + 10) - net.chain.current_block())
    last_closed = start + 9
    oldest = last_closed - MAX_CATCH_UP_WINDOWS + 1
    assert v.next_window() == oldest
    s = scrape(registry)
    assert value(s, "rollproof_validator_catch_up_skipped_windows_total") == oldest - start
    assert value(s, "rollproof_validator_window_lag") == last_closed - (start - 1)
    assert value(s, "rollproof_chain_block", role="validator") == net.chain.current_block()
    v.next_window()  # the next poll skips nothing new
    assert value(scrape(registry), "rollproof_validator_catch_up_skipped_windows_total") == oldest - start
    net.chain.mine(window_start_block(start + 11) - net.chain.current_block())  # one more window closes unscored
    assert v.next_window() == oldest + 1
    assert value(scrape(registry), "rollproof_validator_catch_up_skipped_windows_total") == oldest + 1 - start


def test_a_window_whose_checkpoint_cannot_be_verified_is_counted(net):
    class Unavailable:
        """A resolver whose checkpoint store is down: the window's checkpoint cannot be fetched."""

        def model_for(self, window):
            raise CheckpointError(f"cannot fetch the checkpoint of window {window}: store unreachable")

    registry = CollectorRegistry()
    v = net.validator(registry, resolver=Unavailable())
    w = net.next_window()
    net.open(v, w)
    assert v.process_window(w).checkpoint_error
    v.process_window(w)  # read back from the journal: not a new transition
    assert stages(scrape(registry)) == {"checkpoint_failed": 1}


def test_writing_the_stage_a_window_has_is_not_a_transition(tmp_path):
    """A resumed step writes the stage its window already has (a crash between the marks of a set's
    windows repeats them; a legacy stage text means the stage written): counted once."""
    from validator.metrics import ValidatorMetrics
    from validator.state import ValidatorState
    from adapters.telemetry import metrics_of

    registry = CollectorRegistry()
    state = ValidatorState(tmp_path / "v", metrics_of(ValidatorMetrics, registry))
    for step in (lambda: state.set_stage(5, "scored"), lambda: state.set_stage(5, "ledgered"),
                 lambda: state.mark_counted(5, 5)):
        step()
        step()  # resumed
    (tmp_path / "v" / "windows" / "4").mkdir()
    (tmp_path / "v" / "windows" / "4" / "stage").write_text("weights_skipped")  # a journal of an older release
    state.set_stage(4, "deferred")
    assert stages(scrape(registry)) == {"scored": 1, "ledgered": 1, "counted": 1}
    state.set_stage(4, "dropped")
    assert stages(scrape(registry)) == {"scored": 1, "ledgered": 1, "counted": 1, "dropped": 1}
