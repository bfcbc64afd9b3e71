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

from rollproof.cli_common import (
    EXIT_CODES_HELP, EXIT_OK, EXIT_REJECTED, VERIFY_EXIT_CODES_HELP, App, Device, Model, OneLineErrors, Threads,
    apply_threads, check_device, check_directory, check_groups_list, check_hex_bytes, check_model, check_ss58, console,
    fail,
)

app = App(cls=OneLineErrors, help="rollproof: verifiable GRPO rollouts for a Bittensor subnet.",
          epilog=EXIT_CODES_HELP + " `verify` also exits 1 when the bundle is rejected.")

EXIT_ACCEPT, EXIT_REJECT = EXIT_OK, EXIT_REJECTED


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
    from rollproof.cli_verify_checkpoint import VERIFY_CHECKPOINT_EXIT_CODES_HELP, verify_checkpoint

    app.command("verify-checkpoint", epilog=VERIFY_CHECKPOINT_EXIT_CODES_HELP)(verify_checkpoint)


def _accepted_networks(local_seed: Optional[str], include_local: bool):
    from verification.drand import PUBLIC_NETWORKS
    from verification.drand_local import DEFAULT_LOCAL_SEED, LocalDrand

    nets = list(PUBLIC_NETWORKS.values())
    if include_local:
        nets.append(LocalDrand(local_seed or DEFAULT_LOCAL_SEED).info)
    return nets


@app.command(epilog=VERIFY_EXIT_CODES_HELP)
def verify(
    bundle: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="bundle file"),
    model: str = Model,
    as_json: bool = typer.Option(False, "--json", help="print the verdict as JSON on stdout"),
    trace: bool = typer.Option(False, "--trace", help="print the verdict and every intermediate value (seeds, checked "
                                                      "groups, per-position logprobs, gaps, sketches and distances) "
                                                      "as JSON on stdout"),
    fingerprint: Optional[str] = typer.Option(None, help="required model fingerprint (hex); default: the loaded model's"),
    netuid: Optional[int] = typer.Option(None, min=0, max=65535, help="netuid the chain expects"),
    window: Optional[int] = typer.Option(None, min=0, help="window the chain expects"),
    hotkey: Optional[str] = typer.Option(None, help="hotkey that committed the bundle on chain"),
    block_hash: Optional[str] = typer.Option(None, help="chain's hash of the window's first block (hex)"),
    block_time: Optional[int] = typer.Option(None, min=0, help="chain's timestamp of the window's first block"),
    groups: Optional[str] = typer.Option(None, help="check only these groups (comma-separated), e.g. the ones a validator opened"),
    local_drand_seed: Optional[str] = typer.Option(None, help="seed of an accepted local drand chain"),
    no_local_drand: bool = typer.Option(False, help="accept only the public drand networks"),
    checkpoints: Optional[Path] = typer.Option(None, "--checkpoints", file_okay=False,
                                               help="a bundle store holding checkpoints: the one the bundle "
                                                    "names is loaded on top of --model (its base)"),
    trainer_hotkey: Optional[str] = typer.Option(None, "--trainer-hotkey",
                                                 help="the chain's trainer key: the checkpoint's manifest must be signed by it"),
    threads: Optional[int] = Threads,
    device: str = Device,
) -> None:
    """Re-run every check on BUNDLE offline and print a verdict per rollout."""
    from adapters.fetch import read_local_file
    from verification.bundle import decode_bundle
    from verification.constants import MAX_BUNDLE_BYTES
    from verification.errors import BundleFormatError
    from verification.verifier import Expectation, Verifier, format_verdict

    apply_threads(threads)
    device = check_device(device)
    check_model(model)
    selected = check_groups_list(groups)
    check_directory(checkpoints, "--checkpoints", must_exist=True)  # read from: it must be there
    check_ss58(trainer_hotkey, "--trainer-hotkey")
    if trainer_hotkey is not None and checkpoints is None:
        fail("--trainer-hotkey checks a checkpoint's signer: it goes with --checkpoints")
    check_ss58(hotkey, "--hotkey")
    check_hex_bytes(fingerprint, "--fingerprint", 32)
    check_hex_bytes(block_hash, "--block-hash", 32)
    # the bundle, then the model: any failure is one line and exit code 2 (cli_common.guarded)
    data = read_local_file(bundle, MAX_BUNDLE_BYTES)  # a FIFO or device is refused, never read blocking
    try:
        parsed, format_error = decode_bundle(data), None
    except BundleFormatError as exc:
        parsed, format_error = None, exc
    outside = [g for g in selected or [] if parsed is not None and g >= parsed.header.n_groups]
    if outside:  # before the model loads: nothing would be checked
        fail(f"--groups: group index {outside[0]} is out of range: the bundle has groups "
             f"0..{parsed.header.n_groups - 1}")
    if format_error is not None:
        verdict = format_verdict(format_error)  # rejected as bytes: no model needed
    else:
        from verification.model import load_model  # torch: only once the arguments and the bundle are read

        with console.status(f"loading model {model} on {device}…"):
            lm = load_model(model, device)
        if checkpoints is not None:
            lm = _checkpoint_model(lm, parsed.header.model_fingerprint, checkpoints, trainer_hotkey)
    if format_error is None:
        from verification.bundle import check_bundle_size

        try:  # the validator's fetch cap for this checkpoint's windows
            check_bundle_size(len(data), generation=lm.generation)
        except BundleFormatError as exc:
            format_error = exc
            verdict = format_verdict(format_error)
    if format_error is None:
        networks = _accepted_networks(local_drand_seed, include_local=not no_local_drand)
        expected = Expectation(
            netuid=netuid, window=window, hotkey=hotkey,
            block_hash=bytes.fromhex(block_hash) if block_hash else None, block_time=block_time,
            fingerprint=bytes.fromhex(fingerprint) if fingerprint else None,
        )
        verifier = Verifier(lm, networks)
        n = parsed.header.n_groups if selected is None else len(selected)
        with _progress() as progress:
            task = progress.add_task("verifying groups", total=n)
            verdict = verifier.verify(parsed, expected, groups=selected,
                                      progress=lambda k: progress.advance(task, k))
    if not any(r.reason != "not_checked" for r in verdict.rollouts) and verdict.ok:
        fail("no group was checked, so there is nothing to accept")  # never ACCEPTED on an empty check
    if trace:
        from verification.trace import trace_bundle

        values = trace_bundle(lm, networks, parsed, verdict.checked_groups) if format_error is None else None
        sys.stdout.write(json.dumps({"verdict": verdict.to_json(), "trace": values}, indent=1) + "\n")
    elif as_json:
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
