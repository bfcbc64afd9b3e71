"""`rollproof localnet`: the whole subnet on this machine, no network needed."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from rollproof.cli_common import (
    Device, Engine, EngineMemory, MetricsHost, MetricsPort, Model, StatusPort, Threads, apply_threads, check_device,
    check_directory, check_engine, check_model, console, fail, serve_telemetry, setup_logging,
)
from verification.constants import MAX_GROUPS_PER_BUNDLE


def localnet(
    model: str = Model,
    windows: int = typer.Option(4, "--windows", min=1, max=10_000, help="windows to run (a checkpoint announced after the first is in force from the fourth)"),
    groups: int = typer.Option(2, "--groups", min=1, max=MAX_GROUPS_PER_BUNDLE, help="GRPO groups per miner per window: the local base model's generation "
                                                                                        "params get groups = N, so every node of the local network agrees"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="where the store and journals go (default: a temporary directory, removed after)"),
    threads: Optional[int] = Threads,
    device: str = Device,
    engine: str = Engine,
    engine_memory: Optional[float] = EngineMemory,
    train: bool = typer.Option(True, "--train/--no-train", help="run the trainer (checkpoints rotate by window)"),
    dishonest_trainer: Optional[str] = typer.Option(
        None, "--dishonest-trainer",
        help="run a dishonest trainer instead: extra-row (trains on one unverified row a step) or tampered-adapter "
             "(announces a moved adapter); the nodes' replay must void every checkpoint it announces"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="where the learning-curve PNG goes "
                                        "(default: WORKDIR/learning.png, or ./rollproof-learning.png)"),
    metrics_port: Optional[int] = MetricsPort, metrics_host: str = MetricsHost, status_port: Optional[int] = StatusPort,
    log_level: str = typer.Option("WARNING", "--log-level"),
) -> None:
    """Embedded chain + local drand + bundle store + 2 honest and 4 cheating miners (model swap,
    edited tokens, copycat, replay), all generating with --engine, + a validator (HF recompute) + the
    trainer, for a few windows. Prints a table
    per window with the checkpoint in force and the learning signal, the weights and ledger the
    chain holds, the offline audit of every fetched bundle, and the learning curve (also as a PNG).
    Exit code 0 only if honest miners are weighted, every cheater is at zero, the chain holds the
    weights and the ledger entry, and the offline audit agrees with the validator."""
    from rollproof.cli_validator import window_table
    from rollproof.learning_curve import checkpoint_table, curve_table, plot_curve
    from miner.engines import open_engine
    from rollproof.localnet import run_localnet
    from verification.model import load_model

    apply_threads(threads)
    setup_logging(log_level)
    device = check_device(device)
    check_engine(engine)
    check_model(model)
    from adversary.dishonest_trainers import DISHONEST_TRAINERS

    if dishonest_trainer is not None and dishonest_trainer not in DISHONEST_TRAINERS:
        fail(f"--dishonest-trainer {dishonest_trainer}: one of {', '.join(sorted(DISHONEST_TRAINERS))}")
    if dishonest_trainer is not None and not train:
        fail("--dishonest-trainer needs the trainer: drop --no-train")
    check_directory(workdir, "--workdir")  # before the model loads: a file here is one line, exit 2
    if plot is not None and plot.expanduser().is_dir():
        fail(f"--plot {plot}: a directory, not a PNG file path")
    if plot is not None:
        check_directory(plot.expanduser().absolute().parent, "--plot")
    telemetry = serve_telemetry("localnet", metrics_host, metrics_port, status_port)  # bound before the model loads
    out = Console(width=max(Console().width, 150))
    tmp = None
    if workdir is None:
        tmp = Path(tempfile.mkdtemp(prefix="rollproof-localnet-"))
    root = workdir or tmp
    gen_engine = None
    try:
        with console.status(f"loading model {model} on {device}…"):
            lm = load_model(model, device)
        lm = lm.with_generation(lm.generation.with_groups(groups))  # the local network's base: every node agrees
        out.print(f"model [bold]{lm.name}[/bold] fingerprint {lm.fingerprint.hex()[:16]}…")
        with console.status(f"starting the {engine} engine on {device}…"):
            gen_engine = open_engine(engine, lm, device=device, memory_fraction=engine_memory)
        out.print(f"miners generate with the [bold]{engine}[/bold] engine")
        with console.status("running the local network…") as status:
            def event(msg: str) -> None:
                status.update(escape(msg.strip()))
                if not msg.startswith("  "):
                    out.print(escape(msg))

            def show(res, names, info) -> None:
                if res.checkpoint_error:
                    out.print(f"[red]window {res.window} skipped: {escape(res.checkpoint_error)}[/red]")
                    return
                out.print(window_table(res, names))
                out.print(_window_caption(info))

            result = run_localnet(lm, root, windows=windows, n_groups=groups, train=train, on_event=event,
                                  on_window=show, engine=gen_engine, dishonest_trainer=dishonest_trainer,
                                  registry=telemetry.registry, page=telemetry.page.set)
            if train and result.training:
                png = plot_curve(result, plot or (root / "learning.png" if workdir else Path("rollproof-learning.png")))
    finally:
        if gen_engine is not None:
            gen_engine.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    chain_table = Table(title="on chain after the last window")
    for c in ("uid", "miner", "role", "weight (SubnetRegistry)", "offline audit", "validator verdict"):
        chain_table.add_column(c)
    audits = {a["uid"]: a for a in result.audits}
    for uid, (name, kind) in sorted(result.names.items()):
        if kind == "validator":
            continue
        a = audits.get(uid, {})
        mark = "[green]agrees[/green]" if a.get("agrees") else "[red]DISAGREES[/red]"
        chain_table.add_row(str(uid), name, kind, str(result.chain_weights.get(uid, 0)),
                            f"{a.get('offline', '-')} ({mark})", a.get("validator", "-"))
    out.print(chain_table)
    if train and result.training:
        out.print(curve_table(result))
        out.print(checkpoint_table(result))
        out.print(f"learning curve written to {png}")
        if workdir is not None and result.publications:
            out.print(f"replay a checkpoint yourself: rollproof verify-checkpoint FINGERPRINT --store {root / 'store'} "
                      f"--ledger-file {root / 'ledger.jsonl'} --model {model}")
    for entry in result.ledger:
        out.print(f"ScoreLedger: window {entry['window']} validator uid {entry['validator_uid']} block {entry['block']} "
                  f"verified_root {entry['verified_root'].hex()[:16]}… report {entry['report_hash'].hex()[:16]}…")
    if result.ok:
        replay = (f"every checkpoint of the dishonest ({dishonest_trainer}) trainer void" if dishonest_trainer
                  else "every checkpoint announced replays")
        out.print("[green bold]OK[/green bold]: honest miners weighted, every cheater at zero, the chain holds the "
                  f"weights and the ledger, the offline audit agrees with the validator, {replay}")
        return
    for p in result.problems:
        out.print(f"[red]problem:[/red] {escape(p)}")
    raise typer.Exit(1)


def _window_caption(info: dict) -> str:
    version = info.get("version")
    parts = [f"checkpoint in force: {'v' + str(version) if version is not None else '?'} "
             f"({info.get('fingerprint', '')[:16]}…)"]
    rec = info.get("training")
    if rec is not None:
        parts.append(f"signal rate {rec.signal_rate:.0%} of {rec.groups} groups")
        parts.append(f"mean reward {rec.mean_reward:.3f}")
        step = rec.step
        parts.append("step applied" if step and step["applied"] else f"no step ({escape(rec.note or 'skipped')})")
    pub = info.get("publication")
    if pub is not None:
        if pub.stage == "announced":
            greedy = ("" if pub.greedy is None else
                      f"; greedy {pub.greedy:.3f} vs parent {pub.parent_greedy:.3f}")
            parts.append(f"[green]v{pub.version} announced for window {pub.from_window}[/green] (held-out "
                         f"{pub.heldout:.3f} vs parent {pub.parent_heldout:.3f}{greedy}, chance {pub.chance:.3f})")
        else:
            parts.append(f"[yellow]v{pub.version} {pub.stage}[/yellow]: {escape(pub.note)}")
    return " · ".join(parts)
