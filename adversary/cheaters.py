"""Cheating miners for the local network: each does what a real cheater with full control of its
own hotkey could do, and each is stopped by a different check."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch

from miner.proof import assemble_bundle, build_groups
from miner.service import Miner
from verification import environments
from verification.bundle import Bundle, decode_bundle
from verification.commitment import bundle_name, decode_commitment
from verification.errors import StorageError
from verification.model import LoadedModel
from verification.window import WindowContext


def other_checkpoint(lm: LoadedModel, rel: float = 0.01, seed: int = 1) -> LoadedModel:
    """The same architecture with weights moved by `rel` relative noise (a different checkpoint),
    still claiming lm's fingerprint."""
    model = copy.deepcopy(lm.model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.device) * p.abs().mean() * rel)
    return replace(lm, name=f"{lm.name} (other checkpoint)", model=model)


class ModelSwapMiner(Miner):
    """Generates with another checkpoint of the same shape and names the agreed model."""

    kind = "model swap"

    def __init__(self, *a, swapped: LoadedModel, **kw):
        super().__init__(*a, **kw)
        self.swapped = swapped

    def make_bundle(self, ctx: WindowContext, on_tokens=None, should_stop=None) -> Bundle:
        groups = build_groups(self.swapped, ctx, self.hotkey, list(range(self.n_groups)),
                              engine=self.engine, on_tokens=on_tokens, should_stop=should_stop)
        return assemble_bundle(ctx, self.keypair, self.lm.fingerprint, groups, self.lm.generation)


class EditedTokensMiner(Miner):
    """Generates honestly, then edits one token of every rollout (re-signing the result)."""

    kind = "edited tokens"

    def make_bundle(self, ctx: WindowContext, on_tokens=None, should_stop=None) -> Bundle:
        bundle = super().make_bundle(ctx, on_tokens, should_stop)
        for _, r in bundle.rows():
            i = len(r.completion) // 2
            r.completion = r.completion.copy()
            r.completion[i] = np.uint32((int(r.completion[i]) + 1) % self.lm.vocab_size)
        return assemble_bundle(ctx, self.keypair, self.lm.fingerprint, bundle.groups, self.lm.generation)


class CopycatMiner(Miner):
    """Downloads another miner's bundle for the window and re-signs it as its own."""

    kind = "copycat"

    def __init__(self, *a, victim: str, **kw):
        super().__init__(*a, **kw)
        self.victim = victim

    def make_bundle(self, ctx: WindowContext, on_tokens=None, should_stop=None) -> Bundle:
        # as any copier would: the victim's commitment names its bundle (under the shared store)
        rec = self.chain.commitment_of(self.victim, ctx.window)
        if rec is None:
            raise StorageError(f"the victim {self.victim} has not committed window {ctx.window} yet")
        data = self.store.get(bundle_name(ctx.window, decode_commitment(rec.data).bundle_hash))
        stolen = decode_bundle(data)
        return assemble_bundle(ctx, self.keypair, self.lm.fingerprint, stolen.groups, self.lm.generation)


class ReplayMiner(Miner):
    """Commits, every window, the valid bundle it made for an earlier window."""

    kind = "replay"

    def __init__(self, *a, old_bundle: bytes, **kw):
        super().__init__(*a, **kw)
        self.old_bundle = old_bundle

    def make_bundle(self, ctx: WindowContext, on_tokens=None, should_stop=None) -> Bundle:
        return decode_bundle(self.old_bundle)


class CreditThiefMiner(Miner):
    """Computes another miner's honest rows itself (they are a deterministic function of model,
    window seed and the victim's hotkey, so it needs no access to the victim's bundle), puts them in
    place of its own last group (the checkpoint fixes how many groups a bundle holds, so it cannot
    append them) and commits first: unless every group's problem is checked, the stolen group passes
    whenever the opening misses it, and the victim's identical rows look like copies of the thief's."""

    kind = "credit thief"

    def __init__(self, *a, victim: str, victim_groups: int = 2, **kw):
        super().__init__(*a, **kw)
        self.victim = victim
        self.victim_groups = victim_groups  # how many of the victim's groups it may steal from

    def make_bundle(self, ctx: WindowContext, on_tokens=None, should_stop=None) -> Bundle:
        target = self.n_groups - 1
        own = build_groups(self.lm, ctx, self.hotkey, list(range(target)),
                           engine=self.engine, on_tokens=on_tokens, should_stop=should_stop)
        theirs = build_groups(self.lm, ctx, self.victim, list(range(self.victim_groups)), engine=self.engine)
        # steal a group that answers another problem than the thief's own at that index (in a small
        # problem space the two may coincide; then the rows would be the thief's own problem and
        # nothing would be stolen); when none does, the thief commits its own honest group
        mine = self.lm.chat_prompt_ids(
            environments.problem_for(ctx.problem_seed(self.hotkey, target), self.lm.generation)[1].prompt)
        stolen = next((g for g in theirs if list(map(int, g.prompt)) != mine), None)
        self.stolen_index = target if stolen is not None else None
        last = (replace(stolen, index=target) if stolen is not None
                else build_groups(self.lm, ctx, self.hotkey, [target], engine=self.engine)[0])
        return assemble_bundle(ctx, self.keypair, self.lm.fingerprint, own + [last], self.lm.generation)
