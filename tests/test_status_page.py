"""The status page, read from the journals of a real local network (tiny model, cheaters, a
trainer that announces checkpoints): each role's page and the localnet page show the window
table, per-miner verdicts with a cheater's reason, the checkpoint table and the SVG learning
curve; journal strings are escaped and paths and credentials never shown; a missing or
half-written journal file renders as a note; a flood of requests costs one render."""

from __future__ import annotations

import json
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from rollproof.localnet import run_localnet
from rollproof.status_page import (CachedPage, localnet_page, page_for, public_location, render_localnet,
                                   render_role, scrub)
from trainer.service import TrainerConfig
from verification.errors import ConfigError

from trainer_env import parity_registered


class Dom(HTMLParser):
    """The page's tables (id -> rows of (tr attributes, cell texts)), polylines (class -> points),
    notes and every tag seen."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, list[tuple[dict, list[str]]]] = {}
        self.polylines: dict[str, list[tuple[float, float]]] = {}
        self.tags: list[str] = []
        self.notes = ""
        self._table = self._row = self._cell = None
        self._in_notes = 0
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._row = (a, [])
            self._table.append(self._row)
        elif tag in ("td", "th") and self._row is not None:
            self._row[1].append("")
            self._cell = True
        elif tag == "polyline":
            self.polylines[a["class"]] = [tuple(map(float, p.split(","))) for p in a["points"].split()]
        elif tag == "div" and a.get("id") == "notes":
            self._in_notes = 1
        elif tag == "div" and self._in_notes:
            self._in_notes += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None
        elif tag in ("td", "th"):
            self._cell = None
        elif tag == "div" and self._in_notes:
            self._in_notes -= 1

    def handle_data(self, data):
        if self._cell and self._row is not None:
            self._row[1][-1] += data
        if self._in_notes:
            self.notes += data

    def rows(self, table: str, cls: str) -> list[tuple[dict, list[str]]]:
        return [r for r in self.tables[table] if r[0].get("class") == cls]


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """A local network of two windows with the cheaters and a trainer that announces a checkpoint
    after each applied step (the parity environment gives the tiny model reward variance)."""
    from verification.model import load_model

    root = tmp_path_factory.mktemp("statusnet")
    with parity_registered() as params:
        lm = load_model("tiny").with_generation(params)
        cfg = TrainerConfig(heldout_problems=6, heldout_rollouts=2, gate_margin=1.0)
        result = run_localnet(lm, root, windows=2, n_groups=1, trainer_config=cfg)
    assert result.ok, result.problems
    assert any(p.stage == "announced" for p in result.publications), [t.note for t in result.training]
    return root, result


def _no_private(page: str, root: Path) -> None:
    assert str(root) not in page and "file://" not in page
    assert "<script" not in page.lower()


def test_localnet_page_shows_windows_verdicts_checkpoints_and_the_curve(net):
    root, result = net
    page = localnet_page(root, replays=lambda: result.replays)().decode()
    _no_private(page, root)
    assert '<meta http-equiv="refresh" content="10">' in page
    dom = Dom(page)
    assert not dom.notes
    # the validator's window table: a row per window, one per miner with its reason and weight
    windows = dom.rows("validator-windows", "window")
    assert [int(a["data-window"]) for a, _ in windows] == [w.window for w in reversed(result.windows)]
    for res in result.windows:
        miners = {int(a["data-uid"]): cells for a, cells in dom.rows("validator-windows", "miner")
                  if int(a["data-window"]) == res.window}
        assert set(miners) == {m["uid"] for m in res.report["miners"]}
        for m in res.report["miners"]:
            name, kind = result.names[m["uid"]]
            cells = miners[m["uid"]]
            assert f"uid {m['uid']} ({name})" in cells[1]  # named through the miners' bundle hashes
            assert cells[2].startswith(m["reason"])
            assert cells[4].startswith(f"weight {m['weight']}")
            if kind != "honest":
                assert m["reason"] != "ok" and m["weight"] == 0
    # each miner's committed windows, with the validator's verdict on that very bundle
    mined = dom.rows("miner-windows", "mined")
    copycat = [cells for _, cells in mined if cells[0] == "copycat"]
    assert len(copycat) == len(result.windows)
    assert all(c[2] == "committed" and c[7].startswith("copycat") for c in copycat)
    assert all(c[6].startswith("store/") for _, c in mined)  # the store is inside the workdir
    # the checkpoint table and the learning curve
    cps = {int(a["data-version"]): cells for a, cells in dom.rows("checkpoints", "checkpoint")}
    assert set(cps) == {p.version for p in result.publications}
    for p in result.publications:
        assert cps[p.version][1] == p.stage and cps[p.version][2] == f"{p.heldout:.3f}"
        # greedy beside sampled: the candidate's and its parent's greedy accuracy the gate measured
        assert p.greedy is not None and p.parent_greedy is not None
        assert cps[p.version][5] == f"{p.greedy:.3f}" and cps[p.version][6] == f"{p.parent_greedy:.3f}"
        assert cps[p.version][8] == str(p.from_window)
        if p.stage == "announced":
            assert cps[p.version][11].startswith("replayed"), cps[p.version]
    announced = [p for p in result.publications if p.stage == "announced"]
    assert len(dom.polylines["heldout"]) == len(announced) + 1  # the parent of the first, then each
    assert len(dom.polylines["greedy"]) == len(announced) + 1
    assert len(dom.polylines["signal"]) == len(result.training)
    assert len(dom.rows("trainer-windows", "trained")) == len(result.training)


def test_each_role_page_reads_its_own_journal(net):
    root, result = net
    last = result.windows[-1]
    honest = page_for("miner", root / "miners" / "honest-1")().decode()
    _no_private(honest, root)
    dom = Dom(honest)
    fingerprint = last.report["model_fingerprint"]  # the checkpoint in the newest bundle's header
    assert f'<code title="{fingerprint}">{fingerprint[:12]}…</code> (window {last.window})' in honest
    mined = dom.rows("miner-windows", "mined")
    assert [int(a["data-window"]) for a, _ in mined] == [w.window for w in reversed(result.windows)]
    assert all(c[1] == "committed" and c[5].startswith("…/") and c[5].endswith(".rpb") for _, c in mined)
    # how the validator scored it, from the score journal the miner keeps (miner/scores.py): the
    # ledger entry of every window but the last (its entry lands after the miner's last read)
    (vuid,) = [uid for uid, (_, kind) in result.names.items() if kind == "validator"]
    said = {int(a["data-window"]): c[6] for a, c in mined}
    for res in result.windows[:-1]:
        assert said[res.window].startswith(f"validator {vuid}: score "), said
    assert said[last.window] == "-"
    (standing,) = dom.rows("validators", "standing")
    assert standing[0]["data-validator"] == str(vuid) and standing[1][2] == str(result.windows[-2].window)
    (uid,) = [uid for uid, (name, _) in result.names.items() if name == "honest-1"]
    assert standing[1][4] == str(result.chain_weights[uid]) and standing[1][5] == "50.0%"  # two honest miners

    validator = page_for("validator", root / "validator")().decode()
    _no_private(validator, root)
    verdicts = [c for a, c in Dom(validator).rows("validator-windows", "miner") if int(a["data-window"]) == last.window]
    reasons = {m["reason"] for m in last.report["miners"]}
    assert {c[2].split(" ")[0] for c in verdicts} == reasons and "copycat" in reasons

    trainer = page_for("trainer", root / "trainer", title="my trainer")().decode()
    _no_private(trainer, root)
    dom = Dom(trainer)
    assert "<title>my trainer</title>" in trainer
    assert len(dom.rows("checkpoints", "checkpoint")) == len(result.publications)
    assert len(dom.polylines["signal"]) == len(result.training)
    with pytest.raises(ConfigError):
        page_for("relay", root)


def _copy(root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(root, out, ignore=shutil.ignore_patterns("*.rpb", "*.safetensors", "store", "data", "beacons"))
    return out


def test_hostile_journal_strings_are_escaped_and_private_paths_hidden(net, tmp_path):
    root, result = net
    work = _copy(root, tmp_path)
    w = result.windows[-1].window
    report_path = work / "validator" / "windows" / str(w) / "report.json"
    report = json.loads(report_path.read_text())
    report["miners"][0]["hotkey"] = "<script>alert('hotkey')</script>"
    report["miners"][1]["detail"] = ("fetch failed: https://AKIAUSER:s3cr3t@bucket.example/x.rpb"
                                     "?X-Amz-Signature=deadbeef "
                                     "and /home/op/.bittensor/wallets/default/coldkey <b>bold</b>")
    report_path.write_text(json.dumps(report))
    miner_rec = work / "miners" / "editor" / "windows" / f"{w}.json"
    rec = json.loads(miner_rec.read_text())
    rec["detail"], rec["location"] = "<img src=x onerror=alert(1)>", "https://user:pw@host.example:9000/b.rpb?token=t0k"
    miner_rec.write_text(json.dumps(rec))
    for page in (render_localnet(work), render_role("validator", work / "validator"),
                 render_role("miner", work / "miners" / "editor")):
        assert "<script>" not in page and "<img" not in page and "<b>bold" not in page
        for secret in ("s3cr3t", "AKIAUSER", "X-Amz", "deadbeef", "/home/op", ".bittensor", "pw@", "t0k"):
            assert secret not in page, secret
    page = render_localnet(work)
    assert "&lt;script&gt;alert(&#x27;hotkey&#x27;)&lt;/script&gt;" in page  # shown, escaped
    assert "https://bucket.example/x.rpb" in page and "…/coldkey" in page
    assert "https://host.example:9000/b.rpb" in page and "&lt;img src=x" in page


def test_missing_and_half_written_journal_files_render_with_a_note(net, tmp_path):
    root, result = net
    work = _copy(root, tmp_path)
    w = result.windows[-1].window
    report = work / "validator" / "windows" / str(w) / "report.json"
    report.write_bytes(report.read_bytes()[:100])  # half-written
    (work / "validator" / "windows" / str(w - 1) / "stage").write_text("<b>from the future</b>")
    (work / "validator" / "windows" / "999999").mkdir()  # a window being verified: no stage, no report
    trained = work / "trainer" / "windows" / f"{result.training[0].window}.json"
    trained.write_text("[1, 2]")
    published = work / "trainer" / "published" / f"{result.publications[-1].version}.json"
    published.write_text(json.dumps({"version": result.publications[-1].version, "stage": "announced"}))
    (work / "miners" / "honest-2" / "windows" / f"{w}.json").write_text('{"window": ')
    (work / "miners" / "honest-2" / "timing.json").unlink()
    (work / "miners" / "honest-2" / "bundles" / f"{w - 1}.rpb").write_bytes(b"RPROOF1\n{\"groups\":[")

    dom = Dom(render_localnet(work))
    for where in (f"validator/windows/{w}/report.json: not JSON", f"validator/windows/{w - 1}/stage: an unknown stage",
                  f"trainer/windows/{result.training[0].window}.json: not a JSON object",
                  f"trainer/published/{result.publications[-1].version}.json: no 'fingerprint'",
                  f"miners/honest-2/windows/{w}.json: not JSON",
                  f"miners/honest-2/bundles/{w - 1}.rpb: no bundle header at its end"):
        assert where in dom.notes, (where, dom.notes)
    assert str(work) not in dom.notes
    stages = {int(a["data-window"]): c[1] for a, c in dom.rows("validator-windows", "window")}
    assert stages[w] == "unreadable" and stages[999999] == "verifying"
    honest2 = [c for _, c in dom.rows("miner-windows", "mined") if c[0] == "honest-2"]
    assert [c[2] for c in honest2][0] == "unreadable"
    for role, sub in (("miner", "miners/honest-2"), ("validator", "validator"), ("trainer", "trainer")):
        assert 'id="notes"' in render_role(role, work / sub)
    # a state directory with nothing in it yet (a node just started), and none at all
    for role in ("miner", "validator", "trainer"):
        for state in (tmp_path / "empty", tmp_path / "absent"):
            (tmp_path / "empty").mkdir(exist_ok=True)
            page = render_role(role, state)
            assert "yet" in page and 'id="notes"' not in page
    assert not (tmp_path / "absent").exists()  # reading created nothing
    assert "no window scored yet" in render_localnet(tmp_path / "absent")


def test_a_page_reads_only_the_last_windows(tmp_path):
    trainer = tmp_path / "trainer"
    (trainer / "windows").mkdir(parents=True)
    for w in range(200):
        (trainer / "windows" / f"{w}.json").write_text(json.dumps(
            {"window": w, "rows": 4, "groups": 2, "signal_rate": (w % 5) / 4, "dropped_stale": 0, "step": None,
             "note": "no row with a non-zero advantage", "mean_reward": 0.5}))
    (trainer / "windows" / "150.json").write_text("garbage")  # outside the last 5: never read
    dom = Dom(render_role("trainer", trainer, last=5))
    assert [int(a["data-window"]) for a, _ in dom.rows("trainer-windows", "trained")] == [199, 198, 197, 196, 195]
    assert len(dom.polylines["signal"]) == 5 and not dom.notes


def test_a_checkpoint_journaled_before_greedy_was_measured_shows_a_dash(tmp_path):
    """published/<v>.json of a trainer from before the gate measured greedy decoding: no greedy
    fields; it reads without a note and the page shows "-" there, and the greedy curve only where
    it was measured. A greedy value of another type is a note, not an exception."""
    from trainer.status import trainer_snapshot

    trainer = tmp_path / "trainer"
    (trainer / "published").mkdir(parents=True)
    common = {"fingerprint": "ab" * 32, "chance": 0.05, "difference": 0.1, "half_width": 0.05, "bytes": 10,
              "parent_heldout": 0.5}
    (trainer / "published" / "1.json").write_text(json.dumps(
        {"version": 1, "stage": "announced", "from_window": 5, "heldout": 0.6} | common))  # old: no greedy
    (trainer / "published" / "2.json").write_text(json.dumps(
        {"version": 2, "stage": "announced", "from_window": 7, "heldout": 0.7, "greedy": 0.75,
         "parent_greedy": 0.5} | common))
    snap = trainer_snapshot(trainer)
    assert not snap.notes
    by_version = {c.version: c for c in snap.checkpoints}
    assert (by_version[1].greedy, by_version[1].parent_greedy) == (None, None)
    assert (by_version[2].greedy, by_version[2].parent_greedy) == (0.75, 0.5)
    dom = Dom(render_role("trainer", trainer))
    cps = {int(a["data-version"]): cells for a, cells in dom.rows("checkpoints", "checkpoint")}
    assert cps[1][5:7] == ["-", "-"] and cps[2][5:7] == ["0.750", "0.500"]
    assert len(dom.polylines["greedy"]) == 1 and len(dom.polylines["heldout"]) == 3
    (trainer / "published" / "2.json").write_text(json.dumps(
        {"version": 2, "stage": "announced", "from_window": 7, "heldout": 0.7, "greedy": "high"} | common))
    assert any("'greedy' is not a number" in n for n in trainer_snapshot(trainer).notes)


def test_a_flood_of_requests_costs_one_render(net):
    root, _ = net
    now = [0.0]
    page = localnet_page(root, clock=lambda: now[0])
    assert isinstance(page, CachedPage)
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(page())) for _ in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert page.renders == 1 and len(set(results)) == 1 and len(results) == 32
    now[0] = 1.9
    assert page() is results[0] and page.renders == 1
    now[0] = 2.0
    page()
    assert page.renders == 2


@pytest.mark.parametrize("location, shown", [
    ("file:///srv/node/store/3/ab.rpb", "store/3/ab.rpb"),
    ("file:///elsewhere/store/3/ab.rpb", "…/ab.rpb"),
    ("/srv/node/windows/3.json", "windows/3.json"),
    ("https://bucket.s3.amazonaws.com/3/ab.rpb?X-Amz-Credential=AKIA&X-Amz-Signature=ff",
     "https://bucket.s3.amazonaws.com/3/ab.rpb"),
    ("s3://user:secret@bucket/3/ab.rpb#frag", "s3://bucket/3/ab.rpb"),
    ("", ""),
])
def test_public_location(location, shown):
    assert public_location(location, Path("/srv/node")) == shown


def test_scrub_keeps_ratios_and_hides_paths():
    root = Path("/srv/node")
    assert scrub("5/12 positions beyond 8 units", root) == "5/12 positions beyond 8 units"
    assert scrub("read /srv/node/windows/3/report.json and ~/.ssh/id_rsa", root) == \
        "read windows/3/report.json and …/id_rsa"
    assert scrub("GET http://u:p@h/x?sig=1 failed", root) == "GET http://h/x failed"


def test_miner_page_shows_validators_without_an_entry_and_half_written_scores(net, tmp_path):
    """The score journal (miner/scores.py: scores/<w>.json per scored window, scores/latest.json the
    last read) rewritten by hand: a validator with no ledger entry yet shows dashes, a half-written
    window file is a note and its row says nothing, a hostile hotkey is escaped."""
    root, result = net
    work = _copy(root, tmp_path)
    miner = work / "miners" / "honest-1"
    first, second = (r.window for r in result.windows)
    shutil.rmtree(miner / "scores")
    (miner / "scores").mkdir()
    (miner / "scores" / f"{first}.json").write_text(json.dumps(
        {"window": first, "uid": 0, "validators": {"6": {"hotkey": "5Fvalidator", "score": 8000, "scores_total": 16000,
                                                         "score_share": 0.5, "ledger_block": 70}}}))
    (miner / "scores" / f"{second}.json").write_text('{"window": ')
    (miner / "scores" / "latest.json").write_text(json.dumps(
        {"read_in_window": second, "uid": 0, "validators": [
            {"validator_uid": 6, "hotkey": "<script>v</script>", "scored_window": first, "score": 8000,
             "scores_total": 16000, "score_share": 0.5, "ledger_block": 70, "weight": 65535, "weights_total": 131070,
             "weight_share": 0.5},
            {"validator_uid": 7, "hotkey": "5Fother", "scored_window": None, "score": None, "scores_total": None,
             "score_share": None, "ledger_block": None, "weight": 0, "weights_total": 0, "weight_share": 0.0}]}))
    page = render_role("miner", miner)
    assert "<script>" not in page
    dom = Dom(page)
    said = {int(a["data-window"]): c[6] for a, c in dom.rows("miner-windows", "mined")}
    assert said[first] == "validator 6: score 8000 (50%)" and said[second] == "-"
    assert f"scores/{second}.json: not JSON" in dom.notes
    standing = {int(a["data-validator"]): c for a, c in dom.rows("validators", "standing")}
    assert standing[6][2:] == [str(first), "50.0%", "65535", "50.0%"]
    assert standing[7][2:] == ["-", "-", "0", "0.0%"]
    assert '<span class="muted">weight share (mean over validators)</span><b>25.0%</b>' in page
