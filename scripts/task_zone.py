"""Task zone: which candidate tasks sit where the base model's GREEDY accuracy is low and its groups
still carry GRPO signal (issue 28 groundwork). Measurement only; nothing here is protocol.

Two parts, both written to reports/task_zone.json (render: reports/task_zone.md, plus notes):

  determinism   reasoning-gym items as a function of (dataset, config, seed, index): the same items
                are generated in fresh subprocesses under several PYTHONHASHSEED values and import
                orders (reasoning_gym first / torch+numpy first / global `random` seeded and
                consumed first) and the SHA-256 of their canonical JSON compared. Also: share of
                integer answers, prompt lengths in SmolLM2 chat-template tokens (MAX_PROMPT_TOKENS),
                and the seed+index overlap (item (s, i) == item (s + i, 0) for chain_sum).
  measure       per task setting, on N problems: greedy accuracy (argmax decoding with the HF model
                of verification.model), sampled accuracy at T (the protocol's seeded Gumbel-max
                sampling, scripts/learning_zone.py's decoding loop, G rollouts per problem), the share
                of groups with reward variance, mean completion tokens, seconds per group.

Repo tasks ("add:min_terms=3,...") use the environment's own prompt and reward. reasoning-gym tasks
("rg:chain_sum:min_terms=2,max_terms=3,...") use the item's question + the repo's answer-format
sentence, and an exact-integer rule: reward 1 when the last number of the completion is an integer
equal to the item's answer (verification.environments.numbers.parse_last_number), else 0. Items
whose answer is not an integer are skipped (their share is reported by `determinism`).
--cot appends a step-by-step instruction instead (final line 'Answer: N').

Needs reasoning-gym: run with /tmp/rgvenv/bin/python (system site-packages visible):

    PYTHONPATH=. nice -n 19 /tmp/rgvenv/bin/python scripts/task_zone.py determinism
    PYTHONPATH=. nice -n 19 /tmp/rgvenv/bin/python scripts/task_zone.py measure --problems 32 \
        --task add --task "add:min_terms=3,max_terms=3" --task "rg:gsm_symbolic"
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_lib import REPORTS  # noqa: E402

NAME = "task_zone"
ANSWER_SENTENCE = "Give the final answer as a number on the last line."
COT_SENTENCE = "Think step by step, then give the final answer on the last line as 'Answer: N'."
RG_SEED = 20261207  # measurement seed of the reasoning-gym datasets (never a protocol value)

# the reasoning-gym configs compared in the determinism check
RG_CONFIGS = {
    "chain_sum": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    "basic_arithmetic": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
                         "allow_parentheses": False, "allow_negation": False},
    "basic_arithmetic_default": {},
    "gsm_symbolic": {},
    "products": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "decimal_chain_sum": {},
    "leg_counting": {},
}


def rg_dataset(name: str, config: dict, seed: int, size: int):
    try:
        import reasoning_gym
    except ImportError:
        sys.exit("error: this measurement needs reasoning-gym: pip install reasoning-gym==0.1.25 "
                 "(in a separate virtual environment; it is not a rollproof dependency yet)")

    real = name.removesuffix("_default")
    return reasoning_gym.create_dataset(real, seed=seed, size=size, **config)


def report_path() -> Path:
    return REPORTS / f"{NAME}.json"


def load_report() -> dict:
    p = report_path()
    return json.loads(p.read_text()) if p.is_file() else {}


def save_report(data: dict) -> None:
    REPORTS.mkdir(exist_ok=True)
    report_path().write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


# ---- determinism --------------------------------------------------------------------------------
CHILD = r"""
import json, hashlib, sys
order = sys.argv[1]
if order == "torch_first":
    import torch, numpy
if order == "global_random":
    import random
    random.seed(12345); [random.random() for _ in range(1000)]
    import numpy
    numpy.random.seed(7)
import reasoning_gym
sys.path.insert(0, sys.argv[2])
from task_zone import RG_CONFIGS, rg_dataset
out = {}
for name, cfg in RG_CONFIGS.items():
    for seed in (0, 1234567, 2**40 + 3):
        ds = rg_dataset(name, cfg, seed, 200)
        items = [ds[i] for i in range(200)]
        blob = json.dumps(items, sort_keys=True, default=repr).encode()
        out[f"{name}/seed={seed}"] = hashlib.sha256(blob).hexdigest()
print(json.dumps(out))
"""


def determinism(args) -> dict:
    here = str(Path(__file__).resolve().parent)
    runs = []
    for hashseed in ("0", "1", "4242", "random"):
        for order in ("rg_first", "torch_first", "global_random"):
            env = dict(os.environ, PYTHONHASHSEED=hashseed)
            res = subprocess.run([sys.executable, "-c", CHILD, order, here], env=env, capture_output=True,
                                 text=True, check=True)
            runs.append({"hashseed": hashseed, "order": order, "digests": json.loads(res.stdout.strip().splitlines()[-1])})
            print(f"PYTHONHASHSEED={hashseed} {order}: done", flush=True)
    keys = sorted(runs[0]["digests"])
    agree = {k: len({r["digests"][k] for r in runs}) == 1 for k in keys}

    # answers, prompt lengths, overlap
    from verification.constants import MAX_PROMPT_TOKENS

    tok = _chat_tokenizer() if args.tokens else None
    stats = {}
    for name, cfg in RG_CONFIGS.items():
        ds = rg_dataset(name, cfg, RG_SEED, args.items)
        items = [ds[i] for i in range(args.items)]
        answers = [it["answer"] for it in items]
        integer = [a for a in answers if _is_int(a)]
        row = {"config": cfg, "items": len(items), "integer_share": len(integer) / len(items),
               "non_integer_examples": [a for a in answers if not _is_int(a)][:5],
               "answer_abs_max": max((abs(int(a)) for a in integer), default=None),
               "example": items[0]["question"], "example_answer": items[0]["answer"]}
        if tok is not None:
            lens = sorted(len(tok(it["question"] + " " + ANSWER_SENTENCE)) for it in items)
            row["prompt_tokens"] = {"min": lens[0], "median": lens[len(lens) // 2], "max": lens[-1],
                                    "over_max": sum(n > MAX_PROMPT_TOKENS for n in lens)}
        # (seed, idx) -> random.Random(seed + idx): item (s, i) equals item (s + i, 0)?
        a = rg_dataset(name, cfg, RG_SEED, 10)[5]
        b = rg_dataset(name, cfg, RG_SEED + 5, 10)[0]
        row["item_s_plus_i_equals"] = json.dumps(a, sort_keys=True, default=repr).replace('"source_index": 5', "") == \
            json.dumps(b, sort_keys=True, default=repr).replace('"source_index": 0', "")
        stats[name] = row
        print(name, {k: v for k, v in row.items() if k not in ("example",)}, flush=True)
    import reasoning_gym
    from importlib.metadata import version

    return {"python": sys.version.split()[0], "rng_primitives_by_python": rng_primitives(args.pythons), "dist_version": version("reasoning-gym"),
            "module___version__": getattr(reasoning_gym, "__version__", None),
            "runs": [{"hashseed": r["hashseed"], "order": r["order"]} for r in runs],
            "digests": runs[0]["digests"], "all_agree": agree, "stats": stats}


def _chat_tokenizer():
    """SmolLM2's tokenizer with the chat template, as LoadedModel.chat_prompt_ids applies it (no weights)."""
    from transformers import AutoTokenizer

    from verification.model import SMOLLM2_GGUF, _smollm2_dir

    t = AutoTokenizer.from_pretrained(_smollm2_dir(), gguf_file=SMOLLM2_GGUF)

    def ids(text: str) -> list[int]:
        chat = t.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        return list(t(chat, add_special_tokens=False)["input_ids"])
    return ids


# the random.Random primitives the three generators call, seeded as they seed them (int seed + index)
RNG_PRIMITIVES = r"""
import random, hashlib, sys
out = []
for s in list(range(200)) + [2**40 + 3, 20261207]:
    r = random.Random(s)
    out.append((r.randint(2, 12), r.randint(-999, 999), r.choice(["+", "-", "*", "/"]), repr(r.random()),
                repr(r.uniform(0.25, 2.5)), r.randrange(100, 500, 50), r.choices(list(range(85)), k=5),
                r.sample(list(range(30)), 4), repr(round(r.uniform(2.25, 11.5) * 4) / 4), repr(round(r.uniform(1.26, 3.53), 2))))
    l = list(range(10)); r.shuffle(l); out.append(l)
print(sys.version.split()[0], hashlib.sha256(repr(out).encode()).hexdigest())
"""


def rng_primitives(pythons: list[str]) -> dict[str, str]:
    """SHA-256 of a stream of random.Random draws under each interpreter (reasoning-gym itself needs its
    dependencies, installed only for one; its generators only call these primitives)."""
    out = {}
    for exe in [sys.executable] + pythons:
        if not Path(exe).is_file():
            continue
        res = subprocess.run([exe, "-c", RNG_PRIMITIVES], capture_output=True, text=True, check=True)
        version, digest = res.stdout.split()
        out[version] = digest
    return out


def _is_int(s: str) -> bool:
    try:
        return str(int(s)) == s.strip()
    except ValueError:
        return False


# ---- tasks --------------------------------------------------------------------------------------
class Task:
    """One task setting: problems (prompt text, scorer) from a seed index."""

    def __init__(self, spec: str, cot: bool):
        self.spec, self.cot = spec, cot
        if spec.startswith("rg:"):
            _, name, rest = (spec + ":").split(":", 2)
            self.kind, self.name = "rg", name
            self.config = dict(RG_CONFIGS.get(name, {}))
            for item in filter(None, rest.rstrip(":").split(",")):
                k, _, v = item.partition("=")
                self.config[k] = int(v) if v.lstrip("-").isdigit() else (v == "True" if v in ("True", "False") else v)
        else:
            from verification import environments

            name, _, rest = spec.partition(":")
            self.kind, self.name = "env", name
            self.env = environments.get(name)
            self.config = dict(self.env.DEFAULT_PARAMS)
            for item in filter(None, rest.split(",")):
                k, _, v = item.partition("=")
                self.config[k] = int(v)
            self.env.check_params(self.config)

    def label(self) -> str:
        cfg = ",".join(f"{k}={v}" for k, v in sorted(self.config.items()) if k != "format_credit_milli")
        return f"{self.kind}:{self.name}({cfg})" + (" +CoT" if self.cot else "")

    def problems(self, n: int) -> tuple[list[tuple[str, object]], int]:
        """[(prompt text, answer or Problem)] of n problems; and how many were skipped (non-integer)."""
        out, skipped = [], 0
        if self.kind == "env":
            from verification.prf import prf

            for i in range(n):
                p = self.env.generate(prf("task-zone", i), self.config)
                text = p.prompt.replace(ANSWER_SENTENCE, COT_SENTENCE) if self.cot else p.prompt
                out.append((text, p))
            return out, 0
        ds = rg_dataset(self.name, self.config, RG_SEED, 10 * n)
        i = 0
        while len(out) < n:
            it = ds[i]
            i += 1
            if not _is_int(it["answer"]):
                skipped += 1
                continue
            out.append((it["question"] + " " + (COT_SENTENCE if self.cot else ANSWER_SENTENCE), int(it["answer"])))
        return out, skipped

    def correct(self, problem, completion: str) -> bool:
        from verification.environments import REWARD_SCALE
        from verification.environments.numbers import parse_last_number

        if self.kind == "env":
            if self.cot:  # same rule, on the CoT prompt: the last number must be the sum
                value, _ = parse_last_number(completion)
                return value is not None and value == sum(_terms(problem.prompt))
            return self.env.reward(problem, completion) == REWARD_SCALE
        value, _ = parse_last_number(completion)
        return value is not None and value == problem


def _terms(prompt: str) -> list[int]:
    expr = prompt.removeprefix("Compute ").split(".")[0]
    return [int(t) for t in expr.split(" + ")]


# ---- decoding -----------------------------------------------------------------------------------
def wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    z, p = 1.96, k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def measure_task(lm, task: Task, args) -> dict:
    import torch

    from learning_zone import _own_loop
    from trainer.greedy import greedy_completions
    from miner.engine import RolloutRequest
    from verification.prf import prf

    probs, skipped = task.problems(args.problems)
    prompts = [lm.chat_prompt_ids(text) for text, _ in probs]
    dec = lm.tokenizer.decode
    row = {"task": task.label(), "problems": len(probs), "skipped_non_integer": skipped,
           "max_new_tokens": args.max_new_tokens, "prompt_tokens_max": max(map(len, prompts)),
           "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts), "example_prompt": probs[0][0]}
    t0 = time.perf_counter()
    g = greedy_completions(lm, prompts, args.max_new_tokens, batch_size=args.batch)
    row["greedy_s"] = time.perf_counter() - t0
    gk = sum(task.correct(p, dec(c, skip_special_tokens=True)) for (_, p), c in zip(probs, g))
    row.update(greedy_acc=gk / len(probs), greedy_ci=wilson(gk, len(probs)),
               greedy_tokens=sum(map(len, g)) / len(g), greedy_example=dec(g[0], skip_special_tokens=True))
    print(f"{task.label()}: greedy {gk}/{len(probs)} ({row['greedy_s']:.0f} s)", flush=True)
    if args.group_size:
        G = args.group_size
        reqs = [RolloutRequest(pr, prf("task-zone-sample", i), r) for i, pr in enumerate(prompts) for r in range(G)]
        t0 = time.perf_counter()
        comps = []
        with torch.no_grad():
            for s in range(0, len(reqs), args.batch):
                comps.extend(_own_loop(lm, reqs[s:s + args.batch], args.temperature_milli / 1000, args.max_new_tokens))
        wall = time.perf_counter() - t0
        right = [[task.correct(probs[i][1], dec(comps[i * G + r], skip_special_tokens=True)) for r in range(G)]
                 for i in range(len(probs))]
        k = sum(map(sum, right))
        sig = sum(0 < sum(r) < G for r in right)
        row.update(sampled_acc=k / (G * len(probs)), sampled_ci_problem_level=_cluster_ci(right),
                   signal_share=sig / len(probs), signal_ci=wilson(sig, len(probs)),
                   groups_all_wrong=sum(sum(r) == 0 for r in right) / len(probs),
                   groups_all_right=sum(sum(r) == G for r in right) / len(probs),
                   sampled_tokens=sum(map(len, comps)) / len(comps), sampled_s=wall,
                   s_per_group=wall / len(probs), group_size=G, temperature_milli=args.temperature_milli,
                   sampled_example=dec(comps[0], skip_special_tokens=True),
                   # per problem, its rollouts' outcomes in order ("1" right): the signal of a smaller
                   # group is the same data's first rollouts (signal_at)
                   outcomes=["".join("1" if x else "0" for x in r) for r in right])
        print(f"  sampled acc {row['sampled_acc']:.3f} signal {row['signal_share']:.2f} "
              f"({wall:.0f} s, {row['s_per_group']:.1f} s/group)", flush=True)
    return row


def signal_at(outcomes: list[str], g: int) -> float:
    """Share of problems whose first g rollouts differ in outcome (the signal of groups of g)."""
    return sum(0 < r[:g].count("1") < g for r in outcomes) / len(outcomes) if outcomes else 0.0


def _cluster_ci(right: list[list[bool]]) -> tuple[float, float]:
    """95% normal interval of the mean accuracy with problems as the unit (rollouts of one problem correlate)."""
    xs = [sum(r) / len(r) for r in right]
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / max(n - 1, 1))
    h = 1.96 * sd / math.sqrt(n)
    return (max(0.0, m - h), min(1.0, m + h))


# ---- report -------------------------------------------------------------------------------------
def render(data: dict) -> str:
    out = ["# Task zone: base greedy accuracy and GRPO signal of candidate tasks (issue 28 groundwork)\n",
           "Generated by `scripts/task_zone.py` (see its docstring); model SmolLM2-135M-Instruct; CPU, "
           "shared 2 cores under `nice -n 19`, so seconds are noisy and only comparable within one run.\n"]
    rows = data.get("measure", [])
    if rows:
        out.append("## Measurements\n")
        out.append("| task | M | greedy acc [95% CI] | T | sampled acc [95% CI] | signal share (G=8) [95% CI] | "
                   "all wrong / all right | tokens greedy / sampled | s greedy (all) | s per group | n | prompt tok max |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            sa = (f"{r['sampled_acc']:.3f} [{r['sampled_ci_problem_level'][0]:.2f}, {r['sampled_ci_problem_level'][1]:.2f}]"
                  if "sampled_acc" in r else "-")
            ss = f"{r['signal_share']:.2f} [{r['signal_ci'][0]:.2f}, {r['signal_ci'][1]:.2f}]" if "signal_share" in r else "-"
            aw = f"{r['groups_all_wrong']:.2f} / {r['groups_all_right']:.2f}" if "signal_share" in r else "-"
            st = f"{r['sampled_tokens']:.1f}" if "sampled_tokens" in r else "-"
            sg = f"{r['s_per_group']:.1f}" if "s_per_group" in r else "-"
            out.append(f"| {r['task']} | {r['max_new_tokens']} | {r['greedy_acc']:.3f} [{r['greedy_ci'][0]:.2f}, "
                       f"{r['greedy_ci'][1]:.2f}] | {r['temperature_milli'] / 1000 if 'temperature_milli' in r else '-'} | {sa} | {ss} | {aw} | {r['greedy_tokens']:.1f} / {st} | "
                       f"{r['greedy_s']:.0f} | {sg} | {r['problems']} | {r['prompt_tokens_max']} |")
        out.append("\nExamples (problem 0, greedy):\n")
        for r in rows:
            out.append(f"* {r['task']} M={r['max_new_tokens']}: `{r['example_prompt'][:160]}` -> "
                       f"`{json.dumps(r['greedy_example'])[1:-1][:200]}`")
    d = data.get("determinism")
    if d:
        out.append("\n## reasoning-gym determinism\n")
        out.append(f"reasoning-gym dist version {d['dist_version']} (module `__version__` says "
                   f"{d['module___version__']}); Python {d['python']}. {len(d['runs'])} fresh subprocesses: "
                   "PYTHONHASHSEED in {0, 1, 4242, random} x import order in {reasoning_gym first, torch+numpy "
                   "first, global `random` and numpy seeded and consumed first}; 200 items per (dataset, seed), "
                   "seeds 0, 1234567, 2^40+3.\n")
        out.append("| dataset/seed | SHA-256 of the 200 items (first 16 hex) | identical in every run |")
        out.append("|---|---|---|")
        for k, v in sorted(d["digests"].items()):
            out.append(f"| {k} | {v[:16]} | {d['all_agree'][k]} |")
        out.append("\n| dataset | config | integer answers | prompt tokens min/median/max (over 512) | "
                   "item(s, i) == item(s+i, 0) | example |")
        out.append("|---|---|---|---|---|---|")
        for name, s in d["stats"].items():
            pt = s.get("prompt_tokens")
            pts = f"{pt['min']}/{pt['median']}/{pt['max']} ({pt['over_max']})" if pt else "-"
            out.append(f"| {name} | `{json.dumps(s['config'])}` | {s['integer_share']:.3f} of {s['items']} "
                       f"(e.g. {', '.join(s['non_integer_examples'][:3]) or '-'}) | {pts} | {s['item_s_plus_i_equals']} | "
                       f"`{s['example'][:120]}` -> {s['example_answer']} |")
    notes = Path(REPORTS / f"{NAME}_notes.md")
    if notes.is_file():
        out.append("\n" + notes.read_text())
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("determinism")
    d.add_argument("--items", type=int, default=500)
    d.add_argument("--no-tokens", dest="tokens", action="store_false")
    d.add_argument("--pythons", nargs="*", default=[f"/root/.pyenv/versions/{v}/bin/python" for v in
                                                     ("3.10.13", "3.12.1", "3.13.0")])
    m = sub.add_parser("measure")
    m.add_argument("--task", action="append", required=True)
    m.add_argument("--problems", type=int, default=32)
    m.add_argument("--max-new-tokens", type=int, default=24)
    m.add_argument("--group-size", type=int, default=8, help="0: greedy only")
    m.add_argument("--temperature-milli", type=int, default=700)
    m.add_argument("--batch", type=int, default=32)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--cot", action="store_true")
    m.add_argument("--model", default="smollm2")
    sub.add_parser("render")
    args = ap.parse_args()
    data = load_report()
    if args.cmd == "determinism":
        result = determinism(args)
        data = load_report()  # a measure run may have written meanwhile
        data["determinism"] = result
    elif args.cmd == "measure":
        import torch

        from verification.model import load_model

        torch.set_num_threads(args.threads)
        lm = load_model(args.model)
        for spec in args.task:
            row = measure_task(lm, Task(spec, args.cot), args)
            data = load_report()
            def key(r):
                return r["task"], r["max_new_tokens"], r.get("temperature_milli")
            rows = [r for r in data.get("measure", []) if key(r) != key(row)]
            data["measure"] = rows + [row]
            save_report(data)
            (REPORTS / f"{NAME}.md").write_text(render(data))
    save_report(data)
    (REPORTS / f"{NAME}.md").write_text(render(data))
    print(f"wrote {report_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
