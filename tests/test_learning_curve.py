"""The learning-curve plot and where it marks the curriculum's steps."""

from types import SimpleNamespace

from hypothesis import given, strategies as st

import json
from dataclasses import asdict

from rich.console import Console

from rollproof.learning_curve import checkpoint_table, curriculum_steps, curve_table, plot_curve, span_signal
from trainer.service import Publication, WindowTraining


def test_steps_are_where_the_chance_baseline_changes_not_float_noise():
    versions = [0, 1, 2, 3, 4]
    chances = [0.05882352941176471, 0.058823529411764705, 0.035, 0.035, 0.02]
    assert curriculum_steps(versions, chances) == [2, 4]


@given(st.lists(st.sampled_from([0.059, 0.035, 0.02]), min_size=1, max_size=30))
def test_steps_count_every_change_of_params(chances):
    versions = list(range(len(chances)))
    steps = curriculum_steps(versions, chances)
    assert steps == [v for v in versions[1:] if chances[v] != chances[v - 1]]


def _publication(version, heldout, chance, stage="announced", greedy=None):
    return Publication(version=version, stage=stage, fingerprint=f"{version:064x}", from_window=version + 3,
                       heldout=heldout, parent_heldout=heldout - 0.01, chance=chance, difference=0.01,
                       half_width=0.02, bytes=1000, greedy=greedy,
                       parent_greedy=None if greedy is None else greedy - 0.125)


def test_plot_writes_a_png_with_withheld_candidates_and_a_curriculum_step(tmp_path):
    training = [WindowTraining(window=w, rows=16, groups=4, signal_rate=0.5 + 0.1 * (w % 3), dropped_stale=0,
                               step=None, mean_reward=0.4 + 0.05 * w) for w in range(2, 8)]
    pubs = [_publication(1, 0.6, 0.059), _publication(2, 0.7, 0.059), _publication(3, 0.45, 0.035),
            _publication(4, 0.40, 0.035, stage="withheld")]
    result = SimpleNamespace(training=training, publications=pubs, chance=0.059, base_heldout=0.55)
    out = plot_curve(result, tmp_path / "sub" / "curve.png")
    data = out.read_bytes()
    assert out == tmp_path / "sub" / "curve.png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def _render(table) -> str:
    console = Console(width=400, record=True, file=open("/dev/null", "w"))
    console.print(table)
    return console.export_text()


def _run(with_greedy: bool):
    """A run's result: windows 2..7, a candidate after windows 3, 5 and 7 (the last withheld)."""
    training = [WindowTraining(window=w, rows=16, groups=4, signal_rate=[0.25, 0.5, 0.75, 1.0, 0.5, 0.25][w - 2],
                               dropped_stale=0, step=None, mean_reward=0.4 + 0.05 * w) for w in range(2, 8)]
    g = (lambda x: x) if with_greedy else (lambda x: None)
    pubs = [_publication(1, 0.6, 0.059, greedy=g(0.625)), _publication(2, 0.7, 0.059, greedy=g(0.75)),
            _publication(3, 0.69, 0.059, stage="withheld", greedy=g(0.5))]
    return SimpleNamespace(training=training, publications=pubs, chance=0.059, base_heldout=0.55,
                           base_greedy=0.5 if with_greedy else None, published_at=dict(zip((3, 5, 7), pubs)),
                           checkpoints={w: "" for w in range(2, 8)}, versions={}, replays={})


def test_the_checkpoint_table_shows_greedy_beside_sampled_with_the_base_and_the_span_signal():
    result = _run(with_greedy=True)
    assert span_signal(result) == {1: (0.375, 0.25), 2: (0.875, 0.75), 3: (0.375, 0.25)}
    text = _render(checkpoint_table(result))
    assert "base model greedy 0.500" in text and "chance 0.059" in text
    header = [c.strip() for c in next(line for line in text.splitlines() if "checkpoint ┃" in line).split("┃")[1:-1]]
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells:
            rows[cells[0]] = dict(zip(header, cells))
    assert rows["v0 (base)"]["sampled"] == "0.550" and rows["v0 (base)"]["greedy"] == "0.500"
    assert [rows["v2"][c] for c in ("sampled", "parent", "greedy", "parent greedy", "signal (span)")] == [
        "0.700", "0.690", "0.750", "0.625", "88% (min 75%)"]
    assert (rows["v3"]["stage"], rows["v3"]["greedy"], rows["v3"]["sampled"]) == ("withheld", "0.500", "0.690")
    curve = _render(curve_table(result))
    assert "v2 announced for window 5 (held-out 0.700 sampled, 0.750 greedy)" in curve
    assert "v3 withheld (held-out 0.690 sampled, 0.500 greedy)" in curve


def test_publications_journaled_before_greedy_was_measured_still_load_and_show():
    """An old journal's published/<v>.json has no greedy fields: it loads (scripts/learning.py reads
    journals with Publication(**doc)), round-trips, and shows "-" where greedy would be."""
    new = _publication(1, 0.6, 0.059, greedy=0.625)
    old_doc = {k: v for k, v in json.loads(json.dumps(asdict(new))).items() if k not in ("greedy", "parent_greedy")}
    old = Publication(**old_doc)
    assert old.greedy is None and old.parent_greedy is None
    assert Publication(**json.loads(json.dumps(asdict(old)))) == old
    assert Publication(**json.loads(json.dumps(asdict(new)))) == new
    result = _run(with_greedy=False)
    text = _render(checkpoint_table(result))
    assert "base model greedy -" in text
    assert "(held-out 0.700 sampled, - greedy)" in _render(curve_table(result))


def test_plot_shows_greedy_and_the_base_line_and_still_plots_old_runs(tmp_path):
    for with_greedy in (True, False):
        out = plot_curve(_run(with_greedy), tmp_path / f"curve-{with_greedy}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
