"""Generation parameters: what a checkpoint fixes about how rollouts are made and scored.

A checkpoint's manifest carries one GenerationParams; the model fingerprint binds it (section 7 of
docs/protocol.md), so a trainer can change temperature, group size, groups per bundle, completion
length, the environment mix and each environment's difficulty without a protocol release, and a
bundle made under other parameters names another fingerprint (`wrong_model`).

`groups` fixes how many groups every bundle of a window holds (its header's n_groups): a miner
commits all of its problems or none, so it cannot choose which prefix of them is trained on
(docs/security.md section 3a).

Canonical form (hashed through canonical_json, integers only):
    {"temperature_milli": int, "group_size": int, "groups": int, "max_new_tokens": int,
     "environments": [{"name": str, "weight": int, "params": {str: int}}, ...]}
The environment list order is significant: it maps problem seeds to environments (environment_for).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from verification.constants import (
    MAX_ENVIRONMENT_WEIGHT,
    MAX_GROUP_SIZE,
    MAX_GROUPS,
    MAX_NEW_TOKENS,
    MAX_TEMPERATURE_MILLI,
    MIN_GROUP_SIZE,
    MIN_GROUPS,
    MIN_TEMPERATURE_MILLI,
)
from verification.errors import EnvironmentSpecError
from verification.prf import prf, uniform_below, word_stream


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    weight: int
    params: tuple[tuple[str, int], ...]  # sorted (key, value) pairs

    @property
    def params_dict(self) -> dict[str, int]:
        return dict(self.params)


@dataclass(frozen=True)
class GenerationParams:
    temperature_milli: int
    group_size: int
    max_new_tokens: int
    environments: tuple[EnvironmentSpec, ...]
    groups: int  # groups in every bundle (the header's n_groups), in [MIN_GROUPS, MAX_GROUPS]

    @property
    def temperature(self) -> float:
        return self.temperature_milli / 1000

    def to_json(self) -> dict:
        return {
            "temperature_milli": self.temperature_milli,
            "group_size": self.group_size,
            "groups": self.groups,
            "max_new_tokens": self.max_new_tokens,
            "environments": [{"name": e.name, "weight": e.weight, "params": dict(e.params)}
                             for e in self.environments],
        }

    @classmethod
    def from_json(cls, obj: Mapping) -> "GenerationParams":
        """Parse and range-check; every failure is an EnvironmentSpecError naming the field."""
        if not isinstance(obj, Mapping) or set(obj) != {"temperature_milli", "group_size", "groups",
                                                          "max_new_tokens", "environments"}:
            raise EnvironmentSpecError("generation params must have exactly temperature_milli, group_size, groups, "
                                       "max_new_tokens, environments")
        t, g, n, m = obj["temperature_milli"], obj["group_size"], obj["groups"], obj["max_new_tokens"]
        for name, v, lo, hi in (("temperature_milli", t, MIN_TEMPERATURE_MILLI, MAX_TEMPERATURE_MILLI),
                                ("group_size", g, MIN_GROUP_SIZE, MAX_GROUP_SIZE),
                                ("groups", n, MIN_GROUPS, MAX_GROUPS),
                                ("max_new_tokens", m, 1, MAX_NEW_TOKENS)):
            if not _is_int(v) or not lo <= v <= hi:
                raise EnvironmentSpecError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
        envs = obj["environments"]
        if not isinstance(envs, list) or not envs:
            raise EnvironmentSpecError("environments must be a non-empty list")
        specs, seen = [], set()
        for e in envs:
            if not isinstance(e, Mapping) or set(e) != {"name", "weight", "params"}:
                raise EnvironmentSpecError("each environment needs exactly name, weight, params")
            name, weight, params = e["name"], e["weight"], e["params"]
            if not isinstance(name, str):
                raise EnvironmentSpecError(f"environment name {name!r} is not a string")
            if not _is_int(weight) or not 1 <= weight <= MAX_ENVIRONMENT_WEIGHT:
                raise EnvironmentSpecError(f"weight of {name!r} must be in [1, {MAX_ENVIRONMENT_WEIGHT}]")
            if not isinstance(params, Mapping) or not all(isinstance(k, str) and _is_int(v)
                                                          for k, v in params.items()):
                raise EnvironmentSpecError(f"params of {name!r} must map strings to integers")
            spec = EnvironmentSpec(name, int(weight), tuple(sorted((k, int(v)) for k, v in params.items())))
            if (spec.name, spec.params) in seen:
                raise EnvironmentSpecError(f"environment {name!r} is listed twice with the same params")
            seen.add((spec.name, spec.params))
            specs.append(spec)
        out = cls(int(t), int(g), int(m), tuple(specs), int(n))
        from verification import environments  # the registry checks each environment's own params

        for spec in out.environments:
            environments.get(spec.name).check_params(spec.params_dict)
        return out

    def with_groups(self, groups: int) -> "GenerationParams":
        """The same params with another number of groups per bundle (range-checked): what a local
        network or a test agrees on for all its nodes, and a trainer may announce."""
        return GenerationParams.from_json({**self.to_json(), "groups": groups})

    def harder(self) -> "GenerationParams | None":
        """The next curriculum step (not consensus: the trainer's choice, fixed by its manifest).
        Per environment, its hardest listed setting (the last) stays beside that setting's next harder
        one, at the same weight: half of its problems at the level the model just mastered, half one
        step above. A plain jump leaves most groups of the new level all wrong (no GRPO signal while
        the model is still learning it); the mix keeps reward variance in the mastered half
        (reports/learning.md). None when no environment can get harder."""
        from verification import environments

        specs, changed = [], False
        names = list(dict.fromkeys(e.name for e in self.environments))
        for name in names:
            listed = [e for e in self.environments if e.name == name]
            hardest = listed[-1]
            nxt = environments.get(name).harder(hardest.params_dict)
            if nxt is None:
                specs.extend(listed)
                continue
            changed = True
            specs.append(hardest)
            specs.append(EnvironmentSpec(name, hardest.weight, tuple(sorted(nxt.items()))))
        if not changed:
            return None
        return GenerationParams.from_json({**self.to_json(), "environments": [
            {"name": e.name, "weight": e.weight, "params": e.params_dict} for e in specs]})

    def easier(self) -> "GenerationParams | None":
        """The curriculum step back (not consensus): per environment listed more than once, its
        hardest listed setting (the last) is dropped. None when every environment is listed once."""
        specs, changed = [], False
        for name in dict.fromkeys(e.name for e in self.environments):
            listed = [e for e in self.environments if e.name == name]
            if len(listed) > 1:
                listed, changed = listed[:-1], True
            specs.extend(listed)
        if not changed:
            return None
        return GenerationParams.from_json({**self.to_json(), "environments": [
            {"name": e.name, "weight": e.weight, "params": e.params_dict} for e in specs]})

    def environment_for(self, seed: bytes) -> EnvironmentSpec:
        """The environment of a problem seed: u = uniform_below(word_stream(PRF("env-choice", seed)),
        total weight); the first environment whose cumulative weight exceeds u."""
        total = sum(e.weight for e in self.environments)
        u = uniform_below(word_stream(prf("env-choice", seed)), total)
        for e in self.environments:
            if u < e.weight:
                return e
            u -= e.weight
        raise AssertionError("unreachable: u < total weight")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
