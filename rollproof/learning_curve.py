"""The learning curve of a local network run: mean reward of verified rows and the signal rate
(share of groups with reward variance) per window; per checkpoint the held-out reward sampled at the
checkpoint's temperature AND its greedy (argmax) accuracy, beside the chance baseline and the base
model's greedy accuracy (a sampled rise that only makes the sampled answers the greedy ones is
sharpening, not new ability: issue 28); as terminal tables and a PNG (matplotlib).

`result` is a LocalnetResult or anything with its fields (scripts/learning.py builds one from
journals): publications written before the gate measured greedy decoding have greedy None, shown
as "-" and left out of the greedy curve."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table


def _acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def curve_table(result) -> Table:
    table = Table(title="learning curve")
    for c in ("window", "checkpoint", "trained rows", "mean reward", "signal rate", "step", "after the window"):
        table.add_column(c, justify="left" if c in ("step", "after the window") else "right", no_wrap=True)
    for rec in result.training:
        fp = result.checkpoints.get(rec.window, "")
        version = result.versions.get(fp)
        step = rec.step
        step_text = (f"applied: grad {step['grad_norm']:.2f}, kl {step['approx_kl']:.4f}" if step and step["applied"]
                     else (rec.note or "-"))
        pub = result.published_at.get(rec.window)
        pub_text = "" if pub is None else (
            (f"v{pub.version} announced for window {pub.from_window}" if pub.stage == "announced"
             else f"v{pub.version} {pub.stage}")
            + f" (held-out {pub.heldout:.3f} sampled, {_acc(getattr(pub, 'greedy', None))} greedy)")
        table.add_row(str(rec.window), f"v{version}" if version is not None else fp[:8], str(rec.rows),
                      f"{rec.mean_reward:.3f}", f"{rec.signal_rate:.0%} of {rec.groups}", step_text, pub_text)
    return table


def span_signal(result) -> dict[int, tuple[float, float]]:
    """Per candidate version, the (mean, min) signal rate of the windows trained since the previous
    candidate, up to and including the window after which it was built (its span)."""
    ends = {w: pub.version for w, pub in getattr(result, "published_at", {}).items()}
    out: dict[int, tuple[float, float]] = {}
    span: list[float] = []
    for rec in result.training:
        span.append(rec.signal_rate)
        if rec.window in ends:
            out[ends[rec.window]] = (sum(span) / len(span), min(span))
            span = []
    return out


def checkpoint_table(result) -> Table:
    base_greedy = getattr(result, "base_greedy", None)
    table = Table(title="held-out per checkpoint: sampled reward and greedy accuracy (the difference: sampled, "
                        "paired against the parent, 95% interval)",
                  caption=f"base model greedy {_acc(base_greedy)}, chance {result.chance:.3f}; signal (span): "
                          "share of groups with reward variance in the windows since the previous candidate")
    for c in ("checkpoint", "from window", "sampled", "parent", "difference", "greedy", "parent greedy", "chance",
              "signal (span)", "bytes", "stage", "replay"):
        table.add_column(c, justify="right" if c != "replay" else "left", no_wrap=c != "replay")
    table.add_row("v0 (base)", "-", f"{result.base_heldout:.3f}", "-", "-", _acc(base_greedy), "-",
                  f"{result.chance:.3f}", "-", "-", "-", "-")
    replays = getattr(result, "replays", {})
    signal = span_signal(result)
    for p in result.publications:
        verdict = replays.get(p.fingerprint, "-" if p.stage != "announced" else "not judged")
        sig = signal.get(p.version)
        table.add_row(f"v{p.version}", str(p.from_window), f"{p.heldout:.3f}", f"{p.parent_heldout:.3f}",
                      f"{p.difference:+.3f} ± {p.half_width:.3f}", _acc(getattr(p, "greedy", None)),
                      _acc(getattr(p, "parent_greedy", None)), f"{p.chance:.3f}",
                      "-" if sig is None else f"{sig[0]:.0%} (min {sig[1]:.0%})", str(p.bytes), p.stage,
                      verdict if len(verdict) < 90 else verdict[:87] + "…")
    return table


def curriculum_steps(versions: list[int], chances: list[float]) -> list[int]:
    """The versions whose chance baseline differs from the one before: where the generation params
    changed (the same params give the same chance up to float summation order, ~1e-16)."""
    return [v for v, before, after in zip(versions[1:], chances, chances[1:]) if abs(after - before) > 1e-6]


def plot_curve(result, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 5.5))
    windows = [r.window for r in result.training]
    ax1.plot(windows, [r.mean_reward for r in result.training], marker="o", label="mean reward, verified rows")
    ax1.plot(windows, [r.signal_rate for r in result.training], marker="s", linestyle="--",
             label="signal rate (groups with reward variance)")
    ax1.axhline(result.chance, color="grey", linestyle=":", label=f"chance baseline {result.chance:.3f}")
    if getattr(result, "base_greedy", None) is not None:
        ax1.axhline(result.base_greedy, color="tab:green", alpha=0.5, linestyle="-.",
                    label=f"base model greedy {result.base_greedy:.3f}")
    ax1.set_xlabel("window")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_title("rollouts per window")
    ax1.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    announced = [p for p in result.publications if p.stage == "announced"]
    versions = [0] + [p.version for p in announced]
    heldout = [result.base_heldout] + [p.heldout for p in announced]
    # each checkpoint is evaluated under its own params: its chance baseline moves with them, and
    # a drop in held-out reward where they get harder is the curriculum, not forgetting
    chances = [result.chance] + [p.chance for p in announced]
    ax2.plot(versions, heldout, marker="o", label="held-out, sampled (the checkpoint's own params)")
    greedy = [(v, g) for v, g in zip(versions, [getattr(result, "base_greedy", None)]
                                     + [getattr(p, "greedy", None) for p in announced]) if g is not None]
    if greedy:
        ax2.plot([v for v, _ in greedy], [g for _, g in greedy], marker="D", color="tab:green",
                 label="held-out, greedy")
    if getattr(result, "base_greedy", None) is not None:
        ax2.axhline(result.base_greedy, color="tab:green", alpha=0.5, linestyle="-.",
                    label=f"base model greedy {result.base_greedy:.3f} (base params)")
    ax2.step(versions, chances, where="mid", color="grey", linestyle=":", label="chance baseline")
    signal = span_signal(result)
    sig = [(p.version, signal[p.version][0]) for p in announced if p.version in signal]
    if sig:
        ax2.plot([v for v, _ in sig], [x for _, x in sig], marker="s", linestyle="--", color="tab:purple",
                 alpha=0.6, label="signal rate (mean over the span's windows)")
    for i, v in enumerate(curriculum_steps(versions, chances)):
        ax2.axvline(v - 0.5, color="tab:orange", alpha=0.6, linestyle="--",
                    label="curriculum: harder params from here" if i == 0 else None)
    for p in result.publications:
        if p.stage != "announced":
            ax2.scatter([p.version], [p.heldout], marker="x", color="red", label=f"{p.stage} candidate (sampled)")
            if getattr(p, "greedy", None) is not None:
                ax2.scatter([p.version], [p.greedy], marker="+", color="red", label=f"{p.stage} candidate (greedy)")
    ax2.set_xlabel("checkpoint version")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_title("held-out per checkpoint: sampled and greedy")
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
