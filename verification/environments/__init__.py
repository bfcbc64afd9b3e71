"""Registry of environments. A problem's environment is chosen from its seed, so the mix is fixed
by the protocol: environment_for(seed) = ENVIRONMENT_ORDER[PRF("env-choice", seed)[0] % len]."""

from __future__ import annotations

from verification.environments.arithmetic import ArithmeticEnvironment
from verification.environments.base import REWARD_SCALE, Environment, Problem
from verification.environments.sat import SatEnvironment
from verification.errors import EnvironmentSpecError
from verification.prf import prf

REGISTRY: dict[str, Environment] = {env.name: env for env in (SatEnvironment(), ArithmeticEnvironment())}
ENVIRONMENT_ORDER = ("sat", "arith")  # order is protocol: it maps seeds to environments


def register(env: Environment) -> None:
    """Add an environment (a protocol change: every validator must register the same set)."""
    if env.name in REGISTRY:
        raise EnvironmentSpecError(f"environment {env.name!r} is already registered")
    REGISTRY[env.name] = env


def get(name: str) -> Environment:
    try:
        return REGISTRY[name]
    except KeyError:
        raise EnvironmentSpecError(f"unknown environment {name!r}") from None


def environment_for(seed: bytes) -> str:
    return ENVIRONMENT_ORDER[prf("env-choice", seed)[0] % len(ENVIRONMENT_ORDER)]


def problem_for(seed: bytes) -> Problem:
    return get(environment_for(seed)).generate(seed)


__all__ = ["REGISTRY", "REWARD_SCALE", "Environment", "Problem", "get", "register", "environment_for", "problem_for"]
