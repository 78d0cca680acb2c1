"""Decomposition and sequencing agents: bounded retries keeping raw text and parse, per-item failures,
and the deterministic template sequencer."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from inference.agents import DecompositionAgent, TemplateSequencer, VLMSequencer, template_steps
from inference.chat import ChatBackend, Conversation, Sampling
from inference.protocol import ACTION_VOCABULARY, Decomposition, EditPlan, render_decomposition, render_plan
from inference.scenes import apply_instruction
from inference.synthetic_items import generate_items

GOOD = render_decomposition(Decomposition(("recolor",), ("coat",), ("red",), think="one edit"))


class ScriptedBackend(ChatBackend):
    """A real ChatBackend whose answers come from `answer(request_text, sampling, call_index)`."""

    model_id = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[tuple[list[str], Sampling]] = []

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling) -> list[list[str]]:
        texts = [c[-1]["content"][-1]["text"] for c in conversations]
        self.calls.append((texts, sampling))
        return [[self.answer(t, sampling, len(self.calls))] * sampling.n for t in texts]


def _images(n):
    return [Image.new("RGB", (16, 16))] * n


def test_decomposition_retries_until_parseable_and_keeps_raw():
    def answer(text, sampling, call):
        if "garbage twice" in text and call <= 2:
            return "no idea"
        return GOOD

    backend = ScriptedBackend(answer)
    agent = DecompositionAgent(backend, Sampling(temperature=0.0, max_new_tokens=64), max_attempts=3)
    requests = ["fine", "garbage twice"]
    results = agent.decompose(_images(2), requests, seeds=[100, 200])
    assert [r.attempts for r in results] == [1, 3]
    assert all(r.error is None and r.format_ok for r in results)
    assert results[1].raw == GOOD and results[1].parsed.actions == ("recolor",)
    # one batched call, then per-item retries with the item's seed and a non-zero temperature
    assert len(backend.calls[0][0]) == 2
    retry_samplings = [s for _, s in backend.calls[1:]]
    assert [s.seed for s in retry_samplings] == [202, 203]
    assert all(s.temperature > 0 and s.n == 1 for s in retry_samplings)


def test_decomposition_gives_up_after_bounded_attempts_with_a_clear_error():
    backend = ScriptedBackend(lambda text, s, call: f"<action>[unclosed {call}")
    results = DecompositionAgent(backend, max_attempts=2).decompose(_images(1), ["x"], seeds=[0])
    (r,) = results
    assert r.parsed is None and r.attempts == 2 and len(backend.calls) == 2
    assert r.raw == "<action>[unclosed 2"
    assert "no parseable answer after 2 attempt(s)" in r.error and "unclosed 2" in r.error


def test_lenient_parse_is_accepted_but_format_flag_is_false():
    loose = 'blah <action>["recolor"]</action><subjects>coat</subjects><goals>red</goals> trailing'
    (r,) = DecompositionAgent(ScriptedBackend(lambda *a: loose)).decompose(_images(1), ["x"], [0])
    assert r.parsed == Decomposition(("recolor",), ("coat",), ("red",)) and r.format_ok is False
    assert r.error is None


def test_a_failing_item_does_not_take_its_batch_down():
    class Flaky(ScriptedBackend):
        def generate(self, conversations, sampling):
            if any("poison" in c[-1]["content"][-1]["text"] for c in conversations):
                raise RuntimeError("server said no")
            return super().generate(conversations, sampling)

    backend = Flaky(lambda *a: GOOD)
    results = DecompositionAgent(backend, max_attempts=2).decompose(
        _images(3), ["a", "poison", "c"], [0, 1, 2]
    )
    assert [r.error is None for r in results] == [True, False, True]
    assert "backend error: RuntimeError: server said no" in results[1].error


def test_only_failed_items_are_asked_again_and_non_retryable_errors_stop():
    from inference.chat import ChatResult

    class Flaky(ScriptedBackend):
        """'busy' fails once (retryable), 'refused' always fails for good."""

        def chat(self, conversations, sampling):
            texts = [c[-1]["content"][-1]["text"] for c in conversations]
            self.calls.append((texts, sampling))
            out = []
            for t in texts:
                busy = "busy" in t and sum("busy" in x for c, _ in self.calls for x in c) == 1
                if busy:
                    out.append(ChatResult(error="HTTP 503: overloaded"))
                elif "refused" in t:
                    out.append(ChatResult(error="HTTP 400: bad image", retryable=False))
                else:
                    out.append(ChatResult(texts=(GOOD,)))
            return out

    backend = Flaky(lambda *a: GOOD)
    results = DecompositionAgent(backend, max_attempts=3).decompose(
        _images(3), ["a", "busy", "refused"], [0, 1, 2]
    )
    assert [r.error is None for r in results] == [True, True, False]
    assert [r.attempts for r in results] == [1, 2, 1]
    assert "HTTP 400: bad image" in results[2].error
    assert len(backend.calls) == 2 and len(backend.calls[1][0]) == 1  # only 'busy' was re-sent
    assert "busy" in backend.calls[1][0][0] and backend.calls[1][1].temperature == 0.0  # as it was


def test_vlm_sequencer_parses_steps_and_retries():
    plan = render_plan(EditPlan(("Recolor the coat to red", "Blur the background")))
    answers = iter(["I would start with the coat.", plan])
    backend = ScriptedBackend(lambda *a: next(answers))
    d = Decomposition(("recolor", "blur background"), ("coat", "background"), ("red", "blurred"))
    (r,) = VLMSequencer(backend, max_attempts=2).sequence(_images(1), ["req"], [d], [5])
    assert r.parsed.sub_requests == ("Recolor the coat to red", "Blur the background")
    assert r.attempts == 2 and r.raw == plan
    assert 'Actions: ["recolor", "blur background"]' in backend.calls[0][0][0]


def test_template_steps_match_the_canonical_plans_of_one_edit_per_action():
    checked = 0
    for item in generate_items(300, seed=5):
        if len(item.decomposition.actions) != len(item.plan.sub_requests):
            continue
        if any(s.startswith("Add a small") or s.startswith("Add a large") for s in item.plan.sub_requests):
            continue  # the decomposition does not carry the size of an added object
        assert template_steps(item.decomposition) == item.plan.sub_requests
        target = item.scene
        for step in template_steps(item.decomposition):
            target = apply_instruction(target, step)
        assert target == item.target_scene
        checked += 1
    assert checked > 100


def test_template_sequencer_reports_empty_decompositions():
    seq = TemplateSequencer()
    ok, empty = seq.sequence(
        _images(2), ["a", "b"], [Decomposition(("remove",), ("hat",), ()), Decomposition()], [0, 0]
    )
    assert ok.parsed.sub_requests == ("Remove the hat",) and ok.error is None
    assert empty.parsed is None and "no action, subject or goal" in empty.error


_words = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.sampled_from(ACTION_VOCABULARY), _words), max_size=4),
    st.lists(_words, max_size=4),
    st.lists(_words, max_size=4),
)
def test_template_steps_never_raise_and_are_deterministic(actions, subjects, goals):
    d = Decomposition(tuple(actions), tuple(subjects), tuple(goals))
    steps = template_steps(d)
    assert steps == template_steps(d)
    assert len(steps) == len(set(steps)) <= max(len(actions), len(subjects))
    assert all(s and s == " ".join(s.split()) for s in steps)
