"""The learning-curve plot and where it marks the curriculum's steps."""

from types import SimpleNamespace

from hypothesis import given, strategies as st

from rollproof.learning_curve import curriculum_steps, plot_curve
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


def _publication(version, heldout, chance, stage="announced"):
    return Publication(version=version, stage=stage, fingerprint=f"{version:064x}", from_window=version + 3,
                       heldout=heldout, parent_heldout=heldout - 0.01, chance=chance, difference=0.01,
                       half_width=0.02, bytes=1000)


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
