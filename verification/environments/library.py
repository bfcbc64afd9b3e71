"""The pinned task library: the one place that imports reasoning-gym (docs/protocol.md section 8,
"Library-backed environments").

An rg_* environment's problems are a function of reasoning-gym's generator code and a seed, so the
code is part of the protocol. Before the first item of a dataset is made in a process,
`generator(dataset)` checks, in order:
  1. the installed distribution's version, importlib.metadata.version("reasoning-gym"), equals
     REASONING_GYM_VERSION (the module's own __version__ is wrong in 0.1.25: it says 0.1.19);
  2. the SHA-256 of every source file the dataset's items depend on (PINNED_FILES; the same digests
     as the wheel's RECORD) equals the pinned one, read from the files the import actually loaded;
  3. one pinned item (SELF_CHECKS: config, seed -> question, answer) regenerates exactly.
Any failure is a TaskLibraryError naming the install command; nothing falls back to another task.

The import is lazy (only when an rg_* environment is used): `import reasoning_gym` loads every dataset
of the library and takes about 5 s. The result is cached per process, so the checks run once.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from verification.constants import REASONING_GYM_VERSION
from verification.errors import TaskLibraryError

DISTRIBUTION = "reasoning-gym"
INSTALL_COMMAND = f"pip install {DISTRIBUTION}=={REASONING_GYM_VERSION}"

# SHA-256 (hex) of each generator source file, relative to the reasoning_gym package directory. In the
# wheel's RECORD these are the urlsafe-base64 digests foESFOnj... (chain_sum.py), nrIizZOT...
# (basic_arithmetic.py) and SAyqzKWx... (dataset.py: ProceduralDataset, which fixes the seed and size).
PINNED_FILES: dict[str, str] = {
    "dataset.py": "480caacca5b12865e13bac68937687a799977e040ace5ae0496e71c1d77971e6",
    "arithmetic/chain_sum.py": "7e811214e9e31aa67eeb5490a0cf8eb275fceab609c4523bb38ceec9f8dbcb9f",
    "arithmetic/basic_arithmetic.py": "9eb222cd9393ee7ce9e60e3cb2d00ba2da038aa0737f9fe46b866b3a6a682934",
}


@dataclass(frozen=True)
class Dataset:
    """Where a reasoning-gym dataset lives and which pinned files its items depend on."""

    module: str
    dataset_class: str
    config_class: str
    files: tuple[str, ...]


DATASETS: dict[str, Dataset] = {
    "chain_sum": Dataset("reasoning_gym.arithmetic.chain_sum", "ChainSumDataset", "ChainSumConfig",
                         ("dataset.py", "arithmetic/chain_sum.py")),
    "basic_arithmetic": Dataset("reasoning_gym.arithmetic.basic_arithmetic", "BasicArithmeticDataset",
                                "BasicArithmeticDatasetConfig", ("dataset.py", "arithmetic/basic_arithmetic.py")),
}


@dataclass(frozen=True)
class SelfCheck:
    config: tuple[tuple[str, object], ...]
    seed: int
    question: str
    answer: str


# One pinned item per dataset (config, library seed at index 0 -> question, answer), made with 0.1.25.
SELF_CHECKS: dict[str, SelfCheck] = {
    "chain_sum": SelfCheck(
        (("min_terms", 3), ("max_terms", 5), ("min_digits", 1), ("max_digits", 3), ("allow_negation", False)),
        6148914691236517205,
        "State the final answer to the following arithmetic problem: 659 - 358 + 121 - 460 - 880 =", "-918"),
    "basic_arithmetic": SelfCheck(
        (("min_terms", 2), ("max_terms", 2), ("min_digits", 1), ("max_digits", 3), ("operators", ("+", "-", "*")),
         ("allow_parentheses", False), ("allow_negation", False)),
        6148914691236517205,
        "Calculate 5 * 5.", "25"),
}

_lock = threading.Lock()
_checked: dict[str, tuple[type, type]] = {}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fail(message: str) -> TaskLibraryError:
    return TaskLibraryError(f"{message}; the rg_* environments need exactly reasoning-gym {REASONING_GYM_VERSION}: "
                            f"{INSTALL_COMMAND}")


def _check_version() -> None:
    try:
        installed = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise _fail("reasoning-gym is not installed") from None
    if installed != REASONING_GYM_VERSION:
        raise _fail(f"reasoning-gym {installed} is installed")


def _import(name: str, spec: Dataset):
    try:
        package = importlib.import_module("reasoning_gym")
        module = importlib.import_module(spec.module)
    except ImportError as e:
        raise _fail(f"reasoning-gym cannot be imported ({e})") from None
    root = Path(package.__file__).resolve().parent
    loaded = Path(module.__file__).resolve()
    if loaded != root / spec.files[-1]:  # the generator must come from the package whose files are checked
        raise _fail(f"reasoning-gym's {name} generator was loaded from {loaded}, not from {root / spec.files[-1]}")
    for rel in spec.files:
        try:
            digest = file_sha256(root / rel)
        except OSError as e:
            raise _fail(f"reasoning-gym file {rel} cannot be read ({e})") from None
        if digest != PINNED_FILES[rel]:
            raise _fail(f"reasoning-gym file {root / rel} has SHA-256 {digest}, the protocol pins {PINNED_FILES[rel]}")
    return getattr(module, spec.dataset_class), getattr(module, spec.config_class)


def _make(classes: tuple[type, type], config: Mapping[str, object], seed: int) -> tuple[str, str]:
    dataset_class, config_class = classes
    item = dataset_class(config_class(**config, seed=seed, size=1))[0]
    question, answer = item["question"], item["answer"]
    if not isinstance(question, str) or not isinstance(answer, str):
        raise _fail(f"reasoning-gym item of {dataset_class.__name__} is not (str question, str answer)")
    return question, answer


def generator(name: str) -> tuple[type, type]:
    """(dataset class, config class) of a pinned dataset, after the version, file and self-check
    checks (module docstring); TaskLibraryError when any fails. Cached per process."""
    with _lock:
        if name in _checked:
            return _checked[name]
        if name not in DATASETS:
            raise TaskLibraryError(f"reasoning-gym dataset {name!r} is not pinned by the protocol")
        _check_version()
        classes = _import(name, DATASETS[name])
        check = SELF_CHECKS[name]
        try:
            got = _make(classes, dict(check.config), check.seed)
        except TaskLibraryError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of the library's code is the library's
            raise _fail(f"reasoning-gym's {name} generator fails its self-check item ({type(e).__name__}: {e})") from None
        if got != (check.question, check.answer):
            raise _fail(f"reasoning-gym's {name} generator gives {got!r} for its pinned self-check item, "
                        f"not {(check.question, check.answer)!r}")
        _checked[name] = classes
        return classes


def item(name: str, config: Mapping[str, object], seed: int) -> tuple[str, str]:
    """(question, answer) of dataset `name` under `config` at library seed `seed`, dataset size 1,
    index 0: the item of random.Random(seed) alone (item (s, i) == item (s + i, 0) in these
    generators, so index 0 keeps two problem seeds from sharing an item unless their library seeds
    are equal)."""
    classes = generator(name)
    try:
        return _make(classes, config, seed)
    except TaskLibraryError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _fail(f"reasoning-gym's {name} generator fails at seed {seed} ({type(e).__name__}: {e})") from None
