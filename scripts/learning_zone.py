"""Learning-zone measurement: how much GRPO signal an environment gives the model as it is.

GRPO learns only from groups whose rewards differ. For each candidate setting (environment with its
difficulty params, sampling temperature) this samples G_max rollouts of N problems with the
protocol's seeded Gumbel-max rule (miner.engine.generate with the checkpoint temperature) and
reports, for each group size G and completion limit M:

  * mean reward, accuracy (share of rollouts with the full reward), share of well-formed answers
    (rollouts with a non-zero reward), chance baseline (mean chance_reward of the problems);
  * signal rate: share of groups whose rewards are not all equal; correct-signal rate: share of
    groups in which some rollouts are right and some wrong (the signal that is not format credit);
  * mean completion tokens, and estimated seconds per group (below).

Smaller G and M are read off the same rollouts, exactly: rollout r of a group is a function of
(problem seed, r) only, so the first G rollouts of a group of G_max are the group of G, and a
completion cut at M tokens (or ending at EOS before) is the rollout under max_new_tokens = M.
Seconds per group for (G, M) are estimated from the run: wall time / padded row-steps of the run,
times G x (longest completion of the group, cut at M).

Parameters named with --rescore (e.g. format_credit_milli=0,100,200) change only the reward, never
the prompt (checked): they are scored post hoc on the same rollouts.

    python scripts/learning_zone.py --model smollm2 --problems 64 --temperatures 1000,700 \
        --group-sizes 4,8,16 --max-new-tokens 48 --truncations 24,32 \
        --env add:min_digits=1,max_digits=2 --env sat --rescore format_credit_milli=0,100

Writes reports/learning_zone.{json,md} (--merge keeps the settings of an earlier report).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import time

import numpy as np
import torch

from report_lib import REPORTS, environment, md_table, write
from verification import environments
from verification.environments import REWARD_SCALE
from verification.prf import prf
from rollproof.device import add_device_argument, device_or_exit

NAME = "learning_zone"


# ---- sampling -------------------------------------------------------------------------------------
def engine_takes_temperature(lm) -> bool:
    """True when miner.engine samples at the checkpoint temperature (lm.generation.temperature_milli)."""
    from verification import model as M

    return hasattr(lm, "with_generation") and "temperature" in inspect.signature(M.log_softmax_t).parameters


def sample(lm, requests, temperature_milli: int, max_new_tokens: int, batch_size: int):
    """Token lists of every request under the protocol sampling rule at temperature_milli / 1000.
    Returns (completions, sampler name)."""
    if engine_takes_temperature(lm):
        from miner.engine import generate
        from verification.sketch import sketch_vectors

        lm_t = lm.with_generation(dataclasses.replace(lm.generation, temperature_milli=temperature_milli,
                                                      max_new_tokens=max_new_tokens))
        vectors = sketch_vectors(prf("learning-zone-sketch"), lm.hidden_size)
        out = generate(lm_t, requests, vectors, max_new_tokens=max_new_tokens, batch_size=batch_size)
        return [list(o.completion) for o in out], "miner.engine.generate"
    out = []
    for start in range(0, len(requests), batch_size):
        out.extend(_own_loop(lm, requests[start:start + batch_size], temperature_milli / 1000, max_new_tokens))
    return out, "own loop (forward_hidden_logits + the protocol's seeded Gumbel-max sampling)"


def _own_loop(lm, reqs, temperature: float, max_new: int) -> list[list[int]]:
    """The engine's decoding loop without proofs: the protocol's seeded Gumbel-max sampling."""
    import numpy as np

    from verification import tensor_ops
    from verification.model import forward_hidden_logits
    from verification.sampling import noise_keys

    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else min(lm.eos_ids)
    b, width = len(reqs), max(len(r.prompt) for r in reqs)
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    for i, r in enumerate(reqs):
        ids[i, width - len(r.prompt):] = torch.tensor(r.prompt, dtype=torch.long)
        mask[i, width - len(r.prompt):] = 1
    _, logits, cache = forward_hidden_logits(lm, ids, mask, use_cache=True)
    last = logits[:, -1]
    tokens: list[list[int]] = [[] for _ in range(b)]
    done = [False] * b
    keys = tensor_ops.keys_tensor(np.stack([noise_keys(r.problem_seed, r.rollout_index, max_new) for r in reqs]), "cpu")
    for step in range(max_new):
        sampled = tensor_ops.sample_tokens(torch.log_softmax(last.float() / temperature, dim=-1), keys[:, step]).tolist()
        nxt = []
        for i, r in enumerate(reqs):
            if done[i]:
                nxt.append(pad)
                continue
            tok = sampled[i]
            tokens[i].append(tok)
            done[i] = tok in lm.eos_ids
            nxt.append(tok)
        if all(done) or step == max_new - 1:
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=torch.long)], dim=1)
        _, logits, cache = forward_hidden_logits(lm, torch.tensor(nxt).unsqueeze(1), mask, past_key_values=cache,
                                                 position_ids=mask.sum(-1, keepdim=True) - 1, use_cache=True)
        last = logits[:, -1]
    return tokens


# ---- settings -------------------------------------------------------------------------------------
def parse_env(spec: str) -> tuple[str, dict[str, int]]:
    """'NAME' or 'NAME:key=v,key=v' -> (name, full params: DEFAULT_PARAMS overridden), parsed and
    checked by trainer.evaluation.task_params (the learning script's task specs)."""
    from trainer.evaluation import task_params
    from verification.constants import BASE_GENERATION
    from verification.generation import GenerationParams

    env = task_params(spec, GenerationParams.from_json(BASE_GENERATION)).environments[0]
    return env.name, env.params_dict


def parse_rescore(items: list[str]) -> list[tuple[str, list[int]]]:
    out = []
    for item in items:
        key, _, values = item.partition("=")
        out.append((key.strip(), [int(v) for v in values.split(",") if v]))
    return out


def label(name: str, params: dict[str, int], temperature_milli: int) -> str:
    shown = ",".join(f"{k}={v}" for k, v in sorted(params.items()))
    return f"{name}({shown}) T={temperature_milli / 1000:.2f}"


# ---- metrics --------------------------------------------------------------------------------------
def metrics(rewards: np.ndarray, correct: np.ndarray, lengths: np.ndarray, chance: float, s_per_row_step: float,
            group_size: int) -> dict:
    """rewards/correct/lengths: [problems, group_size] arrays of one (G, M)."""
    signal = (rewards.max(1) != rewards.min(1))
    correct_signal = correct.any(1) & ~correct.all(1)
    p = correct.mean(1)
    return {
        "group_size": group_size,
        "mean_reward": float(rewards.mean() / REWARD_SCALE),
        "accuracy": float(correct.mean()),
        "nonzero_reward_share": float((rewards > 0).mean()),
        "signal_rate": float(signal.mean()),
        "correct_signal_rate": float(correct_signal.mean()),
        "groups_all_wrong": float((p == 0).mean()),
        "groups_all_right": float((p == 1).mean()),
        "mean_tokens": float(lengths.mean()),
        "chance_reward": chance / REWARD_SCALE,
        "est_s_per_group": float(s_per_row_step * group_size * lengths.max(1).mean()),
    }


def run_setting(lm, name, params, temperature_milli, args, rescore) -> dict:
    env = environments.get(name)
    from miner.engine import RolloutRequest

    seeds = [prf("learning-zone", i) for i in range(args.problems)]
    problems = [env.generate(s, params) for s in seeds]
    g_max = max(args.group_sizes)
    requests = []
    for s, pr in zip(seeds, problems):
        prompt = lm.chat_prompt_ids(pr.prompt)
        requests += [RolloutRequest(prompt, s, r) for r in range(g_max)]
    t0 = time.perf_counter()
    completions, sampler = sample(lm, requests, temperature_milli, args.max_new_tokens, args.batch)
    wall = time.perf_counter() - t0
    # padded row-steps: each batch decodes as many steps as its longest row
    row_steps = 0
    for start in range(0, len(completions), args.batch):
        chunk = completions[start:start + args.batch]
        row_steps += len(chunk) * max(len(c) for c in chunk)
    s_per_row_step = wall / max(row_steps, 1)
    variants = [("", params)]
    for key, values in rescore:
        if key not in params:
            continue
        for v in values:
            if v != params[key]:
                variants.append((f"{key}={v}", {**params, key: v}))
    limits = sorted({m for m in args.truncations if m < args.max_new_tokens} | {args.max_new_tokens})
    rows = []
    decode = lm.tokenizer.decode
    for vlabel, vparams in variants:
        vprobs = [env.generate(s, vparams) for s in seeds]
        if any(a.prompt != b.prompt for a, b in zip(vprobs, problems)):
            raise SystemExit(f"--rescore {vlabel} changes the prompt: it is not a reward-only parameter")
        chance = float(np.mean([env.chance_reward(p) for p in vprobs]))
        for m in limits:
            rew = np.zeros((args.problems, g_max), dtype=np.int64)
            cor = np.zeros((args.problems, g_max), dtype=bool)
            lens = np.zeros((args.problems, g_max), dtype=np.int64)
            for i, p in enumerate(vprobs):
                for r in range(g_max):
                    toks = completions[i * g_max + r][:m]
                    rew[i, r] = env.reward(p, decode(toks, skip_special_tokens=True))
                    cor[i, r] = rew[i, r] == REWARD_SCALE
                    lens[i, r] = len(toks)
            for g in sorted(args.group_sizes):
                row = metrics(rew[:, :g], cor[:, :g], lens[:, :g], chance, s_per_row_step, g)
                rows.append({"rescored": vlabel, "max_new_tokens": m, **row})
    per_problem = []
    for i, p in enumerate(problems):
        texts = [decode(completions[i * g_max + r], skip_special_tokens=True) for r in range(g_max)]
        per_problem.append({"prompt": p.prompt, "right": sum(env.reward(p, t) == REWARD_SCALE for t in texts)})
    examples = [decode(completions[i * g_max][:args.max_new_tokens], skip_special_tokens=True)
                for i in range(min(3, args.problems))]
    return {
        "key": label(name, params, temperature_milli), "environment": name, "params": params,
        "temperature_milli": temperature_milli, "problems": args.problems, "rollouts_per_problem": g_max,
        "max_new_tokens_sampled": args.max_new_tokens, "sampler": sampler, "wall_s": wall,
        "tokens": int(sum(len(c) for c in completions)), "s_per_row_step": s_per_row_step,
        "example_prompt": problems[0].prompt, "example_completions": examples, "rows": rows,
        "per_problem": per_problem,
    }


# ---- report ---------------------------------------------------------------------------------------
def render(settings: list[dict], data: dict) -> str:
    out = ["# Learning zone: GRPO signal of each environment setting with the base model\n",
           f"Model `{data['model']}`; sampling: {settings[0]['sampler'] if settings else '-'}; torch threads "
           f"{data['environment']['threads']}. Problem seeds PRF(\"learning-zone\", i), the same for every "
           "setting (paired). Smaller group sizes and completion limits are read off the same rollouts "
           "(exact, see the script's docstring); `s/group` is an estimate scaled from the run's wall time.\n",
           "signal = share of groups whose rewards are not all equal; correct-signal = share with both right "
           "and wrong rollouts; chance = mean expected reward of a uniformly random well-formed answer.\n"]
    headers = ["setting", "rescored", "M", "G", "mean reward", "accuracy", "chance", "signal", "correct-signal",
               "all wrong", "all right", "tokens", "s/group"]
    table = []
    for s in settings:
        for r in s["rows"]:
            table.append([s["key"], r["rescored"] or "-", r["max_new_tokens"], r["group_size"],
                          f"{r['mean_reward']:.3f}", f"{r['accuracy']:.3f}", f"{r['chance_reward']:.3f}",
                          f"{r['signal_rate']:.2f}", f"{r['correct_signal_rate']:.2f}",
                          f"{r['groups_all_wrong']:.2f}", f"{r['groups_all_right']:.2f}",
                          f"{r['mean_tokens']:.1f}", f"{r['est_s_per_group']:.1f}"])
    out.append(md_table(headers, table))
    out.append("\n## Runs\n")
    out.append(md_table(["setting", "problems x rollouts", "sampled M", "wall s", "tokens", "ms per row-step"],
                        [[s["key"], f"{s['problems']} x {s['rollouts_per_problem']}", s["max_new_tokens_sampled"],
                          f"{s['wall_s']:.0f}", s["tokens"], f"{1000 * s['s_per_row_step']:.1f}"] for s in settings]))
    out.append("\n## Examples (rollout 0 of the first problems)\n")
    for s in settings:
        out.append(f"* {s['key']}: prompt `{s['example_prompt']}`")
        for c in s["example_completions"]:
            out.append(f"  * `{json.dumps(c)[1:-1][:200]}`")
    if data.get("notes"):
        out.append("\n## Notes\n\n" + data["notes"].strip() + "\n")
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="smollm2 | tiny | PATH")
    ap.add_argument("--problems", type=int, default=48)
    ap.add_argument("--temperatures", default="1000", help="comma-separated temperature_milli values")
    ap.add_argument("--group-sizes", default="4,8,16")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="completion limit sampled")
    ap.add_argument("--truncations", default="", help="smaller limits read off the same rollouts, e.g. 24,32")
    ap.add_argument("--env", action="append", default=None,
                    help="NAME or NAME:key=v,... (repeatable; unnamed params take DEFAULT_PARAMS); default add")
    ap.add_argument("--rescore", action="append", default=[], help="reward-only param KEY=v1,v2 scored post hoc")
    ap.add_argument("--batch", type=int, default=16)
    add_device_argument(ap)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--merge", action="store_true", help="keep the settings of an existing report (replaced by key)")
    ap.add_argument("--notes", help="markdown file appended to the report as Notes")
    ap.add_argument("--name", default=NAME, help="report name under reports/")
    ap.add_argument("--render-only", action="store_true",
                    help="re-render the existing report (with --notes) without sampling")
    args = ap.parse_args()
    device = device_or_exit(args.device)
    if args.render_only:
        data = json.loads((REPORTS / f"{args.name}.json").read_text())
        if args.notes:
            data["notes"] = open(args.notes).read()
        jp, mp = write(args.name, data, render(data["settings"], data))
        print(f"wrote {jp} and {mp}")
        return 0
    args.temperatures = [int(t) for t in args.temperatures.split(",") if t]
    args.group_sizes = [int(g) for g in args.group_sizes.split(",") if g]
    args.truncations = [int(m) for m in args.truncations.split(",") if m]
    torch.set_num_threads(args.threads)
    envs = [parse_env(e) for e in (args.env or ["add"])]
    rescore = parse_rescore(args.rescore)

    from verification.model import load_model

    lm = load_model(args.model, device)
    previous: list[dict] = []
    path = REPORTS / f"{args.name}.json"
    if args.merge and path.is_file():
        previous = json.loads(path.read_text()).get("settings", [])
    settings = []
    for name, params in envs:
        for t in args.temperatures:
            s = run_setting(lm, name, params, t, args, rescore)
            settings.append(s)
            best = [r for r in s["rows"] if r["max_new_tokens"] == args.max_new_tokens and not r["rescored"]]
            print(f"{s['key']}: {s['wall_s']:.0f} s, " + "; ".join(
                f"G={r['group_size']} reward {r['mean_reward']:.3f} acc {r['accuracy']:.3f} "
                f"signal {r['signal_rate']:.2f}" for r in best), flush=True)
    keys = {s["key"] for s in settings}
    settings = [s for s in previous if s["key"] not in keys] + settings
    data = {"model": args.model, "environment": environment(device), "settings": settings,
            "notes": open(args.notes).read() if args.notes else ""}
    jp, mp = write(args.name, data, render(settings, data))
    print(f"wrote {jp} and {mp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
