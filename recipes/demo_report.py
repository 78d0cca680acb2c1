"""What `make demo` measured, as `report.md` and `report.json`: the paper's Table 1 in miniature
(original < untrained < GRPO), with 95% bootstrap intervals, the equal-compute SFT control, the
constant-answer baseline and the learning-health signals that explain the result.

Every number here comes from files the stages wrote: the pipeline's per-item reference scores
(`eval.reference`), verl's validation dumps and its metrics log. Nothing is re-run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from eval.bootstrap import Estimate, bootstrap_difference, bootstrap_mean

#: Checkpoints of the demo, in Table 1's order (report.json keys), and their pipeline labels.
CHECKPOINT_LABELS: dict[str, str] = {
    "cold_start": "cold start",
    "grpo": "GRPO",
    "sft_control": "SFT control",
}
#: Steps averaged at each end of a run for the health signals' "first / last" comparison.
HEALTH_WINDOW = 10


def as_json(estimate: Estimate | None) -> dict[str, Any] | None:
    """{"mean", "ci": [lo, hi], "n"} (report.json's shape of an estimate)."""
    if estimate is None:
        return None
    return {"mean": estimate.mean, "ci": [estimate.low, estimate.high], "n": estimate.n}


# ---------------------------------------------------------------------------------------------
# Per-item scores


def per_item(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """{item id: {"reward", "exact"}} from `eval.reference` rows of one run. An item with no
    decomposition (the agent failed) scores reward 0; one with no edited image is not exact."""
    out = {}
    for row in rows:
        decomposition = row.get("decomposition") or {}
        reward = decomposition.get("score")
        out[str(row["id"])] = {
            "reward": float(reward) if reward is not None else 0.0,
            "exact": 1.0 if row.get("exact") else 0.0,
        }
    return out


def estimate(items: Mapping[str, Mapping[str, float]], key: str) -> Estimate | None:
    values = [v[key] for v in items.values()]
    return bootstrap_mean(values) if values else None


def paired(
    after: Mapping[str, Mapping[str, float]], before: Mapping[str, Mapping[str, float]], key: str
) -> Estimate | None:
    """Mean paired difference after - before over the items both runs hold, with its interval."""
    ids = sorted(set(after) & set(before))
    if not ids:
        return None
    return bootstrap_difference([after[i][key] for i in ids], [before[i][key] for i in ids])


def constant_baseline(
    training_answers: Sequence[str], held_out: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The most frequent training answer given to every held-out item: the reward of a decomposer
    that ignores the request (`held_out`: the items' ground-truth decompositions)."""
    from eval.reference import decomposition_scores

    answer, count = Counter(training_answers).most_common(1)[0]
    scores = [decomposition_scores(answer, gt) for gt in held_out]
    return {
        "answer": answer,
        "share_of_training_answers": count / len(training_answers),
        "reward": bootstrap_mean([s["score"] for s in scores]),
        "action": bootstrap_mean([s["action"] for s in scores]),
    }


def answer_diversity(traces: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How much a decomposer's answers vary with the request: distinct parsed decompositions and the
    share of the most common one (a decomposer that does not read gives one answer to many items)."""
    import json

    parsed = [
        json.dumps((t.get("decomposition") or {}).get("parsed"), sort_keys=True)
        for t in traces
        if (t.get("decomposition") or {}).get("parsed") is not None
    ]
    if not parsed:
        return {"items": len(traces), "distinct": 0, "most_common_share": None}
    count = Counter(parsed).most_common(1)[0][1]
    return {"items": len(traces), "distinct": len(set(parsed)), "most_common_share": count / len(traces)}


# ---------------------------------------------------------------------------------------------
# What an exact edit needs from the subjects

#: Subjects that name the whole scene: the tool editor needs no object for them.
SCENE_WIDE = ("image", "background")
#: Items grouped by what their ground-truth subjects ask of a decomposer, in report order.
SUBJECT_NEEDS = ("scene-wide only", "named in the request", "read from the image")


def subject_need(instruction: str, subjects: Sequence[str]) -> str:
    """What an exact edit of one item needs: only scene-wide subjects; object subjects all named
    verbatim in the request ("the blue triangle"); or at least one the request names by colour or
    shape alone ("the blue thing"), which only the image resolves."""
    objects = [s for s in subjects if s not in SCENE_WIDE]
    if not objects:
        return SUBJECT_NEEDS[0]
    return SUBJECT_NEEDS[1] if all(s in instruction for s in objects) else SUBJECT_NEEDS[2]


def exact_by_subject_need(
    truth: Mapping[str, tuple[str, Sequence[str]]],
    items: Mapping[str, Mapping[str, Mapping[str, float]]],
    traces: Mapping[str, Sequence[Mapping[str, Any]]],
) -> dict[str, Any]:
    """Exact edits per kind of item (`subject_need`), and how many of the object subjects named
    verbatim in the request each decomposer's answer contains: an exact edit needs every subject
    right, so a decomposer that does not copy names can only be exact on scene-wide items.

    `truth`: {item id: (request, ground-truth subjects)}; `items`: {checkpoint: per_item(...)};
    `traces`: {checkpoint: its pipeline traces} (checkpoints without traces, like 'original', get no
    copy rate)."""
    need = {item: subject_need(*truth[item]) for item in truth}
    exact = {
        kind: {
            "items": sum(1 for v in need.values() if v == kind),
            **{
                name: sum(int(per[i]["exact"]) for i in per if need.get(i) == kind)
                for name, per in items.items()
            },
        }
        for kind in SUBJECT_NEEDS
    }
    copied: dict[str, dict[str, int]] = {}
    for name, rows in traces.items():
        named = hits = 0
        for trace in rows:
            if trace.get("id") not in truth:
                continue
            request, subjects = truth[trace["id"]]
            answer = ((trace.get("decomposition") or {}).get("parsed") or {}).get("subjects") or []
            for subject in subjects:
                if subject not in SCENE_WIDE and subject in request:
                    named += 1
                    hits += subject in answer
        copied[name] = {"named": named, "copied": hits}
    return {"exact": exact, "named_subjects_copied": copied}


def subject_need_table(breakdown: Mapping[str, Any]):
    """Exact edits by what the subjects need, one column per checkpoint, and the copy rate."""
    from eval.tables import Table

    exact = breakdown["exact"]
    names = [k for k in next(iter(exact.values())) if k != "items"]
    rows = [[kind, str(exact[kind]["items"]), *(str(exact[kind][n]) for n in names)] for kind in exact]
    copy = breakdown["named_subjects_copied"]
    rows.append(
        [
            "object subjects named in the request that the answer copies",
            str(next(iter(copy.values()))["named"]) if copy else "",
            *(f"{copy[n]['copied']}" if n in copy else "n/a" for n in names),
        ]
    )
    return Table(
        title="Exact edits by what the item's subjects need (held-out items; counts)",
        header=["items whose subjects are", "items", *names],
        rows=rows,
    )


def subject_need_findings(
    breakdown: Mapping[str, Any], labels: Mapping[str, str] = CHECKPOINT_LABELS
) -> list[str]:
    """Report lines: where the exact edits came from, and whether the decomposers copy names."""
    exact, copy = breakdown["exact"], breakdown["named_subjects_copied"]
    scene, others = SUBJECT_NEEDS[0], SUBJECT_NEEDS[1:]
    names = [n for n in copy if n in labels]
    lines = []
    if names:
        per = ", ".join(
            f"{labels[n]} {exact[scene][n]}/{exact[scene]['items']} scene-wide and "
            f"{sum(exact[k][n] for k in others)}/{sum(exact[k]['items'] for k in others)} with objects"
            for n in names
        )
        lines.append(f"- Exact edits need every subject right. Exact items: {per}.")
        named = copy[names[0]]["named"]
        rates = ", ".join(
            f"{labels[n]} {copy[n]['copied']} ({copy[n]['copied'] / named:.0%})"
            if named
            else f"{labels[n]} 0"
            for n in names
        )
        lines.append(
            f"- Of the {named} object subjects that the held-out requests name verbatim, the answers copy: "
            f"{rates}. A decomposer that does not copy names can be exact only on the "
            f"{exact[scene]['items']} scene-wide items, whatever the training."
        )
    return lines


# ---------------------------------------------------------------------------------------------
# Learning health


def health_summary(metrics: Sequence[Mapping[str, Any]], window: int = HEALTH_WINDOW) -> dict[str, Any]:
    """Each logged health signal and reward component: its metric, mean of the first and last
    `window` steps."""
    from eval.curves import health_series, reward_series

    out = {}
    series = {title: (name, values) for title, (name, _, values) in health_series(metrics).items()}
    series |= {f"reward: {k}": (f"train/reward/{k}", v) for k, (_, v) in reward_series(metrics).items()}
    for title, (name, values) in series.items():
        if len(values) >= 2:
            w = min(window, len(values) // 2)
            out[title] = {
                "metric": name,
                "first": sum(values[:w]) / w,
                "last": sum(values[-w:]) / w,
                "window": w,
            }
    return out


def health_findings(health: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The signals that explain a run, stated from the numbers."""
    lines = []

    def get(title: str) -> Mapping[str, Any] | None:
        return health.get(title)

    zero = get("zero-variance groups (fraction)")
    if zero:
        lines.append(
            f"- Learning signal: {zero['first']:.0%} of GRPO groups had no reward variance over the first "
            f"{zero['window']} steps, {zero['last']:.0%} over the last {zero['window']} (those groups have "
            "zero advantage: they teach nothing). "
            + (
                "Most groups still carried signal at the end."
                if zero["last"] < 0.5
                else "By the end most groups taught nothing: the policy had become near-deterministic "
                "on the training prompts."
            )
        )
    entropy, kl = get("policy entropy"), get("KL to the reference")
    if entropy and kl:
        lines.append(
            f"- The policy moved: entropy {entropy['first']:.3f} -> {entropy['last']:.3f} per token, KL to the "
            f"reference {kl['first']:.4f} -> {kl['last']:.4f} (first vs last {entropy['window']} steps)."
        )
    sync = get("rollout vs actor log-prob")
    if sync:
        lines.append(
            f"- Rollout and actor agree ({sync['metric']} about {sync['last']:.1e}): the weights reach the "
            "rollout after every update, so the samples are the policy's own."
        )
    length = get("response length (tokens)")
    if length:
        lines.append(f"- Response length {length['first']:.1f} -> {length['last']:.1f} tokens.")
    parts = [
        f"{title.split(': ')[1]} {v['first']:.3f} -> {v['last']:.3f}"
        for title, v in health.items()
        if title.startswith("reward: ")
    ]
    if parts:
        lines.append("- Training reward components (sampled, first vs last steps): " + ", ".join(parts) + ".")
    return lines


# ---------------------------------------------------------------------------------------------
# Table 1 in miniature


def table1(results: Mapping[str, Any]):
    """Rows original / w/o RL / GRPO (/ SFT control) with exact-edit rate and held-out reward."""
    from eval.tables import Table

    table = Table(
        title="Table 1 in miniature: held-out items, single-turn pipeline (mean [95% bootstrap interval])",
        header=["Method", "what decomposes the request", "exact-edit rate", "held-out reward"],
        rows=[],
        digits=3,
    )
    exact, reward = results["exact_edit"], results["heldout_reward"]

    def cell(block: Mapping[str, Any], key: str) -> str:
        value = block.get(key)
        if value is None:
            return "n/a"
        return f"{value['mean']:.3f} [{value['ci'][0]:.3f}, {value['ci'][1]:.3f}]"

    table.rows.append(
        ["original", "nothing: the raw request goes to the editor", cell(exact, "original"), "n/a"]
    )
    table.rows.append(
        [
            "w/o RL (cold start)",
            "the cold-started decomposer",
            cell(exact, "cold_start"),
            cell(reward, "cold_start"),
        ]
    )
    table.rows.append(
        ["ImageEdit-R1 (GRPO)", "the GRPO-trained decomposer", cell(exact, "grpo"), cell(reward, "grpo")]
    )
    if "sft_control" in exact:
        table.rows.append(
            [
                "SFT control (equal compute)",
                "the cold start trained on with SFT for GRPO's time",
                cell(exact, "sft_control"),
                cell(reward, "sft_control"),
            ]
        )
    table.rows.append(
        [
            "GRPO minus cold start (paired)",
            "",
            cell(exact, "grpo_minus_cold_start"),
            cell(reward, "grpo_minus_cold_start"),
        ]
    )
    if "sft_control_minus_grpo" in exact:
        table.rows.append(
            [
                "SFT control minus GRPO (paired)",
                "",
                cell(exact, "sft_control_minus_grpo"),
                cell(reward, "sft_control_minus_grpo"),
            ]
        )
    return table


def table1_results(items: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, Any]:
    """report.json's `heldout_reward` and `exact_edit` blocks from per-item scores by checkpoint
    (`items`: {"original", "cold_start", "grpo", "sft_control"?: {id: {"reward", "exact"}}})."""
    reward: dict[str, Any] = {}
    exact: dict[str, Any] = {}
    for name in ("cold_start", "grpo", "sft_control"):
        if name in items:
            reward[name] = as_json(estimate(items[name], "reward"))
            exact[name] = as_json(estimate(items[name], "exact"))
    if "original" in items:
        exact["original"] = as_json(estimate(items["original"], "exact"))
    for block, key in ((reward, "reward"), (exact, "exact")):
        block["grpo_minus_cold_start"] = as_json(paired(items["grpo"], items["cold_start"], key))
        if "sft_control" in items:
            block["sft_control_minus_grpo"] = as_json(paired(items["sft_control"], items["grpo"], key))
    return {"heldout_reward": reward, "exact_edit": exact}


def verdicts(results: Mapping[str, Any]) -> list[str]:
    """The goal of the miniature, checked: both paired intervals above 0, and original < cold start
    < GRPO in exact edits."""
    lines = []
    for block, what in (("heldout_reward", "held-out reward"), ("exact_edit", "exact-edit rate")):
        d = results[block].get("grpo_minus_cold_start")
        if d is None:
            continue
        lo, hi = d["ci"]
        verdict = "raised" if lo > 0 else ("lowered" if hi < 0 else "did not measurably change")
        lines.append(
            f"- GRPO {verdict} the {what} over its starting point: paired difference {d['mean']:+.3f} "
            f"[{lo:+.3f}, {hi:+.3f}] over {d['n']} held-out items."
        )
    exact = results["exact_edit"]
    if all(exact.get(k) for k in ("original", "cold_start", "grpo")):
        o, c, g = (exact[k]["mean"] for k in ("original", "cold_start", "grpo"))
        shape = "holds" if o < c < g else "does not hold"
        lines.append(
            f"- Table 1's order original < w/o RL < GRPO {shape} here: exact edits {o:.3f} / {c:.3f} / {g:.3f}."
        )
    control = results["exact_edit"].get("sft_control_minus_grpo")
    reward_control = results["heldout_reward"].get("sft_control_minus_grpo")
    if control and reward_control:

        def winner(d: Mapping[str, Any]) -> str:
            lo, hi = d["ci"]
            return "the SFT control" if lo > 0 else ("GRPO" if hi < 0 else "neither, within the interval")

        lines.append(
            f"- Equal compute, SFT control minus GRPO: held-out reward {reward_control['mean']:+.3f} "
            f"[{reward_control['ci'][0]:+.3f}, {reward_control['ci'][1]:+.3f}] (better: {winner(reward_control)}); "
            f"exact edits {control['mean']:+.3f} [{control['ci'][0]:+.3f}, {control['ci'][1]:+.3f}] "
            f"(better: {winner(control)}). The control can only imitate the answers it is trained on; GRPO "
            "optimises the reward of the exact ground truth."
        )
    return lines
