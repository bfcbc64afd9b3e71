import copy
import os

import pytest
from hypothesis import settings

# CI machines are slow and shared: a per-example time limit would fail honest runs at random.
# Each test keeps its own example count; the seed stays random so every run explores new inputs
# (a failure prints the seed and the falsifying example).
settings.register_profile("rollproof", deadline=None)
settings.load_profile("rollproof")

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_VLLM_IMPORT_ERROR: list[str] = []  # filled once: "" when vllm imports, else why it does not


def _vllm_import_error() -> str:
    if not _VLLM_IMPORT_ERROR:
        try:
            import vllm  # noqa: F401
            _VLLM_IMPORT_ERROR.append("")
        except Exception as e:  # a broken install (a torchvision built for another torch) is missing too
            _VLLM_IMPORT_ERROR.append(f"{type(e).__name__}: {e}".splitlines()[0])
    return _VLLM_IMPORT_ERROR[0]


def pytest_runtest_setup(item):
    """A test marked vllm needs vLLM: where it does not import, the test is skipped with the command
    that installs it, except under CI (the env var CI set, as .ci/run sets it), where the vLLM tests
    must run and a missing vLLM fails them instead of passing the run with skips."""
    if item.get_closest_marker("vllm") is None:
        return
    err = _vllm_import_error()
    if not err:
        return
    msg = f"vLLM does not import ({err}); install it with: bash scripts/install_vllm.sh"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{msg} (CI is set: the vllm tests must run, not skip)", pytrace=False)
    pytest.skip(msg)


# Groups per bundle of the tests' tiny model. The base params (BASE_GENERATION, what `--model tiny`
# loads) ask for 8; the in-process tests run a network whose base is the tiny model under params
# with groups = 2, as `rollproof localnet --groups 2` does, so every node agrees and a window costs
# a quarter of the base's work.
TEST_GROUPS = 2


def with_groups(lm, n: int):
    """lm under its generation params with groups = n (another fingerprint: every node of a test
    network must use the same)."""
    return lm.with_generation(lm.generation.with_groups(n))


@pytest.fixture(scope="session")
def tiny_base():
    """The tiny model under the base generation params: what the CLI's `--model tiny` loads."""
    from verification.model import load_model

    return load_model("tiny")


@pytest.fixture(scope="session")
def tiny(tiny_base):
    return with_groups(tiny_base, TEST_GROUPS)


@pytest.fixture(scope="session")
def local_drand():
    from verification.drand_local import LocalDrand

    return LocalDrand()


@pytest.fixture(scope="session")
def alice():
    from bittensor.sp_core import Keypair

    return Keypair.create_from_uri("//Alice")


@pytest.fixture(scope="session")
def bob():
    from bittensor.sp_core import Keypair

    return Keypair.create_from_uri("//Bob")


def make_ctx(drand, window=7, netuid=3, block_hash=b"\x42" * 32):
    from verification.window import WindowContext

    block_time = drand.genesis_time + 10_000 + window * 240
    rnd = drand.info.round_at(block_time)
    return WindowContext(netuid, window, block_hash, block_time, drand.sign(rnd))


@pytest.fixture(scope="session")
def ctx(local_drand):
    return make_ctx(local_drand)


@pytest.fixture(scope="session")
def honest_bundle(tiny, ctx, alice):
    from miner.proof import build_bundle

    return build_bundle(tiny, ctx, alice)


@pytest.fixture(scope="session")
def base_bundle(tiny_base, ctx, alice):
    """An honest bundle of the base params (8 groups): what `rollproof verify --model tiny` accepts."""
    from miner.proof import build_bundle

    return build_bundle(tiny_base, ctx, alice)


@pytest.fixture()
def bundle_copy(honest_bundle):
    return copy.deepcopy(honest_bundle)


@pytest.fixture(scope="session")
def verifier(tiny, local_drand):
    from verification.verifier import Verifier

    return Verifier(tiny, [local_drand.info])
