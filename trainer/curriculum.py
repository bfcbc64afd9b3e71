"""The curriculum: which generation params the next checkpoint announces, following the model.

Not consensus: the trainer chooses, its manifest fixes the choice, and the model fingerprint binds
it (docs/protocol.md section 7); a replay takes the params from the record, it does not re-decide.

GRPO learns only from groups whose rewards differ. A group whose rollouts all earn the full reward
(solved) or all earn the same lesser reward (failed) teaches nothing, so the curriculum watches the
groups of the windows trained since the last candidate and acts when fewer than `target_signal` of
them carried signal (reports/learning.md measures the effect per window):

    too easy  (solved >= failed): the mix gets harder (GenerationParams.harder: the hardest listed
              setting of each environment stays beside its next harder one, so the edge is in every
              window);
    too hard  (failed > solved): first larger groups at the same rollouts per bundle (group_size x 2
              up to `max_group_size`, groups / 2): a problem solved with probability p gives a group
              with signal with probability 1 - p^G - (1 - p)^G, which for p = 0.1 is 0.57 at G = 8
              and 0.81 at G = 16; then an easier mix (GenerationParams.easier: each environment's
              hardest listed setting is dropped while another remains).

Judged: the newest `windows` trained windows whose rows were made under the current params (so a
change is judged only once miners generate under it, ACTIVATION_WINDOWS later); a decision needs at
least `min_groups` groups among them (fewer: no change)."""

from __future__ import annotations

from dataclasses import dataclass

from verification.generation import GenerationParams


@dataclass(frozen=True)
class GroupOutcomes:
    """Trained groups by outcome."""

    groups: int = 0
    signal: int = 0  # rewards differ
    solved: int = 0  # every rollout earned the full reward
    failed: int = 0  # every rollout earned the same lesser reward

    def __add__(self, other: "GroupOutcomes") -> "GroupOutcomes":
        return GroupOutcomes(self.groups + other.groups, self.signal + other.signal, self.solved + other.solved,
                             self.failed + other.failed)

    @property
    def signal_rate(self) -> float:
        return self.signal / self.groups if self.groups else 0.0


@dataclass(frozen=True)
class CurriculumSettings:
    target_signal: float = 0.5  # the share of groups with reward variance the curriculum holds
    min_groups: int = 8  # fewer groups since the last candidate: no decision
    max_group_size: int = 16  # larger groups cost validators and the window budget in proportion
    windows: int = 3  # the newest trained windows made under the current params that are judged

    def __post_init__(self):
        if not (0.0 < self.target_signal <= 1.0 and self.min_groups >= 1 and self.max_group_size >= 2
                and self.windows >= 1):
            raise ValueError(f"invalid curriculum settings: {self}")


@dataclass(frozen=True)
class Decision:
    params: GenerationParams
    change: str  # "none", "harder", "larger_groups", "easier"
    reason: str


def decide(params: GenerationParams, outcomes: GroupOutcomes, settings: CurriculumSettings) -> Decision:
    """The params of the next candidate given the outcomes of the groups trained under the current ones."""
    if outcomes.groups < settings.min_groups:
        return Decision(params, "none", f"{outcomes.groups} groups under these params (< {settings.min_groups})")
    rate = outcomes.signal_rate
    share = (f"signal {rate:.0%} of {outcomes.groups} groups (solved {outcomes.solved}, failed "
             f"{outcomes.failed})")
    if rate >= settings.target_signal:
        return Decision(params, "none", f"{share} >= {settings.target_signal:.0%}")
    if outcomes.solved >= outcomes.failed:
        nxt = params.harder()
        if nxt is None:
            return Decision(params, "none", f"{share}: too easy, and no harder setting exists")
        return Decision(nxt, "harder", f"{share}: too easy")
    if params.group_size * 2 <= settings.max_group_size:
        g = params.group_size * 2
        groups = max(1, params.groups // 2)
        nxt = GenerationParams.from_json({**params.to_json(), "group_size": g, "groups": groups})
        return Decision(nxt, "larger_groups", f"{share}: too hard; groups of {g} (x{groups} per bundle)")
    nxt = params.easier()
    if nxt is None:
        return Decision(params, "none", f"{share}: too hard, and no easier setting is listed")
    return Decision(nxt, "easier", f"{share}: too hard")
