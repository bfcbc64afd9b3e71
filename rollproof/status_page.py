"""The node's status page: one read-only HTML page per role (and one for `rollproof localnet`),
drawn from the journals the node already keeps (miner/status.py, validator/status.py,
trainer/status.py), served beside the metrics (adapters/telemetry_http.py calls the page callable).

- miner: the current window; what it committed per window (stage, groups, tokens, bundle hash,
  where it went) and, where a validator's report is at hand (localnet), how it was scored.
- validator: the current window and checkpoint; the last windows with each miner's verdict,
  reason, score and weight, and the weight set each window's scores went into.
- trainer and localnet: the learning curve as an inline SVG (held-out reward per checkpoint with
  the parent's and the chance baseline; signal rate and mean reward per window) and the checkpoint
  table (version, stage, held-out, from window, bytes, replay).

HTML with a small inline style sheet and `<meta http-equiv="refresh">`, no JavaScript. Every
journal string is escaped (journals hold what the network sent: hotkeys, reasons, details), and the
page shows nothing the journals do not hold publicly: no keys or credentials (URLs lose user
info, query and fragment), no absolute paths (a path inside the state directory is shown relative
to it, any other path by its last name only). A render reads at most the last `last` windows and
checkpoints, and its bytes are kept for `cache_seconds`, so a flood of requests costs one render.
A journal file that is missing or half-written renders as a note, never an exception."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from miner.status import MinerSnapshot, miner_snapshot
from trainer.publication import Publication
from trainer.status import TrainedWindow, TrainerSnapshot, trainer_snapshot
from validator.status import MinerVerdict, ValidatorSnapshot, validator_snapshot
from verification.errors import ConfigError

DEFAULT_LAST = 12  # windows (and checkpoints) a page shows
CACHE_SECONDS = 2.0
REFRESH_SECONDS = 10
WEIGHT_MAX = 65535

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em;color:#1d2733;background:#f7f8fa}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em;color:#234}
.summary{display:flex;gap:1em;flex-wrap:wrap}.summary div{background:#fff;border:1px solid #d5dbe3;
border-radius:6px;padding:.5em .9em}.summary b{display:block;font-size:1.3em;color:#0b5cad}
table{border-collapse:collapse;background:#fff;margin:.3em 0;font-size:.9em}
th,td{border:1px solid #d5dbe3;padding:.25em .55em;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#e8eef6}td.t{text-align:left}td.w{text-align:left;white-space:normal;min-width:14em;
max-width:36em;overflow-wrap:anywhere}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#6b7785}
.notes{background:#fff4e5;border:1px solid #f0c36d;padding:.4em .9em;border-radius:6px}
code{font-size:.95em}svg{background:#fff;border:1px solid #d5dbe3;border-radius:6px}
"""

# ---- what may be shown ------------------------------------------------------------------------

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_ABS_PATH = re.compile(r"(?<![\w.:/~-])~?/(?:[^\s/'\"<>]+/)+[^\s/'\"<>]*")


def public_location(location: str, root: Path) -> str:
    """A bundle's or file's location as the page may show it: a file inside the state directory
    relative to it, any other local file by its name, a URL without user info, query or fragment
    (a presigned URL's signature is a credential)."""
    if not location:
        return ""
    if location.startswith("file://") or location.startswith("/"):
        path = urlsplit(location).path if location.startswith("file://") else location
        return _public_path(path, root)
    try:
        parts = urlsplit(location)
    except ValueError:
        return "(unparsable location)"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _public_path(path: str, root: Path) -> str:
    try:
        rel = Path(path).expanduser().resolve().relative_to(Path(root).expanduser().resolve())
        return rel.as_posix() or "."
    except (ValueError, OSError, RuntimeError):
        name = Path(path).name
        return f"…/{name}" if name else "…"


def scrub(text: str, root: Path) -> str:
    """Free text from a journal (a reason's detail, a trainer's note) with every URL and absolute
    path in it made public as public_location does."""
    text = _URL.sub(lambda m: public_location(m.group(0), root), text)
    return _ABS_PATH.sub(lambda m: _public_path(m.group(0), root), text)


class _Html:
    """Escaping helpers bound to the state directory whose paths may be shown."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def text(self, value) -> str:
        return html.escape(scrub(str(value), self.root))

    def loc(self, location: str) -> str:
        return html.escape(public_location(location, self.root))

    def short(self, value: str, n: int = 12) -> str:
        """A hash or hotkey cut to n characters (the full text in the title attribute)."""
        value = scrub(str(value), self.root)
        cut = value[:n] + ("…" if len(value) > n else "")
        return f'<code title="{html.escape(value)}">{html.escape(cut)}</code>' if value else "-"


def _verdict_class(reason: str) -> str:
    return "ok" if reason == "ok" else "bad"


def _share(weight: int, total: int) -> str:
    return f"{weight} ({weight / total:.0%})" if total else str(weight)


def _table(table_id: str, headers: Iterable[str], rows: list[str], empty: str) -> str:
    headers = list(headers)
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(rows) if rows else f'<tr><td class="t muted" colspan="{len(headers) or 1}">{empty}</td></tr>'
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---- sections ---------------------------------------------------------------------------------

def _summary(items: list[tuple[str, str]]) -> str:
    return '<div class="summary">' + "".join(f'<div><span class="muted">{k}</span><b>{v}</b></div>'
                                             for k, v in items) + "</div>"


def _version_of(fingerprint: str, versions: Mapping[str, int], h: _Html) -> str:
    v = versions.get(fingerprint)
    return f"v{v}" if v is not None else h.short(fingerprint)


def _validator_section(snap: ValidatorSnapshot, h: _Html, versions: Mapping[str, int],
                       names: Mapping[int, str] | None = None) -> str:
    rows = []
    for w in snap.windows:
        total = sum(m.weight for m in w.miners)
        ok = sum(1 for m in w.miners if m.reason == "ok")
        if w.weight_set is not None:
            combines = ", ".join(map(str, w.weight_set.windows))
            weights = f"set in this window (combines {combines})"
        elif w.counted_in is not None:
            weights = "counted" if w.counted_in == w.window else f"counted in window {w.counted_in}"
        else:
            weights = "-"
        extra = f"<br><span class=\"bad\">{h.text(w.checkpoint_error)}</span>" if w.checkpoint_error else ""
        miners_text = f"{ok} ok of {len(w.miners)}" if w.miners else f"{w.outcomes} verified so far"
        rows.append(f'<tr class="window" data-window="{w.window}"><td>{w.window}</td>'
                    f'<td class="t w">{h.text(w.stage)}{extra}</td>'
                    f"<td class=\"t\">{_version_of(w.model_fingerprint, versions, h)}</td><td>{miners_text}</td>"
                    f'<td class="t">{weights}</td></tr>')
        for m in w.miners:
            name = f" ({h.text(names[m.uid])})" if names and m.uid in names else ""
            verdict = "" if m.verdict in ("", m.reason) else f" (verdict {h.text(m.verdict)})"
            weight = f"weight {_share(m.weight, total)}"
            if w.weight_set is not None and m.uid in w.weight_set.weights:
                weight += f", set {_share(w.weight_set.weights[m.uid], sum(w.weight_set.weights.values()))}"
            detail = f'<br><span class="muted">{h.text(m.detail)}</span>' if m.detail else ""
            rows.append(f'<tr class="miner" data-window="{w.window}" data-uid="{m.uid}">'
                        f'<td class="muted">{w.window}</td><td class="t">uid {m.uid}{name} {h.short(m.hotkey, 10)}</td>'
                        f'<td class="t {_verdict_class(m.reason)}">{h.text(m.reason)}{verdict}</td>'
                        f'<td>score {m.score}, {m.credited_rollouts} rows</td>'
                        f'<td class="t w">{weight}{detail}</td></tr>')
    return ("<h2>Validator: the last windows, verdicts and weights</h2>"
            + _table("validator-windows", ["window", "stage / miner", "checkpoint / verdict", "miners / score",
                                           "weights"], rows, "no window scored yet"))


def _miner_rows(snap: MinerSnapshot, h: _Html, scored: Mapping[str, tuple[int, MinerVerdict]],
                label: str = "") -> list[str]:
    rows = []
    for w in snap.windows:
        verdict = scored.get(w.bundle_hash) if w.bundle_hash else None
        said = []
        if verdict is not None:  # the local validator's report (localnet)
            total, m = verdict
            said.append(f'<span class="{_verdict_class(m.reason)}">{h.text(m.reason)}</span>, score {m.score}, '
                        f"weight {_share(m.weight, total)}")
        for v in snap.scores.get(w.window, ()):  # the validators' ledger entries on chain
            share = "" if v.score_share is None else f" ({v.score_share:.0%})"
            said.append(f'validator {v.validator_uid}: <span class="{"ok" if v.score else "bad"}">score '
                        f"{v.score if v.score is not None else '-'}</span>{share}")
        said = "<br>".join(said) or '<span class="muted">-</span>'
        lead = f'<td class="t">{label}</td>' if label else ""
        rows.append(f'<tr class="mined" data-window="{w.window}">{lead}<td>{w.window}</td>'
                    f'<td class="t {"bad" if w.stage in ("missed", "unreadable") else ""}">{h.text(w.stage)}</td>'
                    f"<td>{w.n_groups}</td><td>{w.n_tokens}</td><td class=\"t\">{h.short(w.bundle_hash)}</td>"
                    f'<td class="t w">{h.loc(w.location)}</td><td class="t w">{said}</td>'
                    f'<td class="t w">{h.text(w.detail)}</td></tr>')
    return rows


def _standing_table(snap: MinerSnapshot, h: _Html) -> str:
    rows = [f'<tr class="standing" data-validator="{v.validator_uid}"><td>{v.validator_uid}</td><td class="t">'
            f'{h.short(v.hotkey, 10)}</td><td>{v.scored_window if v.scored_window is not None else "-"}</td>'
            f'<td>{"-" if v.score_share is None else f"{v.score_share:.1%}"}</td><td>{v.weight}</td>'
            f"<td>{v.weight_share:.1%}</td></tr>" for v in snap.standing]
    return _table("validators", ["validator uid", "hotkey", "newest scored window", "score share", "weight",
                                 "weight share"], rows, "no validator read yet")


MINER_HEADERS = ["window", "stage", "groups", "tokens", "bundle", "location", "validator said", "detail"]


def _scored_by_bundle(snap: ValidatorSnapshot | None) -> dict[str, tuple[int, MinerVerdict]]:
    """bundle hash -> (the window's total weight, the validator's verdict on it)."""
    out = {}
    for w in snap.windows if snap else ():
        total = sum(m.weight for m in w.miners)
        for m in w.miners:
            if m.bundle_hash:
                out[m.bundle_hash] = (total, m)
    return out


def _trainer_windows(windows: tuple[TrainedWindow, ...], h: _Html) -> str:
    rows = []
    for w in windows:
        if w.applied:
            step = f'<span class="ok">applied</span>: grad {w.grad_norm or 0:.2f}, kl {w.approx_kl or 0:.4f}'
        elif w.applied is False:
            step = f'<span class="bad">skipped</span>: {h.text(w.step_reason)}'
        else:
            step = f'<span class="muted">no step</span>: {h.text(w.step_reason)}'
        rows.append(f'<tr class="trained" data-window="{w.window}"><td>{w.window}</td><td>{w.rows}</td>'
                    f"<td>{w.groups}</td>"
                    f"<td>{w.signal_rate:.0%}</td><td>{w.mean_reward:.3f}</td><td>{w.dropped_stale}</td>"
                    f'<td class="t w">{step}</td></tr>')
    return _table("trainer-windows", ["window", "rows trained", "groups", "signal rate", "mean reward",
                                      "stale rows dropped", "step"], rows, "no window trained yet")


def _checkpoint_table(cps: tuple[Publication, ...], h: _Html, replays: Mapping[str, str]) -> str:
    rows = []
    for c in cps:
        replay = replays.get(c.fingerprint, "-" if c.stage != "announced" else "not judged here")
        stage_class = "ok" if c.stage == "announced" else "bad" if c.stage in ("withheld", "expired") else ""
        rows.append(f'<tr class="checkpoint" data-version="{c.version}"><td>v{c.version}</td>'
                    f'<td class="t {stage_class}">{h.text(c.stage)}</td><td>{c.heldout:.3f}</td>'
                    f"<td>{c.parent_heldout:.3f}</td><td>{c.difference:+.3f} ± {c.half_width:.3f}</td>"
                    f'<td class="greedy">{_acc(c.greedy)}</td><td>{_acc(c.parent_greedy)}</td>'
                    f"<td>{c.chance:.3f}</td><td>{c.from_window}</td><td>{c.bytes:,}</td>"
                    f'<td class="t">{h.short(c.fingerprint)}</td><td class="t w">{h.text(replay)}</td>'
                    f'<td class="t w">{h.text(c.note)}</td></tr>')
    return _table("checkpoints", ["version", "stage", "held-out (sampled)", "parent", "difference", "greedy",
                                  "parent greedy", "chance", "from window",
                                  "bytes", "fingerprint", "replay", "note"], rows, "no checkpoint built yet")


def _acc(x: float | None) -> str:
    """A greedy accuracy, or "-" where the journal predates it."""
    return "-" if x is None else f"{x:.3f}"


def _trainer_section(snap: TrainerSnapshot, h: _Html, replays: Mapping[str, str]) -> str:
    return ("<h2>Learning curve</h2>" + learning_curve_svg(snap.checkpoints, snap.windows)
            + "<h2>Checkpoints</h2>" + _checkpoint_table(snap.checkpoints, h, replays)
            + "<h2>Trained windows</h2>" + _trainer_windows(snap.windows, h))


# ---- the learning curve -----------------------------------------------------------------------

_PANEL_W, _PANEL_H, _PAD = 400, 294, 40
_PLOT_H = _PANEL_H - _PAD - 90  # below the plot: x ticks, the x label, the legend (up to 3 rows of 2)
_COLOURS = {"heldout": "#1f6fd1", "greedy": "#0b8043", "parent": "#7aa6e0", "chance": "#8a8f98", "withheld": "#d93025",
            "signal": "#e37400", "reward": "#188038"}


def _panel(x0: int, title: str, x_label: str, series: list[tuple[str, str, list[tuple[float, float]], str]],
           marks: list[tuple[float, float]]) -> str:
    """One panel: y from 0 to 1; series (key, label, points, dash) as polylines with dots; marks as
    crosses; the legend under the x axis."""
    xs = [x for _, _, pts, _ in series for x, _ in pts] + [x for x, _ in marks]
    lo, hi = (min(xs), max(xs)) if xs else (0, 1)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    w, hgt = _PANEL_W - _PAD - 16, _PLOT_H
    bottom = _PAD + hgt

    def px(x: float) -> float:
        return x0 + _PAD + (x - lo) / (hi - lo) * w

    def py(y: float) -> float:
        return _PAD + (1 - max(0.0, min(1.0, y))) * hgt

    out = [f'<g class="panel"><text x="{x0 + _PANEL_W / 2:.0f}" y="20" text-anchor="middle" font-size="13" '
           f'font-weight="600">{title}</text>',
           f'<rect x="{x0 + _PAD}" y="{_PAD}" width="{w}" height="{hgt}" fill="#fbfcfe" stroke="#c4ccd6"/>']
    for t in (0, 0.25, 0.5, 0.75, 1):
        out.append(f'<line x1="{x0 + _PAD}" x2="{x0 + _PAD + w}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#e3e7ed"/>'
                   f'<text x="{x0 + _PAD - 4}" y="{py(t) + 4:.1f}" text-anchor="end" font-size="10">{t:g}</text>')
    for t in sorted({round(lo + (hi - lo) * i / 4) for i in range(5)}):
        if lo <= t <= hi:
            out.append(f'<text x="{px(t):.1f}" y="{bottom + 14}" text-anchor="middle" font-size="10">{t}</text>')
    out.append(f'<text x="{x0 + _PAD + w / 2:.0f}" y="{bottom + 30}" text-anchor="middle" font-size="11">'
               f"{x_label}</text>")
    for key, _label, pts, dash in series:
        if not pts:
            continue
        colour = _COLOURS[key]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline class="{key}" points="{coords}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"{dashes}/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts]
    for x, y in marks:
        cx, cy = px(x), py(y)
        out.append(f'<path class="withheld" d="M{cx - 4:.1f},{cy - 4:.1f}L{cx + 4:.1f},{cy + 4:.1f}'
                   f'M{cx - 4:.1f},{cy + 4:.1f}L{cx + 4:.1f},{cy - 4:.1f}" stroke="{_COLOURS["withheld"]}" '
                   f'stroke-width="2"/>')
    legend = [(key, label) for key, label, _pts, _dash in series]
    if marks:
        legend.append(("withheld", "withheld / expired"))
    for i, (key, label) in enumerate(legend):
        lx, ly = x0 + _PAD + (i % 2) * (w / 2), bottom + 48 + (i // 2) * 14
        out.append(f'<rect x="{lx:.0f}" y="{ly - 8}" width="10" height="10" fill="{_COLOURS[key]}"/>'
                   f'<text x="{lx + 14:.0f}" y="{ly + 1}" font-size="11">{label}</text>')
    return "".join(out) + "</g>"


def learning_curve_svg(checkpoints: Iterable[Publication], windows: Iterable[TrainedWindow]) -> str:
    """Two panels: held-out reward per checkpoint version (announced ones, sampled and greedy where
    journaled; the parent's sampled reward on the same problems; the chance baseline; withheld and expired candidates as red crosses) and,
    per trained window, the signal rate and the mean reward of the verified rows."""
    cps = sorted(checkpoints, key=lambda c: c.version)
    announced = [c for c in cps if c.stage == "announced"]
    heldout = [(float(c.version), c.heldout) for c in announced]
    if announced:  # the oldest announced checkpoint's parent, on its problems: the point before it
        first = announced[0]
        heldout.insert(0, (float(first.version - 1), first.parent_heldout))
    parent = [(float(c.version), c.parent_heldout) for c in announced]
    greedy = [(float(c.version), c.greedy) for c in announced if c.greedy is not None]
    if announced and announced[0].parent_greedy is not None:
        greedy.insert(0, (float(announced[0].version - 1), announced[0].parent_greedy))
    chance = [(float(c.version), c.chance) for c in cps]
    marks = [(float(c.version), c.heldout) for c in cps if c.stage in ("withheld", "expired")]
    ws = sorted(windows, key=lambda w: w.window)
    left = _panel(0, "held-out reward per checkpoint", "checkpoint version",
                  [("heldout", "held-out, sampled", heldout, ""), ("greedy", "held-out, greedy", greedy, ""),
                   ("parent", "its parent's (sampled)", parent, "5 3"),
                   ("chance", "chance baseline", chance, "2 3")], marks)
    right = _panel(_PANEL_W, "rollouts per trained window", "window",
                   [("signal", "signal rate", [(float(w.window), w.signal_rate) for w in ws], ""),
                    ("reward", "mean reward", [(float(w.window), w.mean_reward) for w in ws], "5 3")], [])
    return (f'<svg id="learning-curve" xmlns="http://www.w3.org/2000/svg" width="{2 * _PANEL_W}" height="{_PANEL_H}" '
            f'viewBox="0 0 {2 * _PANEL_W} {_PANEL_H}" role="img" aria-label="learning curve">'
            f"<title>learning curve</title>{left}{right}</svg>")


# ---- pages ------------------------------------------------------------------------------------

def _notes(notes: Iterable[str], h: _Html) -> str:
    notes = list(notes)
    if not notes:
        return ""
    return ('<div class="notes" id="notes"><b>Journal files not shown</b> (missing or half-written; the next '
            "refresh reads them again):<ul>" + "".join(f"<li>{h.text(n)}</li>" for n in notes) + "</ul></div>")


def _document(title: str, body: str) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            f'<h1>{html.escape(title)}</h1><p class="muted">read from the node\'s journals at {now}; '
            f"refreshes every {REFRESH_SECONDS} s</p>{body}</body></html>")


def _miner_body(root: Path, h: _Html, last: int, replays: Mapping[str, str]) -> str:
    snap = miner_snapshot(root, last=last)
    cur = snap.current
    timing = (f"{snap.generation_blocks} blocks ({h.text(snap.engine)})" if snap.generation_blocks is not None
              else "not measured yet")
    checkpoint = (f"{h.short(snap.model_fingerprint)} (window {snap.fingerprint_window})" if snap.model_fingerprint
                  else "-")
    items = [("current window", str(cur.window) if cur else "-"), ("its stage", h.text(cur.stage) if cur else "-"),
             ("checkpoint of its newest bundle", checkpoint), ("last generation", timing),
             ("windows skipped since", str(snap.skipped_windows))]
    if snap.uid is not None:
        weight = sum(v.weight_share for v in snap.standing) / len(snap.standing) if snap.standing else 0.0
        items = [("uid", str(snap.uid))] + items + [("weight share (mean over validators)", f"{weight:.1%}")]
    read_in = "-" if snap.read_in_window is None else snap.read_in_window
    return (_summary(items) + _notes(snap.notes, h)
            + "<h2>Windows: what this miner committed and how validators scored it</h2>"
            + _table("miner-windows", MINER_HEADERS, _miner_rows(snap, h, {}), "no window journaled yet")
            + f"<h2>Validators now (read in window {read_in})</h2>" + _standing_table(snap, h))


def _validator_body(root: Path, h: _Html, last: int, replays: Mapping[str, str]) -> str:
    snap = validator_snapshot(root, last=last)
    cur = snap.current
    return (_summary([("current window", str(cur.window) if cur else "-"),
                      ("its stage", h.text(cur.stage) if cur else "-"),
                      ("checkpoint", h.short(snap.model_fingerprint))])
            + _notes(snap.notes, h) + _validator_section(snap, h, {}))


def _trainer_body(root: Path, h: _Html, last: int, replays: Mapping[str, str]) -> str:
    snap = trainer_snapshot(root, last=last)
    cur = snap.current
    return (_summary([("newest trained window", str(snap.newest_window) if snap.windows else "-"),
                      ("checkpoint in force", f"v{cur.version} from window {cur.from_window}" if cur else "base"),
                      ("its held-out reward", f"{cur.heldout:.3f}" if cur else "-")])
            + _notes(snap.notes, h) + _trainer_section(snap, h, replays))


_BODIES = {"miner": _miner_body, "validator": _validator_body, "trainer": _trainer_body}
ROLES = tuple(_BODIES)


def _check_role(role: str) -> None:
    if role not in _BODIES:
        raise ConfigError(f"no status page for role {role!r} (roles: {', '.join(ROLES)})")


def render_role(role: str, state_dir: Path, *, title: str | None = None, last: int = DEFAULT_LAST,
                replays: Mapping[str, str] | None = None) -> str:
    """The page of one role's node whose journals are under state_dir, as HTML text."""
    _check_role(role)
    root = Path(state_dir).expanduser()
    return _document(title or f"rollproof {role}", _BODIES[role](root, _Html(root), last, replays or {}))


def render_localnet(workdir: Path, *, title: str | None = None, last: int = DEFAULT_LAST,
                    replays: Mapping[str, str] | None = None) -> str:
    """The page of a `rollproof localnet` work directory (rollproof/localnet.py's layout:
    validator/, trainer/, miners/<name>/): all three roles on one page."""
    root = Path(workdir).expanduser()
    h = _Html(root)
    val = validator_snapshot(root / "validator", last=last)
    tr = trainer_snapshot(root / "trainer", last=last)
    versions = tr.versions()
    notes = [f"validator/{n}" for n in val.notes] + [f"trainer/{n}" for n in tr.notes]
    cur = val.current
    cp = tr.current
    body = _summary([("current window", str(cur.window) if cur else "-"),
                     ("its stage", h.text(cur.stage) if cur else "-"),
                     ("checkpoint of the window", _version_of(val.model_fingerprint, versions, h)),
                     ("newest checkpoint", f"v{cp.version} from window {cp.from_window}" if cp else "base"),
                     ("its held-out reward", f"{cp.heldout:.3f}" if cp else "-")])
    scored = _scored_by_bundle(val)
    miner_rows, names = [], {}
    for name in _miner_names(root / "miners", notes):
        snap = miner_snapshot(root / "miners" / name, last=last)
        notes += [f"miners/{name}/{n}" for n in snap.notes]
        miner_rows += _miner_rows(snap, h, scored, label=h.text(name))
        names.update({scored[w.bundle_hash][1].uid: name for w in snap.windows if w.bundle_hash in scored})
    body += _notes(notes, h)
    body += _trainer_section(tr, h, replays or {})
    body += _validator_section(val, h, versions, names)
    body += "<h2>Miners: what each committed and how the validator scored it</h2>" + _table(
        "miner-windows", ["miner"] + MINER_HEADERS, miner_rows, "no miner journal yet")
    return _document(title or "rollproof localnet", body)


MAX_MINERS = 64


def _miner_names(directory: Path, notes: list[str]) -> list[str]:
    try:
        names = sorted(p.name for p in directory.iterdir() if p.is_dir() and (p / "windows").is_dir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        notes.append(f"miners: cannot be listed ({exc.strerror or type(exc).__name__})")
        return []
    return names[:MAX_MINERS]


class CachedPage:
    """A page callable: the rendered bytes, kept for `seconds`; concurrent callers while a render
    runs wait for it (one lock), so a flood of requests costs one render."""

    def __init__(self, render: Callable[[], str], seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._render, self._seconds, self._clock = render, seconds, clock
        self._lock = threading.Lock()
        self._bytes: bytes | None = None
        self._at = 0.0
        self.renders = 0

    def __call__(self) -> bytes:
        with self._lock:
            now = self._clock()
            if self._bytes is None or now - self._at >= self._seconds:
                self._bytes = self._render().encode("utf-8")
                self._at = now
                self.renders += 1
            return self._bytes


def page_for(role: str, state_dir: Path, *, title: str | None = None, last: int = DEFAULT_LAST,
             replays: Callable[[], Mapping[str, str]] | None = None, cache_seconds: float = CACHE_SECONDS,
             clock: Callable[[], float] = time.monotonic) -> CachedPage:
    """The status page callable of a role's node (HTML bytes). replays: the node's replay verdicts
    (fingerprint hex -> text), which no journal holds; absent, the checkpoint table says "not judged here"."""
    _check_role(role)
    return CachedPage(lambda: render_role(role, state_dir, title=title, last=last,
                                          replays=replays() if replays else None), cache_seconds, clock)


def localnet_page(workdir: Path, *, title: str | None = None, last: int = DEFAULT_LAST,
                  replays: Callable[[], Mapping[str, str]] | None = None, cache_seconds: float = CACHE_SECONDS,
                  clock: Callable[[], float] = time.monotonic) -> CachedPage:
    """The status page callable of a `rollproof localnet` run in workdir."""
    return CachedPage(lambda: render_localnet(workdir, title=title, last=last,
                                              replays=replays() if replays else None), cache_seconds, clock)
