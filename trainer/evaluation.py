"""Evaluation of a run's checkpoints against the base model on problems the run never trained on.

A task is a set of generation params (the training mix, a target task, a transfer task). Its
problems come from the evaluation seed space (trainer.heldout.evaluation_seeds, one sequence per
task label), disjoint from the miners' and the gate's seeds. Disjoint seeds are not distinct
problems: two-term one-digit addition has 81 problems, so a draw of 128 repeats itself and the
problems the run trained on. Every draw whose prompt equals a prompt the run trained on (the rows
the trainer took: the validator's accepted rows, recomputed from its stored reports and bundles
exactly as the trainer does) or an earlier draw is dropped and counted; a task where more than
NOT_A_MEASURE_SHARE of the draws were dropped is not a measure and gets no verdict.

Greedy accuracy (argmax decoding: what the model can do) and sampled accuracy (the protocol's
seeded sampling at the task's temperature: what a miner's rollouts earn) are each compared with
the base model's on the same problems (paired, 95% interval)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from trainer.heldout import GreedyResult, HeldoutResult, PairedDifference, evaluate, evaluate_greedy, paired_difference
from trainer.rows import TrainingDataError, accepted_rows
from verification import environments
from verification.errors import EnvironmentSpecError
from verification.generation import GenerationParams
from verification.model import LoadedModel

NOT_A_MEASURE_SHARE = 0.10  # more dropped draws than this: the task's problem space is too small
TARGET_POINTS = 0.15  # the target: held-out greedy accuracy up by at least 15 points


def task_params(spec: str, base: GenerationParams) -> GenerationParams:
    """A task's generation params from generation-params JSON (a full object, as a manifest holds)
    or a short spec `ENV` / `ENV:key=value,key=value` (the environment's default params with those
    changed; temperature, group size, groups and max_new_tokens from `base`). Raises
    EnvironmentSpecError for an unknown environment or param, or params out of range."""
    spec = spec.strip()
    if spec.startswith("{"):
        try:
            obj = json.loads(spec)
        except ValueError as exc:
            raise EnvironmentSpecError(f"task {spec!r} is not valid JSON: {exc}") from None
        return GenerationParams.from_json(obj)
    name, _, rest = spec.partition(":")
    if name not in environments.REGISTRY:
        raise EnvironmentSpecError(f"task {spec!r}: unknown environment {name!r} "
                                   f"(registered: {', '.join(sorted(environments.REGISTRY))})")
    params = dict(environments.get(name).DEFAULT_PARAMS)
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in environments.get(name).PARAM_RANGES:
            raise EnvironmentSpecError(f"task {spec!r}: {item!r} is not key=value with a param of {name} "
                                       f"({', '.join(sorted(environments.get(name).PARAM_RANGES))})")
        try:
            params[key.strip()] = int(value)
        except ValueError:
            raise EnvironmentSpecError(f"task {spec!r}: {key.strip()} must be an integer, got {value!r}") from None
    return GenerationParams.from_json({**base.to_json(), "environments": [{"name": name, "weight": 1,
                                                                           "params": params}]})


def task_label(params: GenerationParams) -> str:
    """The environments and params of a task, one line (also the task's evaluation seed sequence)."""
    return "; ".join(f"{e.name}({','.join(f'{k}={v}' for k, v in e.params)})" + (f" x{e.weight}" if len(
        params.environments) > 1 else "") for e in params.environments)


@dataclass
class TrainedPrompts:
    prompts: set[tuple[int, ...]] = field(default_factory=set)
    windows: int = 0  # windows whose accepted rows were read
    unreadable: list[str] = field(default_factory=list)  # windows whose rows could not be recomputed, and why


def trained_prompts(validator_dir: Path) -> TrainedPrompts:
    """The prompts (token ids) of every row the trainer could take from a run: per window the
    validator's report and the bundles it fetched, through trainer.rows.accepted_rows (the rows of
    miners with verdict "ok", rollouts the validator checked). A superset of the rows trained on
    (stale rows the trainer dropped are included): the safe side for a distinctness filter."""
    out = TrainedPrompts()
    windows = Path(validator_dir) / "windows"
    for wdir in sorted((p for p in windows.glob("*") if p.name.isdigit()), key=lambda p: int(p.name)):
        report = wdir / "report.json"
        if not report.is_file():
            continue

        def read(uid: int, wdir=wdir) -> bytes | None:
            path = wdir / "bundles" / f"{uid}.rpb"
            return path.read_bytes() if path.is_file() else None

        try:
            rows = accepted_rows(report.read_bytes(), read)
        except TrainingDataError as exc:
            out.unreadable.append(f"window {wdir.name}: {exc}")
            continue
        out.windows += 1
        out.prompts.update(tuple(r.prompt) for r in rows.rows)
    return out


@dataclass
class DistinctProblems:
    seeds: list[bytes]  # the draws kept: distinct from each other and from every trained prompt
    drawn: int
    dropped_trained: int
    dropped_repeat: int

    @property
    def dropped(self) -> int:
        return self.dropped_trained + self.dropped_repeat

    @property
    def measure(self) -> bool:
        return is_measure(self.drawn, self.dropped)


def is_measure(drawn: int, dropped: int) -> bool:
    """A task measures unseen ability when at most NOT_A_MEASURE_SHARE of its draws were trained on
    or repeated an earlier draw (and at least one is left)."""
    return drawn > dropped and dropped <= NOT_A_MEASURE_SHARE * drawn


def distinct_problems(lm: LoadedModel, params: GenerationParams, seeds: list[bytes],
                      trained: set[tuple[int, ...]]) -> DistinctProblems:
    """Drop each seed whose problem's chat prompt (token ids, as a miner's group carries it) equals a
    trained prompt or an earlier kept draw's."""
    kept, seen, dropped_trained, dropped_repeat = [], set(), 0, 0
    for seed in seeds:
        _, problem = environments.problem_for(seed, params)
        prompt = tuple(lm.chat_prompt_ids(problem.prompt))
        if prompt in trained:
            dropped_trained += 1
        elif prompt in seen:
            dropped_repeat += 1
        else:
            seen.add(prompt)
            kept.append(seed)
    return DistinctProblems(kept, len(seeds), dropped_trained, dropped_repeat)


@dataclass
class Comparison:
    """One measure (greedy or sampled) of base and a checkpoint on the same problems."""
    base: float
    final: float
    difference: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, after: GreedyResult | HeldoutResult, before: GreedyResult | HeldoutResult) -> "Comparison":
        d: PairedDifference = paired_difference(after, before)
        score = (lambda r: r.accuracy) if isinstance(after, GreedyResult) else (lambda r: r.mean)
        return cls(score(before), score(after), d.mean, d.low, d.high, d.n)


@dataclass
class TaskEvaluation:
    role: str  # "training mix", "target", "transfer"
    label: str
    params: dict
    drawn: int
    dropped_trained: int
    dropped_repeat: int
    measure: bool
    chance: float = 0.0
    greedy: Comparison | None = None  # base vs final checkpoint
    sampled: Comparison | None = None
    rollouts: int = 0
    greedy_per_checkpoint: dict[int, float] = field(default_factory=dict)  # version -> greedy accuracy

    @property
    def n(self) -> int:
        return self.drawn - self.dropped_trained - self.dropped_repeat


def evaluate_task(role: str, params: GenerationParams, base: LoadedModel, versions: list[int],
                  load: Callable[[int], LoadedModel], trained: set[tuple[int, ...]], *, netuid: int, problems: int,
                  rollouts: int, greedy_every: bool, batch_size: int = 32) -> TaskEvaluation:
    """versions: the announced checkpoints in order, the last the final one (empty: none was
    announced, the final model is the base); load(version) gives one (loaded as needed: a run's
    checkpoints do not all fit in memory at once). Greedy for the base and the final checkpoint
    (every checkpoint with greedy_every); sampled (`rollouts` per problem, 0: none) for base and
    final. A task that is not a measure is still evaluated (its figures are shown) but gets no verdict."""
    from trainer.heldout import evaluation_seeds

    label = task_label(params)
    draws = distinct_problems(base, params, evaluation_seeds(netuid, problems, label), trained)
    out = TaskEvaluation(role, label, params.to_json(), draws.drawn, draws.dropped_trained, draws.dropped_repeat,
                         draws.measure, rollouts=rollouts)
    if not draws.seeds:
        return out
    base_greedy = evaluate_greedy(base, params, draws.seeds, batch_size=batch_size)
    out.chance = base_greedy.chance
    out.greedy_per_checkpoint[0] = base_greedy.accuracy
    final_greedy, final = base_greedy, base
    for version in versions:
        if greedy_every or version == versions[-1]:
            model = load(version)
            res = evaluate_greedy(model, params, draws.seeds, batch_size=batch_size)
            out.greedy_per_checkpoint[version] = res.accuracy
            if version == versions[-1]:
                final_greedy, final = res, model
    out.greedy = Comparison.of(final_greedy, base_greedy)
    if rollouts > 0:
        before = evaluate(base.with_generation(params), params, netuid, len(draws.seeds), rollouts=rollouts,
                          seeds=draws.seeds)
        after = before if final is base else evaluate(final.with_generation(params), params, netuid,
                                                      len(draws.seeds), rollouts=rollouts, seeds=draws.seeds)
        out.sampled = Comparison.of(after, before)
    return out


def verdict(task: TaskEvaluation, target: float = TARGET_POINTS) -> tuple[bool | None, str]:
    """The issue's target on one task: greedy accuracy up by at least `target` with a paired 95%
    interval excluding zero. None (no verdict) when the task is not a measure."""
    name = f"held-out greedy on {task.label}"
    if not task.measure:
        return None, (f"{name}: not a measure ({task.dropped_trained} of {task.drawn} draws trained on, "
                      f"{task.dropped_repeat} repeats; more than {NOT_A_MEASURE_SHARE:.0%}): no verdict")
    g = task.greedy
    if g is None:
        return False, f"{name}: no problems evaluated: not met"
    met = g.difference >= target and g.low > 0
    return met, (f"{name} rose by {100 * g.difference:+.1f} points [{100 * g.low:+.1f}, {100 * g.high:+.1f}] "
                 f"(target: >= {100 * target:.0f} points, interval excluding zero): {'met' if met else 'not met'}")
