"""The `rollproof` command: one console script, sub-commands per role."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from verification.errors import RollproofError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rollproof: verifiable GRPO rollouts for a Bittensor subnet.")
console = Console(stderr=True)

EXIT_ACCEPT, EXIT_REJECT, EXIT_ERROR = 0, 1, 2


@app.callback()
def _root() -> None:
    """rollproof: verifiable GRPO rollouts for a Bittensor subnet."""


def _accepted_networks(local_seed: Optional[str], include_local: bool):
    from verification.drand import PUBLIC_NETWORKS
    from verification.drand_local import DEFAULT_LOCAL_SEED, LocalDrand

    nets = list(PUBLIC_NETWORKS.values())
    if include_local:
        nets.append(LocalDrand(local_seed or DEFAULT_LOCAL_SEED).info)
    return nets


@app.command()
def verify(
    bundle: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="bundle file"),
    model: str = typer.Option("smollm2", "--model", help="'smollm2', 'tiny[:SEED]' or a local HF model directory"),
    as_json: bool = typer.Option(False, "--json", help="print the verdict as JSON on stdout"),
    fingerprint: Optional[str] = typer.Option(None, help="required model fingerprint (hex); default: the loaded model's"),
    window: Optional[int] = typer.Option(None, help="window the chain expects"),
    hotkey: Optional[str] = typer.Option(None, help="hotkey that committed the bundle on chain"),
    block_hash: Optional[str] = typer.Option(None, help="chain's hash of the window's first block (hex)"),
    block_time: Optional[int] = typer.Option(None, help="chain's timestamp of the window's first block"),
    local_drand_seed: Optional[str] = typer.Option(None, help="seed of an accepted local drand chain"),
    no_local_drand: bool = typer.Option(False, help="accept only the public drand networks"),
) -> None:
    """Re-run every check on BUNDLE offline and print a verdict per rollout.

    Exit code 0: every rollout accepted; 1: at least one rejected; 2: the audit could not run."""
    from verification.bundle import decode_bundle
    from verification.errors import BundleFormatError
    from verification.model import load_model
    from verification.verifier import Expectation, Verifier

    try:
        data = bundle.read_bytes()
        with console.status(f"loading model {model}…"):
            lm = load_model(model)
        networks = _accepted_networks(local_drand_seed, include_local=not no_local_drand)
        expected = Expectation(
            window=window, hotkey=hotkey,
            block_hash=bytes.fromhex(block_hash) if block_hash else None, block_time=block_time,
            fingerprint=bytes.fromhex(fingerprint) if fingerprint else None,
        )
        verifier = Verifier(lm, networks)
        try:
            parsed = decode_bundle(data)
        except BundleFormatError:
            verdict = verifier.verify_bytes(data, expected)  # the format verdict, with its reason
        else:
            with _progress() as progress:
                task = progress.add_task("verifying groups", total=parsed.header.n_groups)
                verdict = verifier.verify(parsed, expected, progress=lambda n: progress.advance(task, n))
    except (RollproofError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    if as_json:
        sys.stdout.write(json.dumps(verdict.to_json(), indent=1) + "\n")
    else:
        _print_verdict(verdict)
    raise typer.Exit(EXIT_ACCEPT if verdict.ok else EXIT_REJECT)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _print_verdict(verdict) -> None:
    out = Console()
    table = Table(title=f"bundle of {verdict.hotkey} for window {verdict.window}")
    for col in ("group", "rollout", "verdict", "reason", "detail"):
        table.add_column(col)
    for r in verdict.rollouts:
        mark = "[green]accept[/green]" if r.ok else ("[dim]skip[/dim]" if r.reason == "not_checked" else "[red]reject[/red]")
        table.add_row(str(r.group), str(r.rollout), mark, r.reason, r.detail)
    if verdict.rollouts:
        out.print(table)
    status = "[green]ACCEPTED[/green]" if verdict.ok else f"[red]REJECTED[/red] ({verdict.reason}: {verdict.detail})"
    out.print(f"bundle {status}; {verdict.n_rejected} of {len(verdict.rollouts)} rollouts rejected")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
