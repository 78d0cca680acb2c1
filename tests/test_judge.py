"""Rubric judge and principle-wise verifier over ChatBackends: prompt order, retries, failures.

The scripted backend is a real `ChatBackend` subclass answering from a list; the tiny VLM runs
through the real transformers backend (`inference.chat_backends.make_backend`)."""

from __future__ import annotations

import pytest
from PIL import Image

from eval.judge import JudgeItem, RubricJudge
from eval.verifier import (
    PRESERVATION_PRINCIPLE,
    QUALITY_PRINCIPLE,
    PrincipleVerifier,
    VerifierReward,
    parse_verifier_answer,
    principles_for,
)
from inference.chat import ChatBackend, Sampling

GOOD = '{"fulfillment": 3, "quality": 2, "preservation": 3, "reasoning": "red coat, rest intact"}'


class ScriptedBackend(ChatBackend):
    """Answers each conversation with the next scripted text (or raises a scripted exception)."""

    model_id = "scripted-judge"

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls: list[tuple[list, Sampling]] = []

    def generate(self, conversations, sampling):
        self.calls.append((list(conversations), sampling))
        out = []
        for _ in conversations:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            out.append([answer] * sampling.n)
        return out


@pytest.fixture
def images():
    return Image.new("RGB", (32, 32), "blue"), Image.new("RGB", (32, 32), "red")


def test_prompt_has_original_first_edited_second_then_request(images):
    original, edited = images
    backend = ScriptedBackend([GOOD])
    judgement = RubricJudge(backend).judge("make it red", original, edited)
    assert judgement.ok and judgement.scores.total == 8 and judgement.answers == [GOOD]
    (conversation,), sampling = backend.calls[0]
    parts = conversation[0]["content"]
    assert [p["type"] for p in parts] == ["image", "image", "text"]
    assert parts[0]["image"] is original and parts[1]["image"] is edited
    assert '"make it red"' in parts[2]["text"] and "Request Fulfillment" in parts[2]["text"]
    assert sampling.temperature == 0.0
    assert judgement.score_fields() == {
        "fulfillment": 3.0,
        "quality": 2.0,
        "preservation": 3.0,
        "total": 8.0,
        "error": None,
    }


def test_only_unreadable_items_are_retried_with_sampling(images):
    backend = ScriptedBackend(["no idea", GOOD, GOOD])
    results = RubricJudge(backend, retries=2).judge_many(
        [JudgeItem(r, images[0], images[1]) for r in ("a", "b")]
    )
    assert [r.ok for r in results] == [True, True]
    assert len(backend.calls[0][0]) == 2 and len(backend.calls[1][0]) == 1
    assert backend.calls[1][1].temperature > 0 and backend.calls[1][1].seed == 1
    assert results[0].answers == ["no idea", GOOD]


def test_exhausted_retries_are_a_failure_never_a_zero(images):
    backend = ScriptedBackend(
        ['{"fulfillment": 9, "quality": 2, "preservation": 3}', "???", RuntimeError("503")]
    )
    judgement = RubricJudge(backend, retries=2).judge("x", *images)
    assert not judgement.ok and judgement.scores is None
    assert "backend error: RuntimeError: 503" in judgement.error and "after 3 attempts" in judgement.error
    fields = judgement.score_fields()
    assert fields["total"] is None and fields["fulfillment"] is None and fields["error"]


def test_principles_from_plan_decomposition_or_request():
    assert principles_for("r", plan=["recolor the coat red", " "]) == [
        "recolor the coat red",
        PRESERVATION_PRINCIPLE,
        QUALITY_PRINCIPLE,
    ]
    from_decomposition = principles_for(
        "r", decomposition={"actions": ["remove"], "subjects": ["hat"], "goals": []}
    )
    assert from_decomposition[0] == "The hat is changed as requested (remove)"
    assert principles_for("turn it blue")[0].endswith("turn it blue")
    with pytest.raises(ValueError, match="lacks key"):
        principles_for("r", decomposition={"actions": []})


def test_verifier_aggregates_verdicts_on_the_rubric_scale(images):
    answer = (
        '{"verdicts": [{"principle": 1, "reasoning": "coat red", "verdict": "yes"},'
        ' {"principle": 2, "reasoning": "hat faint", "verdict": "partly"},'
        ' {"principle": 3, "verdict": "yes"}, {"principle": 4, "verdict": "no"}]}'
    )
    backend = ScriptedBackend([answer])
    verifier = PrincipleVerifier(backend)
    principles = principles_for("r", plan=["recolor the coat red", "remove the hat"])
    result = verifier.verify("r", *images, principles=principles)
    assert [v.verdict for v in result.verdicts] == ["yes", "partly", "yes", "no"]
    assert result.verdicts[1].reasoning == "hat faint"
    assert result.aggregate() == {"fulfillment": 3.0, "quality": 0.0, "preservation": 3.0, "total": 6.0}
    text = backend.calls[0][0][0][0]["content"][2]["text"]
    assert "1. recolor the coat red" in text and f"3. {PRESERVATION_PRINCIPLE}" in text


def test_verifier_reads_numbered_lines_and_rejects_missing_verdicts():
    principles = ["a", "b", "c"]
    verdicts, error = parse_verifier_answer("1. yes - fine\nPrinciple 2: partially, faint\n3) no", principles)
    assert error is None and [v.value for v in verdicts] == [1.0, 0.5, 0.0]
    verdicts, error = parse_verifier_answer("1. yes", principles)
    assert verdicts is None and "[2, 3]" in error


def test_verifier_reward_is_shaped_like_a_reward(images):
    yes_all = '{"verdicts": [{"verdict": "yes"}, {"verdict": "yes"}, {"verdict": "partly"}]}'
    backend = ScriptedBackend([yes_all, "garbage", "garbage"])
    reward = VerifierReward(PrincipleVerifier(backend, retries=0))
    out = reward(["r1", "r2"], [images[0]] * 2, [images[1]] * 2, plans=[["make it red"], None])
    assert (
        out[0]["score"] == pytest.approx(0.85) and out[0]["preservation"] == 1.0 and out[0]["quality"] == 0.5
    )
    assert out[1]["score"] is None and "unreadable" in out[1]["error"]
    reward = VerifierReward(PrincipleVerifier(ScriptedBackend(["garbage"]), retries=0), failure_score=0.0)
    assert reward(["r"], [images[0]], [images[1]])[0]["score"] == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        reward(["r"], [], [])


def test_tiny_vlm_judge_end_to_end_through_transformers_backend(tiny_vlm_dir, images):
    """The real code path: Qwen2.5-VL processor + generate on two images. A random tiny model
    cannot follow the rubric, so the judgement must come back as a recorded failure, not a zero."""
    from inference.chat_backends import make_backend

    backend = make_backend("transformers", tiny_vlm_dir, device="cpu", batch_size=2)
    sampling = Sampling(temperature=0.0, max_new_tokens=16)
    judge = RubricJudge(backend, sampling=sampling, retries=1)
    results = judge.judge_many([JudgeItem(r, images[0], images[1]) for r in ("make it red", "x")])
    for r in results:
        assert len(r.answers) == 2 and all(isinstance(a, str) for a in r.answers)
        assert r.ok or (r.scores is None and "after 2 attempts" in r.error)
    verification = PrincipleVerifier(backend, sampling=sampling, retries=0).verify("make it red", *images)
    assert len(verification.answers) == 1
    assert verification.ok or verification.error.startswith("unreadable answer")


def test_cli_judge_with_the_tiny_vlm_records_failures_not_zeros(tiny_vlm_dir, tmp_path):
    """`python -m eval judge --backend transformers` on a real run folder with the tiny VLM."""
    from eval.cli import main
    from eval.scores import read_scores
    from inference.editors import make_editor
    from inference.pipeline import EditingPipeline, OracleDecomposer, OracleSequencer
    from inference.records import read_records
    from inference.synthetic_items import write_synthetic_eval_set

    records = write_synthetic_eval_set(tmp_path / "data", 2, seed=4)
    EditingPipeline(make_editor("tool"), OracleDecomposer(), OracleSequencer()).run(
        read_records(records), tmp_path / "runs", "single", progress=False
    )
    argv = ["judge", "--run", str(tmp_path / "runs" / "single"), "--benchmark", "synthetic"]
    argv += ["--backend", "transformers", "--model", str(tiny_vlm_dir), "--device", "cpu", "--retries", "0"]
    argv += ["--max-new-tokens", "8", "--out", str(tmp_path / "s.jsonl"), "--no-progress"]
    assert main(argv) == 1  # a random judge judges nothing: the CLI says so
    rows = read_scores(tmp_path / "s.jsonl")
    assert len(rows) == 2 and {r["evaluator"] for r in rows} == {str(tiny_vlm_dir)}
    for r in rows:
        assert r["total"] is not None or (
            r["error"].startswith("unreadable answer") and r["fulfillment"] is None
        )
