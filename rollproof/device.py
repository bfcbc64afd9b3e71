"""`--device cpu|cuda|cuda:N`: the one check every command and measurement script runs on the
torch device it is asked for, before any work (no model is loaded onto a device that is not there).

The rule the protocol fixes does not change with the device: float32 weights and TF32 off
(verification/model.py), so a miner on a GPU and a validator on a CPU compare the same numbers
within the tolerances of docs/security.md."""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from verification.errors import ConfigError

DEVICE_HELP = "torch device: cpu, cuda (the current GPU) or cuda:N (GPU N); float32, TF32 off, on any of them"
_FORM = re.compile(r"cpu|cuda|cuda:(0|[1-9][0-9]{0,3})")


class DeviceError(ConfigError):
    """A --device value that is malformed or names a device this machine does not have."""


def resolve_device(spec: str, flag: str = "--device") -> str:
    """`spec` if it is cpu, cuda or cuda:N and this torch sees that device; DeviceError (one line,
    naming the flag and what is there) otherwise. torch is imported only for a cuda device."""
    if not isinstance(spec, str) or not _FORM.fullmatch(spec):
        raise DeviceError(f"{flag} {spec}: use cpu, cuda or cuda:N (N the index of a CUDA GPU)")
    if spec == "cpu":
        return spec
    import torch

    if not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise DeviceError(f"{flag} {spec}: no CUDA GPU is available here (torch.cuda.is_available() is False; "
                          f"torch {torch.__version__}, {built}): use {flag} cpu")
    count = torch.cuda.device_count()
    index = int(spec.partition(":")[2] or torch.cuda.current_device())
    if index >= count:
        raise DeviceError(f"{flag} {spec}: this machine has {count} CUDA GPU{'s' if count != 1 else ''} "
                          f"(cuda:0..cuda:{count - 1})")
    return spec


def add_device_argument(parser) -> None:
    """--device on a script's argparse parser; check the parsed value with device_or_exit."""
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)


def device_name(device: str) -> str:
    """What a report records: 'cpu', or the GPU's name after the device (a resolved device)."""
    if device == "cpu":
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"


def device_or_exit(spec: str, flag: str = "--device") -> str:
    """For the scripts (argparse): resolve_device, or one `error:` line on stderr and exit code 2."""
    try:
        return resolve_device(spec, flag)
    except DeviceError as exc:
        _exit(str(exc))


THREADS_HELP = "torch CPU threads (default: torch's); 1 keeps a shared machine's thread-barrier stalls out of the ratio"


def add_threads_argument(parser) -> None:
    """--threads on a measurement script's argparse parser; applied by threads_and_device_or_exit."""
    parser.add_argument("--threads", type=int, default=None, help=THREADS_HELP)


def threads_and_device_or_exit(args) -> str:
    """For measurement scripts: set torch's CPU threads from args.threads (when given) and return the
    checked args.device (one `error:` line and exit 2 when it is not there)."""
    device = device_or_exit(args.device)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    return device


def _exit(message: str) -> NoReturn:
    sys.stderr.write(f"error: {' '.join(message.split())}\n")
    raise SystemExit(2)
