"""`--engine hf|vllm` for the measurement scripts: which engine generates the miner side's
rollouts (the validator side is always the HF recompute).

    add_engine_arguments(ap)             # --engine, --memory-fraction
    check_engine_or_exit(args)           # right after parse_args, before the model loads
    engine = open_engine_or_exit(args, lm)   # None for hf (build_groups' default), else the engine

A name the machine cannot honour (vLLM not installed, a model it cannot load) prints one `error:`
line and exits 2 before anything is generated.
"""

from __future__ import annotations

import sys

from miner.engine_choice import DEFAULT_ENGINE, ENGINES, engine_problem
from miner.engines import open_engine
from verification.errors import EngineError

# vLLM's CPU build reserves this share of the host's memory (small: the measurement machines are shared)
DEFAULT_MEMORY_FRACTION = 0.1


def add_engine_arguments(ap) -> None:
    ap.add_argument("--engine", choices=ENGINES, default=DEFAULT_ENGINE,
                    help="engine that generates the miner side's rollouts (default: hf)")
    ap.add_argument("--memory-fraction", type=float, default=DEFAULT_MEMORY_FRACTION,
                    help="vllm: share of the host's (or GPU's) memory the engine reserves")


def check_engine_or_exit(args) -> None:
    """Before any model loads: one `error:` line and exit 2 where args.engine cannot run here."""
    problem = engine_problem(args.engine)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)


def open_engine_or_exit(args, lm, device: str = "cpu", batch_size: int = 64):
    """The engine of args.engine for lm (None for hf: the callers' default), or one `error:` line and
    exit 2."""
    if args.engine == "hf":
        return None
    try:
        return open_engine(args.engine, lm, batch_size=batch_size, device=device, memory_fraction=args.memory_fraction)
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def engine_suffix(args) -> str:
    """The report name's suffix: '' for hf (the existing reports), '_vllm' otherwise."""
    return "" if args.engine == "hf" else f"_{args.engine}"
