"""Tests of lsp_server.repair: spans, verification, stub bodies, and the model edits.

The edits run against a scripted fake engine (recording the jobs it gets) so
each rule is checked exactly; one test runs the real engine on a tiny random
model to check the plumbing end to end.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.decode import DecodeCancelled
from engine.engine import Completion, Job, JobResult, JobStats
from lsp_server.repair import (Edit, Span, apply_edit, complete_block_edit, cut_at_suffix, fill_body_edit,
                               find_stub_body, is_improvement, is_small_repair, parses, propose_fix,
                               rewrite_selection_edit, widen)

ROOT = Path(__file__).resolve().parents[1]


def completion(text: str, stop_reason: str = "eos") -> Completion:
    return Completion(text, tokens=[], confidences=[], stop_reason=stop_reason)


class FakeEngine:
    """Answers each complete() call with the next scripted list of candidates; records the jobs."""

    def __init__(self, *script: list):
        self.script = list(script)
        self.jobs: list[Job] = []
        self.calls = 0

    def complete(self, jobs, *, should_cancel=None, deadline=None):
        jobs = [jobs] if isinstance(jobs, Job) else list(jobs)
        self.calls += 1
        self.jobs.extend(jobs)
        if should_cancel is not None and should_cancel():
            raise DecodeCancelled()
        candidates = self.script.pop(0) if self.script else []
        return [JobResult(completions=[c if isinstance(c, Completion) else completion(c) for c in candidates],
                          stats=JobStats())
                for _ in jobs]


def texts_of(text: str, spans: list[Span]) -> list[str]:
    return [text[s.start : s.end] for s in spans]


def span_of(text: str, part: str, skip: int = 0) -> Span:
    start = text.index(part) + skip
    return Span(start, start + len(part) - skip)


# --- widen ----------------------------------------------------------------------------------


def test_widen_goes_token_line_lines_around():
    text = "a = 1\nb = compute(x,, y)\nc = 3\n"
    comma = text.index(",,") + 1
    assert texts_of(text, widen(text, Span(comma, comma + 1))) == [
        ",", "b = compute(x,, y)", "a = 1\nb = compute(x,, y)\nc = 3"]
    inside_name = text.index("compute") + 2
    assert texts_of(text, widen(text, Span(inside_name, inside_name + 1)))[0] == "compute"


def test_widen_covers_operator_runs_and_positions_next_to_names():
    text = "y = a +* b\n"
    star = text.index("*")
    assert texts_of(text, widen(text, Span(star, star + 1)))[0] == "+*"
    after_a = text.index("a") + 1
    assert texts_of(text, widen(text, Span(after_a, after_a)))[0] == "a"


def test_widen_skips_empty_and_duplicate_spans():
    text = "x = (\n"
    at = text.index("(")
    assert texts_of(text, widen(text, Span(at + 1, at + 1))) == ["x = ("]  # the position before "\n"
    assert texts_of(text, widen(text, Span(at, at + 1))) == ["(", "x = ("]
    assert widen("", Span(0, 0)) == []
    assert widen("\n\n", Span(1, 1)) == [Span(0, 1)]  # only the empty line before, with its break


def test_widen_handles_crlf_and_spans_ending_with_a_newline():
    text = "a = 1\r\nb = (\r\nc = 3\r\n"
    assert texts_of(text, widen(text, span_of(text, "(")))[1:] == ["b = (", "a = 1\r\nb = (\r\nc = 3"]
    whole_line = span_of(text, "b = (\r\n")
    assert texts_of(text, widen(text, whole_line))[:2] == ["b = (\r\n", "b = ("]


def test_widen_clamps_spans_outside_the_text():
    text = "x = 1\ny = (\n"
    for span in widen(text, Span(100, 200)) + widen(text, Span(-5, 3)):
        assert 0 <= span.start < span.end <= len(text)


# --- verification ---------------------------------------------------------------------------


def test_parses():
    assert parses("def f(x):\n    return x\n")
    assert parses("")
    assert not parses("def f(x)\n    return x\n")
    assert not parses("x = 1\0")
    assert not parses("x = '\ud800'")


def test_is_improvement_for_python():
    broken, fixed = "def f(x)\n    return x\n", "def f(x):\n    return x\n"
    assert is_improvement(broken, fixed, "python")
    assert not is_improvement(fixed, fixed, "python")  # no change
    assert not is_improvement(broken, "def f(x]\n    return x\n", "python")  # still broken
    assert not is_improvement(fixed, broken, "python")  # it parsed before
    # A problem from another checker in valid code: still parsing is enough.
    assert is_improvement(fixed, "def f(x: int):\n    return x\n", "python")


def test_is_improvement_accepts_getting_past_the_first_of_two_errors():
    broken = "def f(x)\n    return x\n\ny = (\n"
    assert is_improvement(broken, "def f(x):\n    return x\n\ny = (\n", "python")
    # The new text brings its own error: not a fix.
    assert not is_improvement(broken, "def f(x):\n    return x +\n\ny = (\n", "python")


def test_is_improvement_for_other_languages_only_needs_a_change():
    assert is_improvement("let x = ;", "let x = 1;", "javascript")
    assert not is_improvement("let x = ;", "let x = ;", "javascript")


# --- stub bodies ----------------------------------------------------------------------------

STUBS = '''class Shape:
    def area(self):
        """The area."""
        # keep this note
        # TODO: compute it
        ...  # later

    def name(self): pass

    def real(self):
        return 1


async def fetch(url):
    pass


def outer():
    def inner():
        ...
    return inner


def é(): ...
'''


def stub_text(text: str, offset: int):
    span = find_stub_body(text, offset)
    return None if span is None else text[span.start : span.end]


def test_find_stub_body_docstring_todo_and_trailing_comment():
    assert stub_text(STUBS, STUBS.index("def area")) == "# TODO: compute it\n        ...  # later"
    assert stub_text(STUBS, STUBS.index("...  # later")) == "# TODO: compute it\n        ...  # later"


def test_find_stub_body_one_liners_async_and_non_ascii():
    assert stub_text(STUBS, STUBS.index("def name")) == "pass"
    assert stub_text(STUBS, STUBS.index("url")) == "pass"
    assert stub_text(STUBS, STUBS.index("def é") + 3) == "..."


def test_find_stub_body_takes_the_innermost_definition():
    assert stub_text(STUBS, STUBS.index("def inner") + 4) == "..."
    assert stub_text(STUBS, STUBS.index("return inner")) is None  # outer has real code
    assert stub_text(STUBS, STUBS.index("return 1")) is None
    assert stub_text(STUBS, STUBS.index("class Shape")) is None
    assert stub_text(STUBS, len(STUBS)) is None  # after every def... except the last line's
    assert stub_text("x = 1\n", 2) is None


def test_find_stub_body_comment_only_body():
    text = "def f():\n    x = 1\n\ndef g(a):\n    # returns a twice\n    # TODO: body\n\nz = 1\n"
    assert stub_text(text, text.index("def g")) == "# TODO: body"
    assert stub_text(text, text.index("# TODO")) == "# TODO: body"
    assert stub_text(text, text.index("x = 1")) is None  # the file does not parse: only g is known
    at_end = "def g(a):\n    # TODO: body\n"
    assert stub_text(at_end, 0) == "# TODO: body"
    assert stub_text("def g(a):\n    # just a note\n", 0) is None


def test_find_stub_body_with_crlf_line_breaks():
    text = STUBS.replace("\n", "\r\n")
    assert stub_text(text, text.index("def area")) == "# TODO: compute it\r\n        ...  # later"
    assert stub_text(text, text.index("def é")) == "..."


def test_find_stub_body_does_not_parse_where_no_placeholder_is_near():
    function = "def f{}(x):\n    y = x * 2\n    return y + 1\n\n\n"
    text = "".join(function.format(i) for i in range(12_000)) + "def last():\n    pass\n"  # about 0.5 MB
    started = time.perf_counter()
    assert stub_text(text, 10) is None
    assert time.perf_counter() - started < 0.1
    assert stub_text(text, len(text) - 5) == "pass"


# --- propose_fix ----------------------------------------------------------------------------

MISSING_COLON = "def f(x)\n    return x\n"
PAREN = span_of(MISSING_COLON, ")")


def test_propose_fix_sends_the_span_as_an_infill_and_skips_candidates_that_do_not_parse():
    engine = FakeEngine(["]", "):"])
    edit = propose_fix(engine, MISSING_COLON, PAREN, "python")
    [job] = engine.jobs
    assert (job.prefix, job.suffix) == ("def f(x", "\n    return x\n")
    assert job.config.mode == "infill" and job.n == 3 and job.config.max_tokens >= 64
    assert isinstance(edit, Edit) and edit.candidates_tried == 2
    assert edit.span == Span(PAREN.end, PAREN.end) and edit.new_text == ":"  # the minimal change
    assert apply_edit(MISSING_COLON, edit) == "def f(x):\n    return x\n"
    assert edit.title.startswith("Fix with model")


def test_propose_fix_tries_wider_spans_after_narrower_ones_fail():
    engine = FakeEngine([")", "]"], ["def f(x) -> int", "def f(x):"])
    edit = propose_fix(engine, MISSING_COLON, PAREN, "python", n=2)
    assert [(j.prefix, j.suffix) for j in engine.jobs] == [
        ("def f(x", "\n    return x\n"), ("", "\n    return x\n")]
    assert apply_edit(MISSING_COLON, edit) == "def f(x):\n    return x\n"
    assert edit.candidates_tried == 3  # ")" is the text itself: not a candidate


def test_propose_fix_returns_none_when_nothing_verifies():
    engine = FakeEngine(["]"], ["def f(x)"], ["def f(x]\n    return x"])
    assert propose_fix(engine, MISSING_COLON, PAREN, "python") is None
    assert engine.calls == len(widen(MISSING_COLON, PAREN)) == 3
    assert [(j.prefix, j.suffix) for j in engine.jobs][-1] == ("", "\n")


def test_propose_fix_ignores_unfinished_infills_and_deletions():
    text = "x = 1\ny = foo(1,, 2)\n"
    engine = FakeEngine([completion(",", "max_tokens")], ["", completion("y = foo(1, 2)", "deadline"),
                                                          "y = foo(1, 2)"])
    edit = propose_fix(engine, text, span_of(text, ",,", 1), "python")
    assert apply_edit(text, edit) == "x = 1\ny = foo(1, 2)\n"


def test_propose_fix_keeps_valid_code_valid():
    text = "def f(x):\n    return x\n"  # the diagnostic came from another checker
    engine = FakeEngine(["x +", "x_0"])
    last_x = text.rindex("x")
    edit = propose_fix(engine, text, Span(last_x, last_x + 1), "python")
    assert apply_edit(text, edit) == "def f(x):\n    return x_0\n"


@pytest.mark.parametrize("old, new, small", [
    ("def f(x)\n", "def f(x):\n", True),  # the missing colon
    ("methqd_name=hasher,", "method_name=hasher,", True),  # a typo
    ("    return b\n", "    return self.__class__(self.args)\n", False),  # other code that parses
    ("do_sample bool | None = None", "if isinstance(do_sample, bool): pass", False),
    ("x", "y", True),  # a short span may change entirely
])
def test_a_fix_is_a_small_repair_not_other_code(old, new, small):
    assert is_small_repair(old, new) is small


def test_propose_fix_refuses_a_rewrite_that_merely_parses():
    text = "x = 1\nprint(x\n"
    line = span_of(text, "print(x")
    assert propose_fix(FakeEngine(*[["y = 2"]] * 4), text, line, "python") is None
    edit = propose_fix(FakeEngine(*[["y = 2", "print(x)"]] * 4), text, line, "python", n=2)
    assert apply_edit(text, edit) == "x = 1\nprint(x)\n"


def test_propose_fix_stops_at_the_deadline_and_propagates_cancellation():
    engine = FakeEngine([":"])
    assert propose_fix(engine, MISSING_COLON, PAREN, "python", deadline=time.monotonic() - 1) is None
    assert engine.calls == 0
    with pytest.raises(DecodeCancelled):
        propose_fix(FakeEngine(["):"]), MISSING_COLON, PAREN, "python", should_cancel=lambda: True)
    answers = iter([False, True])  # the engine call goes through, the check between candidates cancels
    with pytest.raises(DecodeCancelled):
        propose_fix(FakeEngine(["]", "):"]), MISSING_COLON, PAREN, "python",
                    should_cancel=lambda: next(answers, True))


def test_propose_fix_for_other_languages_takes_the_first_change():
    text = "let x = ;\n"
    engine = FakeEngine(["", "1"])
    edit = propose_fix(engine, text, span_of(text, ";"), "javascript")
    assert apply_edit(text, edit) == "let x = 1;\n" or apply_edit(text, edit) == "let x = \n"


def test_propose_fix_raises_the_token_cap_for_long_spans():
    text = "x = 1\n" + "y = [" + ", ".join(str(i) for i in range(100)) + ",,]\n"
    engine = FakeEngine()
    assert propose_fix(engine, text, span_of(text, ",,", 1), "python", max_tokens=64) is None
    line_job = engine.jobs[1]
    assert line_job.config.max_tokens > 64
    assert len(text) - len(line_job.prefix) - len(line_job.suffix) < 2 * line_job.config.max_tokens


# --- infills that run on into the suffix ----------------------------------------------------


def test_cut_at_suffix_cuts_where_the_suffix_head_is_written():
    suffix = "\n    return x + 1\n\ny = f(1)\n"
    assert cut_at_suffix("):\n    return x + 1\n\ny = f(1)\nz", suffix) == "):"
    assert cut_at_suffix("):\n    return x + 1\n", suffix) == "):"  # cut by the cap after the first line
    assert cut_at_suffix("):", suffix) is None  # never reaches the suffix
    assert cut_at_suffix("):\n    return x + 1", suffix) is None  # its first line is not complete yet
    assert cut_at_suffix("):\n    return x + 2\n", suffix) is None  # writes something else there
    assert cut_at_suffix("\n    return x + 1\n", suffix) == ""  # nothing before the suffix: a deletion
    # A first line of code shorter than 8 characters takes the next one along.
    assert cut_at_suffix("):\n    return x\n\ny = f(1)\n", "\n    return x\n\ny = f(1)\n") == "):"
    assert cut_at_suffix("):\n    return x\n\ny = f(2)\n", "\n    return x\n\ny = f(1)\n") is None


def test_cut_at_suffix_needs_the_whole_first_line_of_code():
    # A suffix starting mid-line: its rest of the line is the anchor, with the line break, so a
    # candidate that writes that line differently (with the missing `)`) is not cut there.
    suffix = "doc_id, None\n        x = 1\n"
    assert cut_at_suffix("doc_id, None)\n        x = 1\n", suffix) is None
    assert cut_at_suffix("(doc_id, None\n        x = 1", suffix) == "("
    # Blank lines are skipped; a short first line of code takes the next one along.
    assert cut_at_suffix("a:\n\n    )\n    x = 1\n", "\n\n    )\n    x = 1\n") == "a:"
    assert cut_at_suffix("a:\n\n    )\n    y = 1\n", "\n\n    )\n    x = 1\n") is None
    assert cut_at_suffix("a:\r\n    return x + 1\r\n", "\r\n    return x + 1\r\nb = 1") == "a:"
    assert cut_at_suffix("anything", "") is None and cut_at_suffix("anything", "  \n\n") is None
    assert cut_at_suffix("x = 1\nlast", "\nlast") == "x = 1"  # a last line without a break


def test_propose_fix_reads_an_infill_that_runs_into_the_suffix_up_to_it():
    # What the memorized test model does: the right text for the span, then the lines after it,
    # until the token cap (never eos). Read up to the suffix, it is the fix.
    text = "def f(x)\n    return x\n\nprint(f(1))\n"
    paren = span_of(text, ")")
    engine = FakeEngine([completion("):\n    return x\n\nprint(f(1))\n\n", "max_tokens")])
    edit = propose_fix(engine, text, paren, "python")
    assert edit is not None and edit.new_text == ":" and edit.candidates_tried == 1
    assert apply_edit(text, edit) == "def f(x):\n    return x\n\nprint(f(1))\n"


def test_propose_fix_cut_candidates_are_still_verified():
    text = "def f(x)\n    return x\n\nprint(f(1))\n"
    paren = span_of(text, ")")
    runs_on = "\n    return x\n\nprint(f(1))"
    # Cut: ")" (the text itself), ") -> int:" (too big a change), "]:" (does not parse).
    engine = FakeEngine([completion(c + runs_on, "max_tokens") for c in (")", ") -> int:", "]:")], [], [])
    assert propose_fix(engine, text, paren, "python") is None
    # An eos candidate that ran into the suffix: the cut reading first, then the whole text.
    engine = FakeEngine([completion("):" + runs_on + "\n")])
    assert apply_edit(text, propose_fix(engine, text, paren, "python")) == "def f(x):\n    return x\n\nprint(f(1))\n"
    # Still unfinished where it never reaches the suffix.
    assert propose_fix(FakeEngine([completion("):\n    return y", "max_tokens")], [], []), text, paren,
                       "python") is None


def test_rewrite_selection_reads_an_infill_up_to_the_suffix():
    text = "x = 1\ny = x + 1\nprint(y)\n"
    selection = span_of(text, "y = x + 1")
    engine = FakeEngine([completion("y = x + 2\nprint(y)\nprint(x)", "max_tokens")])
    edit = rewrite_selection_edit(engine, text, selection, "python")
    assert apply_edit(text, edit) == "x = 1\ny = x + 2\nprint(y)\n"


# --- the other actions ----------------------------------------------------------------------


def test_complete_block_edit_inserts_at_the_cursor_when_it_breaks_nothing():
    text = "def f(x):\n    \n\ny = 2\n"
    cursor = text.index("    \n") + 4
    engine = FakeEngine(["", "return (", "return x + 1"])
    edit = complete_block_edit(engine, text, cursor, "python", n=3)
    [job] = engine.jobs
    assert (job.prefix, job.suffix, job.config.mode, job.n) == (text[:cursor], text[cursor:], "block", 3)
    assert edit.span == Span(cursor, cursor) and edit.new_text == "return x + 1"
    assert edit.candidates_tried == 2  # the blank one is no candidate
    assert complete_block_edit(FakeEngine(["return ("]), text, cursor).new_text == "return ("  # unchecked


def test_complete_block_edit_is_checked_only_as_far_as_python_gets():
    # An unrelated error before the cursor stays where it was: nothing made worse.
    for before in ("x = (\n\n", "x = 1 1\n\n"):
        text = before + "def f(x):\n    "
        assert complete_block_edit(FakeEngine(["return x"]), text, len(text), "python").new_text == "return x"
    # An error after the cursor: the completion must get Python past its spot.
    text = "def f(x):\n    \n\ny = (\n"
    cursor = text.index("    \n") + 4
    assert complete_block_edit(FakeEngine(["return ("]), text, cursor, "python") is None
    assert complete_block_edit(FakeEngine(["return x"]), text, cursor, "python").new_text == "return x"


def test_fill_body_edit_rejects_stubs_and_broken_bodies():
    text = 'def square(x):\n    """Return x squared."""\n    ...\n\nprint(square(3))\n'
    engine = FakeEngine(["pass", "return x *", "return x * x"])
    edit = fill_body_edit(engine, text, text.index("square"), "python")
    [job] = engine.jobs
    assert job.prefix.endswith('"""Return x squared."""\n    ') and job.suffix == "\n\nprint(square(3))\n"
    assert job.config.mode == "infill"
    assert apply_edit(text, edit) == text.replace("...", "return x * x")
    assert edit.candidates_tried == 3 and edit.title == "Fill in body"


def test_fill_body_edit_fills_a_comment_only_body():
    text = "def g(a):\n    # TODO: twice\n\nz = 1\n"
    edit = fill_body_edit(FakeEngine(["return 2 * a"]), text, 0, "python")
    assert apply_edit(text, edit) == "def g(a):\n    return 2 * a\n\nz = 1\n"


def test_fill_body_edit_needs_python_and_a_stub():
    engine = FakeEngine(["return 1"])
    assert fill_body_edit(engine, "def f():\n    pass\n", 0, "javascript") is None
    assert fill_body_edit(engine, "def f():\n    return 0\n", 0, "python") is None
    assert engine.calls == 0


def test_rewrite_selection_edit():
    text = "def f(x):\n    return x+1\n"
    selection = span_of(text, "x+1")
    engine = FakeEngine(["x+1", "x +", "x + 1"])
    edit = rewrite_selection_edit(engine, text, selection, "python")
    assert (engine.jobs[0].prefix, engine.jobs[0].suffix) == ("def f(x):\n    return ", "\n")
    assert apply_edit(text, edit) == "def f(x):\n    return x + 1\n"
    assert edit.candidates_tried == 2  # the unchanged selection is no candidate
    assert rewrite_selection_edit(FakeEngine(["y"]), text, Span(5, 5), "python") is None
    assert rewrite_selection_edit(FakeEngine([""]), text, selection, "python") is None  # deletes code


# --- the real engine ------------------------------------------------------------------------


def test_propose_fix_with_a_tiny_random_model():
    torch = pytest.importorskip("torch")
    from engine.engine import Engine
    from engine.tokenizer import TextCodec
    from model.network import DiffusionLM, ModelConfig
    from model.step import TorchStep

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=12288, d_model=48, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=96)
    engine = Engine(TorchStep(DiffusionLM(config).eval()), TextCodec.from_file(ROOT / "model" / "tokenizer.json"))
    edit = propose_fix(engine, MISSING_COLON, PAREN, "python", n=2, max_tokens=8)
    assert edit is None or (parses(apply_edit(MISSING_COLON, edit)) and edit.candidates_tried >= 1)


def test_a_fix_that_breaks_the_next_line_is_refused():
    """Replacing a broken `def` header by junk leaves "unexpected indent" right below: not a fix."""
    original = "class A:\n    def put(self, x) -> None\n        self.x = x\n\n\nvalue = (1,\n"
    fixed = "class A:\n    h\n        self.x = x\n\n\nvalue = (1,\n"
    assert not is_improvement(original, fixed, "python")
