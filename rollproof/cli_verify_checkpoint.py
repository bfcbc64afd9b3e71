"""`rollproof verify-checkpoint`: replay a published checkpoint from the trainer's store and the
chain's ledger entries alone (docs/protocol.md section 16)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from rollproof.cli_common import (
    Device, Model, Threads, apply_threads, check_address, check_device, check_directory, check_model, check_ss58,
    console, fail, probe_rpc,
)

VERIFY_CHECKPOINT_EXIT_CODES_HELP = ("Exit codes: 0 the checkpoint replays; 1 it does not (void: the failing step is "
                                     "printed); 2 error: the replay could not run (one line on stderr); 130 interrupted.")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


def _manifest_location(checkpoint: str, store: Optional[Path]) -> tuple[str, list[Path]]:
    """(manifest URI, file roots the fetcher may read)."""
    if _FINGERPRINT.match(checkpoint):
        if store is None:
            fail("a checkpoint named by its fingerprint is looked up in a file store: add --store DIR")
        root = store.expanduser().resolve()
        hits = sorted(root.glob(f"rollproof/*/checkpoints/{checkpoint}/manifest.json"))
        if not hits:
            fail(f"no checkpoint {checkpoint[:16]}… under {root}")
        return hits[0].as_uri(), [root]
    if "://" in checkpoint:
        roots = [store.expanduser().resolve()] if store else []
        if checkpoint.startswith("file://") and not roots:
            path = Path(checkpoint[len("file://"):])
            roots = [path.parents[4]] if len(path.parents) > 4 else [path.parent]
        return checkpoint, roots
    path = Path(checkpoint).expanduser().resolve()
    if not path.is_file():
        fail(f"{checkpoint}: no such manifest file (give a manifest.json path or URI, or a fingerprint with --store)")
    # <store>/rollproof/<netuid>/checkpoints/<fingerprint>/manifest.json: the store root reads the parent too
    root = store.expanduser().resolve() if store else (path.parents[4] if len(path.parents) > 4 else path.parent)
    return path.as_uri(), [root]


def verify_checkpoint(
    checkpoint: str = typer.Argument(..., help="the checkpoint: its manifest.json (path or file://, https://, s3:// "
                                               "URI) or its fingerprint (hex) under --store"),
    store: Optional[Path] = typer.Option(None, "--store", file_okay=False,
                                         help="the trainer's file store (its --store directory)"),
    ledger_file: Optional[Path] = typer.Option(None, "--ledger-file", dir_okay=False,
                                               help="ledger entries, one JSON object a line (`rollproof chain ledger` "
                                                    "or WORKDIR/ledger.jsonl of `rollproof localnet`)"),
    rpc_url: Optional[str] = typer.Option(None, "--rpc-url", help="EVM endpoint holding the ScoreLedger"),
    registry: Optional[str] = typer.Option(None, "--registry", help="SubnetRegistry address (with --rpc-url)"),
    ledger: Optional[str] = typer.Option(None, "--ledger", help="ScoreLedger address (with --rpc-url)"),
    trainer_hotkey: Optional[str] = typer.Option(None, "--trainer-hotkey",
                                                 help="the chain's trainer key: the manifest must be signed by it"),
    model: str = Model,
    as_json: bool = typer.Option(False, "--json", help="print the verdict as JSON on stdout"),
    threads: Optional[int] = Threads,
    device: str = Device,
) -> None:
    """Replay CHECKPOINT: check its training record's every row against the ledger's reports and
    verified roots, re-run the trainer's steps from the parent's adapter and optimizer state,
    re-run the held-out gate, and compare with the announced adapter. Its parents are judged first.
    Prints what it recomputed per step."""
    apply_threads(threads)
    device = check_device(device)
    check_model(model)
    check_directory(store, "--store", must_exist=True)
    check_ss58(trainer_hotkey, "--trainer-hotkey")
    evm = (rpc_url, registry, ledger)
    if ledger_file is None and not all(evm):
        fail("the replay reads the validator's ledger entries: give --ledger-file FILE, or --rpc-url with --registry "
             "and --ledger")
    if ledger_file is not None and any(evm):
        fail("--ledger-file and --rpc-url are two sources of the same entries: give one")
    if ledger_file is not None and not ledger_file.expanduser().is_file():
        fail(f"--ledger-file {ledger_file}: no such file")
    check_address(registry, "--registry")
    check_address(ledger, "--ledger")
    location, roots = _manifest_location(checkpoint, store)

    from adapters.checkpoints import fetch_files
    from adapters.fetch import Fetcher
    from trainer.replay_node import CheckpointReplayer
    from verification.checkpoint import parse_manifest, verify_manifest_signature
    from verification.checkpoint_model import check_file, load_checkpoint
    from verification.constants import MAX_MANIFEST_BYTES
    from verification.errors import CheckpointInvalidError, ReplayMismatchError, RollproofError
    from verification.model import load_model

    try:
        if ledger_file is not None:
            from adapters.ledger_file import LedgerFile

            chain = LedgerFile(ledger_file)
        else:
            from adapters.chain.evm import EVMChain

            probe_rpc(rpc_url)
            chain = EVMChain.connect(rpc_url, registry, ledger)
        fetcher = Fetcher(file_roots=roots)
        data = fetcher.fetch(location, max_bytes=MAX_MANIFEST_BYTES)
        manifest = parse_manifest(data)
        verify_manifest_signature(manifest, trainer_hotkey or manifest.trainer_hotkey)
        files = fetch_files(fetcher, location, manifest)
        for name, blob in files.items():
            check_file(manifest, name, blob)
        with console.status(f"loading model {model} on {device}…"):
            base = _base_for(load_model(model, device), manifest, files)
    except RollproofError as exc:
        fail(str(exc))

    def line(text: str) -> None:
        if not as_json:
            console.print(escape(text), highlight=False)

    verdict: dict = {"fingerprint": manifest.fingerprint, "version": manifest.version,
                     "signed_by": manifest.trainer_hotkey}
    try:
        lm = load_checkpoint(base, manifest, files)
        replayer = CheckpointReplayer(chain, base, fetcher, on_line=line)
        report = replayer.judge(location, data, manifest, files, lm)
    except (ReplayMismatchError, CheckpointInvalidError) as exc:
        verdict |= {"verdict": "void", "reason": exc.code, "detail": str(exc), "step": getattr(exc, "step", None)}
        _print(verdict, as_json)
        raise typer.Exit(1)
    except RollproofError as exc:
        fail(str(exc))
    verdict |= {"verdict": "replayed", "steps": report.steps, "adapter_error": report.adapter_error,
                "optimizer_error": report.optimizer_error, "gate_flips": report.gate_flips,
                "seconds": round(report.seconds, 1), "lines": report.lines,
                "replayed_versions": sorted(r.version for r in replayer.reports.values())}
    _print(verdict, as_json)


def _base_for(lm, manifest, files):
    """The base the checkpoint names: the model's weights under the generation params whose
    fingerprint is the manifest's base_fingerprint (a network may run the base model with its own
    params, e.g. `rollproof localnet --groups 2`): the model's own, with the checkpoint's group
    count, or any params the manifest or its record states."""
    from verification.errors import CheckpointInvalidError
    from verification.training_record import TRAINING_FILE, CandidateEvent, parse_training_record

    tried = [lm.generation, lm.generation.with_groups(manifest.generation.groups), manifest.generation]
    if TRAINING_FILE in files:
        record = parse_training_record(files[TRAINING_FILE])
        tried += [e.generation for e in record.events if isinstance(e, CandidateEvent)]
    for params in tried:
        candidate = lm if params == lm.generation else lm.with_generation(params)
        if candidate.fingerprint.hex() == manifest.base_fingerprint:
            return candidate
    raise CheckpointInvalidError(f"the checkpoint applies to base {manifest.base_fingerprint[:16]}…, which is not "
                                 f"{lm.name} under its own generation params or the checkpoint's: load its base "
                                 f"with --model")


def _print(verdict: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(verdict, sort_keys=True))
        return
    if verdict["verdict"] == "replayed":
        console.print(f"[green bold]REPLAYED[/green bold] v{verdict['version']} {verdict['fingerprint'][:16]}…: "
                      f"{verdict['steps']} steps, adapter within {verdict['adapter_error']:.3g} of the update, "
                      f"optimizer {verdict['optimizer_error']:.3g}, gate flips {verdict['gate_flips']}")
    else:
        console.print(f"[red bold]DOES NOT REPLAY[/red bold] v{verdict['version']} {verdict['fingerprint'][:16]}… "
                      f"({verdict['reason']}): {escape(verdict['detail'])}")
