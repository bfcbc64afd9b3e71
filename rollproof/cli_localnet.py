"""`rollproof localnet`: the whole subnet on this machine, no network needed."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from rollproof.cli_common import console, setup_logging
from verification.errors import RollproofError


def localnet(
    model: str = typer.Option("smollm2", "--model", help="'smollm2', 'tiny' / 'tiny:SEED' or a local HF model directory"),
    windows: int = typer.Option(2, "--windows", min=1, help="windows to run"),
    groups: int = typer.Option(2, "--groups", min=1, help="GRPO groups per miner per window"),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="where the store and journals go (default: a temporary directory, removed after)"),
    log_level: str = typer.Option("WARNING", "--log-level"),
) -> None:
    """Embedded chain + local drand + bundle store + 2 honest and 4 cheating miners (model swap,
    edited tokens, copycat, replay) + a validator, for a few windows. Prints a table per window,
    the weights and ledger the chain holds, and the offline audit of every fetched bundle.
    Exit code 0 only if honest miners are weighted, every cheater is at zero, the chain holds the
    weights and the ledger entry, and the offline audit agrees with the validator."""
    from rollproof.localnet import run_localnet
    from rollproof.cli_validator import window_table
    from verification.model import load_model

    setup_logging(log_level)
    out = Console(width=max(Console().width, 150))
    tmp = None
    if workdir is None:
        tmp = Path(tempfile.mkdtemp(prefix="rollproof-localnet-"))
    root = workdir or tmp
    try:
        with console.status(f"loading model {model}…"):
            lm = load_model(model)
        out.print(f"model [bold]{lm.name}[/bold] fingerprint {lm.fingerprint.hex()[:16]}…")
        with console.status("running the local network…") as status:
            def event(msg: str) -> None:
                status.update(msg.strip())
                if not msg.startswith("  "):
                    out.print(msg)

            result = run_localnet(lm, root, windows=windows, n_groups=groups, on_event=event,
                                  on_window=lambda res, names: out.print(window_table(res, names)))
    except RollproofError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
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
    for entry in result.ledger:
        out.print(f"ScoreLedger: window {entry['window']} validator uid {entry['validator_uid']} block {entry['block']} "
                  f"verified_root {entry['verified_root'].hex()[:16]}… report {entry['report_hash'].hex()[:16]}…")
    if result.ok:
        out.print("[green bold]OK[/green bold]: honest miners weighted, every cheater at zero, the chain holds the "
                  "weights and the ledger, and the offline audit agrees with the validator")
        return
    for p in result.problems:
        out.print(f"[red]problem:[/red] {p}")
    raise typer.Exit(1)
