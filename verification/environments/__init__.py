"""Registry of environments. Which environment a problem seed gets, and with which difficulty
params, is fixed by the checkpoint's generation params (verification.generation)."""

from __future__ import annotations

from verification.environments.addition import AdditionEnvironment
from verification.environments.arithmetic import ArithmeticEnvironment
from verification.environments.base import REWARD_SCALE, Environment, Problem
from verification.environments.reasoning_gym_envs import BasicArithmeticEnvironment, ChainSumEnvironment
from verification.environments.sat import SatEnvironment
from verification.errors import EnvironmentSpecError

# rg_* environments import reasoning-gym only when their params are checked (verification.environments.library)
REGISTRY: dict[str, Environment] = {env.name: env for env in (
    SatEnvironment(), ArithmeticEnvironment(), AdditionEnvironment(), ChainSumEnvironment(), BasicArithmeticEnvironment())}


def get(name: str) -> Environment:
    try:
        return REGISTRY[name]
    except KeyError:
        raise EnvironmentSpecError(f"unknown environment {name!r}") from None


def problem_for(seed: bytes, params) -> tuple[str, Problem]:
    """(environment name, problem) of a problem seed under GenerationParams `params`."""
    spec = params.environment_for(seed)
    return spec.name, get(spec.name).generate(seed, spec.params_dict)


__all__ = ["REGISTRY", "REWARD_SCALE", "Environment", "Problem", "get", "problem_for"]
