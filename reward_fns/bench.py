"""Reward throughput and worst-case timings against a straightforward regex reward (`make bench`).

- rewards/s on a GRPO-like batch (32 prompts x 8 rollouts: perfect, partial, sloppy and malformed
  answers) for each mode, per sample (verl's `compute_score`) and batched (EasyR1's
  `compute_score_batch`), next to `regex_reward`, the same exact spec written the obvious way
  (`re.search(r"<tag>(.*?)</tag>")`, JSON ground truth parsed per call), measured in the same run.
- adversarial 1 MB responses: ours at 1 MB; the regex baseline is quadratic on some shapes, so it is
  timed at two small sizes and extrapolated to 1 MB with the measured growth exponent.

    python -m reward_fns.bench            # writes outputs/bench/reward_fns.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import string
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path

from inference.fileio import write_json
from inference.protocol import ACTION_VOCABULARY, Decomposition, render_decomposition
from reward_fns.imageedit_r1 import compute_score, compute_score_batch

MEGABYTE = 1_000_000
PROMPTS, ROLLOUTS = 32, 8
SUBJECTS = ("coat", "hair", "sky", "dog", "lamp", "car", "tree", "face", "wall", "shirt", "cup", "sign")
GOALS = ("scarlet red", "warm light", "sunset sky", "no clutter", "sharper", "vintage film look", "blue")


# --- the baseline: the spec written the obvious way ------------------------------------------------

_TAGS = ("think", "action", "subjects", "goals")
_FORMAT = re.compile(
    r"\s*<think>(.*?)</think>\s*<action>(.*?)</action>\s*<subjects>(.*?)</subjects>\s*<goals>(.*?)</goals>\s*",
    re.S,
)
_STRIP = string.whitespace + string.punctuation + "\u2018\u2019\u201c\u201d"


def _regex_normalise(items: list[str]) -> set[str]:
    normalised = {" ".join(unicodedata.normalize("NFKC", i).lower().split()).strip(_STRIP) for i in items}
    return normalised - {""}


def _regex_items(content: str) -> set[str]:
    try:
        value = json.loads(content)
        items = [x for x in value if isinstance(x, str)] if isinstance(value, list) else None
    except (ValueError, RecursionError):
        items = None
    return _regex_normalise(re.split(r"[,;\n]", content) if items is None else items)


def _regex_f1(pred: set[str], gt: set[str]) -> float:
    if not pred and not gt:
        return 1.0
    if not pred or not gt:
        return 0.0
    hits = len(pred & gt)
    if not hits:
        return 0.0
    p, r = hits / len(pred), hits / len(gt)
    return 2 * p * r / (p + r)


def regex_reward(solution_str: str, ground_truth: str) -> dict[str, float]:
    """The exact-mode reward as a straightforward regex implementation (the bench's peer)."""
    gt = json.loads(ground_truth)
    match = _FORMAT.fullmatch(solution_str)
    ok = match is not None
    if ok:
        bodies = match.groups()
        all_tags = [f"<{t}>" for t in _TAGS] + [f"</{t}>" for t in _TAGS]
        ok = not any(tag in body for body in bodies for tag in all_tags)
        for body in bodies[1:]:
            try:
                value = json.loads(body)
                ok = ok and isinstance(value, list) and all(isinstance(x, str) for x in value)
            except (ValueError, RecursionError):
                ok = False
    region = solution_str.split("</think>", 1)[1] if "</think>" in solution_str else solution_str
    result = {"format": float(ok)}
    for tag, key, name in (
        ("action", "actions", "action"),
        ("subjects", "subjects", "subject"),
        ("goals", "goals", "goal"),
    ):
        found = re.search(rf"<{tag}>(.*?)</{tag}>", region, re.S)
        result[name] = (
            0.0 if found is None else _regex_f1(_regex_items(found.group(1)), _regex_normalise(gt[key]))
        )
    result = {"score": sum(result.values()) / 4, **result}
    return result


# --- workloads -------------------------------------------------------------------------------------


def grpo_batch(seed: int = 0) -> list[tuple[str, str]]:
    """(response, ground truth) pairs like one GRPO step: 32 prompts x 8 rollouts of mixed quality."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(PROMPTS):
        truth = Decomposition(
            tuple(rng.sample(ACTION_VOCABULARY, rng.randint(1, 2))),
            tuple(rng.sample(SUBJECTS, rng.randint(1, 3))),
            tuple(rng.sample(GOALS, rng.randint(1, 2))),
        )
        for _ in range(ROLLOUTS):
            kind = rng.random()
            guess = Decomposition(
                tuple(rng.sample(ACTION_VOCABULARY, rng.randint(1, 2))) if kind < 0.3 else truth.actions,
                truth.subjects[: rng.randint(1, len(truth.subjects))],
                tuple(g.split()[0] for g in truth.goals) if kind < 0.6 else truth.goals,
                think="The user wants "
                + ", ".join(truth.actions)
                + " on "
                + " and ".join(truth.subjects)
                + ".",
            )
            response = render_decomposition(guess)
            if kind > 0.9:  # sloppy: prose around, unclosed goals
                response = "Sure! " + response.rsplit("</goals>", 1)[0]
            elif kind > 0.8:  # comma lists instead of JSON
                response = response.replace('["', "").replace('"]', "").replace('", "', ", ")
            pairs.append((response, truth.to_json()))
    return pairs


def adversarial_shapes(size: int) -> dict[str, str]:
    """Responses of about `size` characters that break naive parsers."""
    good = '<think>t</think><action>["recolor"]</action><subjects>["coat"]</subjects><goals>["red"]</goals>'
    return {
        "unclosed <action> flood": "<action>" * (size // 8),
        "unclosed tags, all four": "<think><action><subjects><goals>" * (size // 32),
        "close/open flood": "</think>" + "</action><action>" * (size // 17),
        "huge think": "<think>" + "x" * size + "</think>" + good,
        "1M commas": "<subjects>" + "," * size + "</subjects>",
        "[ then 1M commas": '<subjects>["a"' + "," * size + "</subjects>",
        "distinct items": "<goals>" + ",".join(f"g{i}" for i in range(size // 7)) + "</goals>",
        "JSON array of items": '<goals>["' + '","'.join(f"g{i}" for i in range(size // 9)) + '"]</goals>',
        "deep [ nesting": "<action>" + "[" * size + "</action>",
        "whitespace between tags": "<think></think>" + " " * size + "<action>[]</action>",
    }


# --- timing ----------------------------------------------------------------------------------------


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def throughput(pairs: list[tuple[str, str]], repeats: int) -> dict[str, dict[str, float]]:
    n = len(pairs)
    inputs = [{"response": r, "response_length": len(r), "ground_truth": g} for r, g in pairs]
    rows: dict[str, dict[str, float]] = {}

    def per_sample(**kw):
        return lambda: [compute_score("bench", r, g, None, **kw) for r, g in pairs]

    baseline = best_of(lambda: [regex_reward(r, g) for r, g in pairs], repeats)
    rows["regex baseline (exact)"] = {"rewards_per_s": n / baseline}
    rows["exact, per sample (verl)"] = {"rewards_per_s": n / best_of(per_sample(), repeats)}

    rows["exact, batch (EasyR1)"] = {
        "rewards_per_s": n / best_of(lambda: compute_score_batch(inputs), repeats)
    }
    rows["fuzzy, per sample"] = {"rewards_per_s": n / best_of(per_sample(mode="fuzzy"), repeats)}
    rows["fuzzy, batch"] = {
        "rewards_per_s": n / best_of(lambda: compute_score_batch(inputs, mode="fuzzy"), repeats)
    }

    from reward_fns.soft_matching import ENCODER

    start = time.perf_counter()
    ENCODER.embed(["load"])
    load_s = time.perf_counter() - start
    ENCODER.clear_cache()
    cold = best_of(lambda: compute_score_batch(inputs, mode="semantic"), 1)
    rows["semantic, batch, empty embedding cache"] = {"rewards_per_s": n / cold, "model_load_s": load_s}
    rows["semantic, batch, cached"] = {
        "rewards_per_s": n / best_of(lambda: compute_score_batch(inputs, mode="semantic"), repeats)
    }
    rows["semantic, per sample, cached"] = {
        "rewards_per_s": n / best_of(per_sample(mode="semantic"), repeats)
    }
    for row in rows.values():
        row["vs_regex"] = row["rewards_per_s"] * baseline / n
    return rows


def adversarial(
    regex_sizes: tuple[int, int], regex_budget_s: float, regex_direct_s: float = 3.0
) -> dict[str, dict[str, float]]:
    truth = json.dumps({"actions": ["recolor"], "subjects": ["coat"], "goals": ["red"]})
    rows = {}
    small, large = regex_sizes
    small_shapes, large_shapes = adversarial_shapes(small), adversarial_shapes(large)
    for name, response in adversarial_shapes(MEGABYTE).items():
        row = {"chars": len(response)}
        for mode in ("exact", "fuzzy"):
            row[f"{mode}_ms_1mb"] = 1000 * best_of(
                lambda m=mode, r=response: compute_score("b", r, truth, mode=m)
            )
        t_small = best_of(lambda n=name: regex_reward(small_shapes[n], truth), 1)
        if t_small < 0.2:  # cheap: take the best of 3 against noise from other jobs
            t_small = min(t_small, best_of(lambda n=name: regex_reward(small_shapes[n], truth), 2))
        row.update(regex_ms_small=1000 * t_small, regex_small_chars=len(small_shapes[name]))
        if t_small * 8 < regex_budget_s:
            t_large = best_of(lambda n=name: regex_reward(large_shapes[n], truth), 3 if t_small < 0.1 else 1)
            ratio = len(large_shapes[name]) / len(small_shapes[name])
            exponent = max(1.0, math.log(max(t_large, 1e-9) / max(t_small, 1e-9)) / math.log(ratio))
            row.update(
                regex_ms_large=1000 * t_large, regex_large_chars=len(large_shapes[name]), exponent=exponent
            )
            estimate = t_large * (len(response) / len(large_shapes[name])) ** exponent
            if estimate < regex_direct_s:  # affordable: measure the baseline at 1 MB instead
                row["regex_ms_1mb"] = 1000 * best_of(lambda r=response: regex_reward(r, truth), 1)
            else:
                row["regex_ms_1mb_extrapolated"] = 1000 * estimate
        rows[name] = row
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="best of N for each throughput figure")
    parser.add_argument("--regex-sizes", type=int, nargs=2, default=(20_000, 40_000), help="baseline sizes")
    parser.add_argument(
        "--regex-budget-s", type=float, default=20.0, help="skip the larger baseline size above"
    )
    parser.add_argument("--out", default="outputs/bench/reward_fns.json")
    args = parser.parse_args(argv)

    pairs = grpo_batch()
    started = time.perf_counter()
    agree = sum(regex_reward(r, g) == compute_score("b", r, g) for r, g in pairs)
    print(f"regex baseline agrees with compute_score on {agree}/{len(pairs)} responses of the batch")
    rates = throughput(pairs, args.repeats)
    print(
        f"rewards/s on a GRPO-like batch of {len(pairs)} responses ({PROMPTS} prompts x {ROLLOUTS}), best of {args.repeats}"
    )
    print(f"{'reward':42} {'rewards/s':>10} {'vs regex':>9}")
    for name, row in rates.items():
        print(f"{name:42} {row['rewards_per_s']:>10.0f} {row['vs_regex']:>8.2f}x")
    worst = adversarial(tuple(args.regex_sizes), args.regex_budget_s)
    print(
        "\nadversarial responses (~1 MB): ours at 1 MB; regex at 1 MB where affordable, else extrapolated (*)"
    )
    print(
        f"{'shape':26} {'exact ms':>9} {'fuzzy ms':>9} {'regex ms @size':>18} {'exp':>5} {'regex ms @1MB':>15}"
    )
    for name, row in worst.items():
        size = f"{row['regex_ms_small']:.1f} @{row['regex_small_chars'] // 1000}K"
        if "regex_ms_large" in row:
            size = f"{row['regex_ms_large']:.1f} @{row['regex_large_chars'] // 1000}K"
        if "regex_ms_1mb" in row:
            at_1mb = f"{row['regex_ms_1mb']:.0f}"
        elif "regex_ms_1mb_extrapolated" in row:
            at_1mb = f"{row['regex_ms_1mb_extrapolated']:.0f} *"
        else:
            at_1mb = "-"
        print(
            f"{name:26} {row['exact_ms_1mb']:>9.1f} {row['fuzzy_ms_1mb']:>9.1f} {size:>18} "
            f"{row.get('exponent', float('nan')):>5.2f} {at_1mb:>15}"
        )
    total = time.perf_counter() - started
    print(f"\nbench took {total:.0f} s")
    write_json(
        Path(args.out),
        {
            "throughput": rates,
            "adversarial": worst,
            "batch": len(pairs),
            "baseline_agreement": agree,
            "seconds": total,
            "cpu_count": os.cpu_count(),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
