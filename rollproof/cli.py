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

from rollproof.cli_common import Threads, apply_threads
from verification.errors import RollproofError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rollproof: verifiable GRPO rollouts for a Bittensor subnet.")
console = Console(stderr=True)

EXIT_ACCEPT, EXIT_REJECT, EXIT_ERROR = 0, 1, 2


@app.callback()
def _root() -> None:
    """rollproof: verifiable GRPO rollouts for a Bittensor subnet."""


def _add_role_commands() -> None:
    from rollproof.cli_miner import app as miner_app
    from rollproof.cli_chain import app as chain_app
    from rollproof.cli_localnet import localnet
    from rollproof.cli_trainer import app as trainer_app
    from rollproof.cli_validator import app as validator_app

    app.add_typer(miner_app, name="miner")
    app.add_typer(validator_app, name="validator")
    app.add_typer(trainer_app, name="trainer")
    app.add_typer(chain_app, name="chain")
    app.command()(localnet)


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
    model: str = typer.Option("smollm2", "--model", help="'smollm2', 'tiny' / 'tiny:SEED' or a local HF model directory"),
    as_json: bool = typer.Option(False, "--json", help="print the verdict as JSON on stdout"),
    fingerprint: Optional[str] = typer.Option(None, help="required model fingerprint (hex); default: the loaded model's"),
    netuid: Optional[int] = typer.Option(None, help="netuid the chain expects"),
    window: Optional[int] = typer.Option(None, help="window the chain expects"),
    hotkey: Optional[str] = typer.Option(None, help="hotkey that committed the bundle on chain"),
    block_hash: Optional[str] = typer.Option(None, help="chain's hash of the window's first block (hex)"),
    block_time: Optional[int] = typer.Option(None, help="chain's timestamp of the window's first block"),
    groups: Optional[str] = typer.Option(None, help="check only these groups (comma-separated), e.g. the ones a validator opened"),
    local_drand_seed: Optional[str] = typer.Option(None, help="seed of an accepted local drand chain"),
    no_local_drand: bool = typer.Option(False, help="accept only the public drand networks"),
    checkpoints: Optional[Path] = typer.Option(None, "--checkpoints", file_okay=False,
                                               help="a bundle store holding checkpoints: the one the bundle "
                                                    "names is loaded on top of --model (its base)"),
    trainer_hotkey: Optional[str] = typer.Option(None, "--trainer-hotkey",
                                                 help="the chain's trainer key: the checkpoint's manifest must be signed by it"),
    threads: Optional[int] = Threads,
) -> None:
    """Re-run every check on BUNDLE offline and print a verdict per rollout.

    Exit code 0: every checked rollout accepted; 1: at least one rejected; 2: the audit could not run."""
    from verification.bundle import decode_bundle
    from verification.errors import BundleFormatError
    from verification.model import load_model
    from verification.verifier import Expectation, Verifier, format_verdict

    apply_threads(threads)
    try:
        selected = [int(g) for g in groups.split(",") if g.strip()] if groups else None
        data = bundle.read_bytes()
        try:
            parsed, format_error = decode_bundle(data), None
        except BundleFormatError as exc:
            parsed, format_error = None, exc
        with console.status(f"loading model {model}…"):
            lm = load_model(model)
        if checkpoints is not None and parsed is not None:
            lm = _checkpoint_model(lm, parsed.header.model_fingerprint, checkpoints, trainer_hotkey)
        networks = _accepted_networks(local_drand_seed, include_local=not no_local_drand)
        expected = Expectation(
            netuid=netuid, window=window, hotkey=hotkey,
            block_hash=bytes.fromhex(block_hash) if block_hash else None, block_time=block_time,
            fingerprint=bytes.fromhex(fingerprint) if fingerprint else None,
        )
        verifier = Verifier(lm, networks)
        if format_error is not None:
            verdict = format_verdict(format_error)
        else:
            n = parsed.header.n_groups if selected is None else len(set(selected))
            with _progress() as progress:
                task = progress.add_task("verifying groups", total=n)
                verdict = verifier.verify(parsed, expected, groups=selected,
                                          progress=lambda k: progress.advance(task, k))
    except (RollproofError, ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(EXIT_ERROR) from None
    if as_json:
        sys.stdout.write(json.dumps(verdict.to_json(), indent=1) + "\n")
    else:
        _print_verdict(verdict)
    raise typer.Exit(EXIT_ACCEPT if verdict.ok else EXIT_REJECT)


def _checkpoint_model(base, named: str, store: Path, trainer_hotkey: Optional[str]):
    """The model the bundle names (fingerprint hex): the base itself, or a checkpoint from the
    store on top of it."""
    from adapters.checkpoints import find_checkpoint
    from verification.checkpoint_model import load_checkpoint
    from verification.errors import CheckpointError

    if named == base.fingerprint.hex():
        return base
    manifest, files = find_checkpoint(store, named)
    if trainer_hotkey is not None and manifest.trainer_hotkey != trainer_hotkey:
        raise CheckpointError(f"checkpoint {named[:16]}… is signed by {manifest.trainer_hotkey}, not {trainer_hotkey}")
    lm = load_checkpoint(base, manifest, files)
    console.print(f"checkpoint v{manifest.version} ({named[:16]}…) on base {base.name}, signed by "
                  f"{manifest.trainer_hotkey}{'' if trainer_hotkey else ' (not checked against a chain)'}")
    return lm


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


_add_role_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
