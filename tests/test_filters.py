"""Tests of lsp_server/filters.py: each post-processing filter alone, the chain, and its guarantees.

Every filter gets cases where it keeps a completion unchanged, changes it and
(where it can) drops it, on realistic Python around the cursor. apply_filters is
tested for order, deduplication and empty input; a hypothesis property test
checks the chain's guarantees on random texts: no exceptions, filters only cut
(trimming may also delete whitespace), balance_brackets never worsens the
balance, and line mode never yields a line break.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsp_server.filters import (
    FILTERS,
    Candidate,
    FilterContext,
    _imbalance,
    _rest_of_line,
    apply_filters,
    balance_brackets,
    cut_repeated_suffix,
    drop_duplicate_lines,
    drop_empty,
    drop_low_confidence,
    trim_trailing_whitespace,
)


def ctx(prefix: str, suffix: str = "", mode: str = "block", min_confidence: float = 0.0) -> FilterContext:
    return FilterContext(prefix=prefix, suffix=suffix, mode=mode, min_confidence=min_confidence)


def text_after(filter_, text: str, context: FilterContext):
    """The filter's output text, or None when it drops the candidate."""
    result = filter_(Candidate(text), context)
    return None if result is None else result.text


# ---------------------------------------------------------------------------
# Data types


def test_candidate_min_confidence_is_the_weakest_token_or_one():
    assert Candidate("x", (0.9, 0.2, 0.7)).min_confidence == 0.2
    assert Candidate("x").min_confidence == 1.0


def test_context_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        FilterContext("x = ", "", "auto")


# ---------------------------------------------------------------------------
# drop_low_confidence


def test_drop_low_confidence_keeps_a_confident_candidate():
    candidate = Candidate("return total", (0.9, 0.6, 0.8))
    assert drop_low_confidence(candidate, ctx("def f():\n    ", min_confidence=0.5)) is candidate


def test_drop_low_confidence_drops_a_candidate_with_one_weak_token():
    candidate = Candidate("return totl", (0.9, 0.3, 0.8))
    assert drop_low_confidence(candidate, ctx("def f():\n    ", min_confidence=0.5)) is None


def test_drop_low_confidence_keeps_the_floor_itself_and_candidates_without_confidences():
    context = ctx("x = ", min_confidence=0.5)
    assert drop_low_confidence(Candidate("1", (0.5,)), context) is not None
    assert drop_low_confidence(Candidate("1"), context) is not None


def test_drop_low_confidence_keeps_everything_with_the_default_floor():
    assert drop_low_confidence(Candidate("1", (0.01,)), ctx("x = ")) is not None


# ---------------------------------------------------------------------------
# cut_repeated_suffix


def test_cut_repeated_suffix_keeps_a_completion_that_does_not_overlap():
    candidate = Candidate("values)")
    assert cut_repeated_suffix(candidate, ctx("total = sum(", "\nprint(total)\n")) is candidate


def test_cut_repeated_suffix_removes_the_closer_the_line_already_has():
    assert text_after(cut_repeated_suffix, "b)", ctx("foo(a, ", ")")) == "b"


def test_cut_repeated_suffix_removes_a_repeated_closing_quote_and_colon():
    assert text_after(cut_repeated_suffix, 'world"', ctx('name = "', '"\nprint(name)\n')) == "world"
    assert text_after(cut_repeated_suffix, "range(n):", ctx("for i in ", ":\n    pass\n")) == "range(n)"


def test_cut_repeated_suffix_keeps_a_closer_of_the_completions_own_bracket():
    # Cutting `)` here would give `print(len(x)`: the completion's `)` closes `len(`.
    assert text_after(cut_repeated_suffix, "len(x)", ctx("print(", ")\n")) == "len(x)"


def test_cut_repeated_suffix_ignores_whitespace_only_overlaps():
    assert text_after(cut_repeated_suffix, "x = 1 ", ctx("", " # one\n")) == "x = 1 "


def test_cut_repeated_suffix_cuts_where_the_completion_copies_the_next_lines():
    context = ctx("def area(r):\n    ", "\n\nprint(area(2))\n")
    completion = "return 3.14 * r * r\n\nprint(area(2))\nprint(area(3))"
    assert text_after(cut_repeated_suffix, completion, context) == "return 3.14 * r * r\n\n"


def test_cut_repeated_suffix_empties_a_completion_that_is_only_the_next_line():
    context = ctx("def f():\n    ", "\n    return 1\n")
    assert text_after(cut_repeated_suffix, "return 1", context).strip() == ""


def test_cut_repeated_suffix_compares_the_first_line_only_when_it_is_a_whole_line():
    # `x = ` + `total` continues the prefix's line: it is not a copy of the line `total`.
    assert text_after(cut_repeated_suffix, "total", ctx("x = ", "\ntotal\n")) == "total"


def test_cut_repeated_suffix_cuts_next_lines_in_block_mode_only():
    completion = "return 3.14 * r * r\nprint(area(2))"
    context = ctx("def area(r):\n    ", "\nprint(area(2))\n", mode="line")
    assert text_after(cut_repeated_suffix, completion, context) == completion


def test_cut_repeated_suffix_in_line_mode_looks_at_the_shown_first_line():
    assert text_after(cut_repeated_suffix, "b)\nfoo()", ctx("foo(a, ", ")", mode="line")) == "b"


# ---------------------------------------------------------------------------
# drop_duplicate_lines


def test_drop_duplicate_lines_keeps_new_lines():
    candidate = Candidate("y = x * 2\n    log(y)")
    assert drop_duplicate_lines(candidate, ctx("def f(x):\n    ", "\n    return y\n")) is candidate


def test_drop_duplicate_lines_drops_a_trailing_line_the_suffix_has_next():
    context = ctx("def f(x):\n    ", "\n    x += 1\n    return x\n")
    assert text_after(drop_duplicate_lines, "y = 2\n    return x", context) == "y = 2\n    "


def test_drop_duplicate_lines_keeps_the_line_break_before_a_non_blank_rest_of_line():
    # The cursor starts the line `    return x`: the completion's own copy goes, its
    # trailing `\n    ` stays so `return x` keeps its own line.
    context = ctx("def f(x):\n    ", "return x\n")
    assert text_after(drop_duplicate_lines, "y = x\n    return x\n    ", context) == "y = x\n    "


def test_drop_duplicate_lines_drops_several_trailing_duplicates():
    context = ctx("def f(x):\n    ", "\n    y = x + 1\n\n    return y\n")
    completion = "x = abs(x)\n    y = x + 1\n    return y\n"
    assert text_after(drop_duplicate_lines, completion, context) == "x = abs(x)\n    "


def test_drop_duplicate_lines_ignores_a_matching_line_far_below():
    context = ctx("def f(x):\n    ", "\n    a = 1\n    b = 2\n    c = 3\n    return x\n")
    candidate = Candidate("y = 2\n    return x")
    assert drop_duplicate_lines(candidate, context) is candidate


def test_drop_duplicate_lines_refuses_a_drop_that_unbalances_brackets():
    # The `)` after main() closes the prefix's `setup(`, not the completion's `dict(`.
    context = ctx("setup(\n", "\n\nmain()\n)")
    candidate = Candidate("config = dict(\n    debug=True,\n)")
    assert drop_duplicate_lines(candidate, context) is candidate


def test_drop_duplicate_lines_does_nothing_in_line_mode():
    candidate = Candidate("y = 2\n    return x")
    assert drop_duplicate_lines(candidate, ctx("def f(x):\n    ", "\n    return x\n", mode="line")) is candidate


# ---------------------------------------------------------------------------
# balance_brackets


def test_balance_brackets_keeps_a_balanced_completion():
    candidate = Candidate("len(x)")
    assert balance_brackets(candidate, ctx("print(", ")\n")) is candidate


def test_balance_brackets_cuts_before_a_closer_that_closes_nothing():
    assert text_after(balance_brackets, "price * qty)\nprint(total)", ctx("total = ", "\n")) == "price * qty"


def test_balance_brackets_cuts_before_a_mismatched_closer():
    assert text_after(balance_brackets, "1, 2)", ctx("xs = [", "\n")) == "1, 2"


def test_balance_brackets_removes_a_closer_the_rest_of_the_line_already_has():
    assert text_after(balance_brackets, "b)", ctx("foo(a, ", ")\n")) == "b"
    assert text_after(balance_brackets, "b))  ", ctx("f(g(a, ", "))\n")) == "b"


def test_balance_brackets_keeps_a_closer_the_rest_of_the_line_still_needs():
    # `foo(bar(x))`: the completion closes bar(, the suffix closes foo(.
    candidate = Candidate("x)")
    assert balance_brackets(candidate, ctx("foo(bar(", ")\n")) is candidate


def test_balance_brackets_ignores_brackets_in_strings_and_comments():
    assert text_after(balance_brackets, '"a)b")', ctx("print(", "\n")) == '"a)b")'
    assert text_after(balance_brackets, "x)  # see f(", ctx("result = compute(", "\n")) == "x)  # see f("
    assert text_after(balance_brackets, "x)", ctx('msg = "(" + str(', "\n")) == "x)"


def test_balance_brackets_sees_brackets_opened_on_earlier_lines():
    candidate = Candidate("3]")
    assert balance_brackets(candidate, ctx("values = [\n    1,\n    2,\n    ", "\n")) is candidate


def test_balance_brackets_in_line_mode_looks_at_the_shown_first_line():
    assert text_after(balance_brackets, "qty)\nnext_line()", ctx("total = ", "\n", mode="line")) == "qty"


# ---------------------------------------------------------------------------
# trim_trailing_whitespace


def test_trim_trailing_whitespace_keeps_a_clean_completion():
    candidate = Candidate("x = 1\n    return x")
    assert trim_trailing_whitespace(candidate, ctx("def f():\n    ", "\n")) is candidate


def test_trim_trailing_whitespace_strips_line_ends_and_trailing_blank_lines():
    context = ctx("def f():\n    ", "\n")
    assert text_after(trim_trailing_whitespace, "x = 1   \n    return x\t\n\n   \n", context) == "x = 1\n    return x"


def test_trim_trailing_whitespace_keeps_one_line_in_line_mode():
    assert text_after(trim_trailing_whitespace, "b)  \nprint(b)\n", ctx("foo(a, ", "\n", mode="line")) == "b)"
    assert text_after(trim_trailing_whitespace, "\n    return x", ctx("x = 1", "\n", mode="line")) == ""


def test_trim_trailing_whitespace_keeps_the_line_break_before_a_non_blank_rest_of_line():
    context = ctx("def f(x):\n    ", "return x\n")
    assert text_after(trim_trailing_whitespace, "y = x  \n    ", context) == "y = x\n    "


def test_trim_trailing_whitespace_strips_spaces_before_a_rest_of_line_that_starts_with_one():
    assert text_after(trim_trailing_whitespace, "a  ", ctx("total = ", " + b\n")) == "a"


def test_trim_trailing_whitespace_keeps_crlf_line_endings():
    assert text_after(trim_trailing_whitespace, "x = 1  \r\ny = 2", ctx("", "\r\n")) == "x = 1\r\ny = 2"


# ---------------------------------------------------------------------------
# drop_empty


def test_drop_empty_keeps_a_real_completion():
    candidate = Candidate("total)")
    assert drop_empty(candidate, ctx("print(", ")\n")) is not None


def test_drop_empty_drops_blank_text():
    assert drop_empty(Candidate(""), ctx("x = ")) is None
    assert drop_empty(Candidate("  \n\t"), ctx("x = ")) is None


def test_drop_empty_drops_the_rest_of_the_line_again():
    assert drop_empty(Candidate(")"), ctx("print(total", ")\n")) is None
    assert drop_empty(Candidate("return x "), ctx("def f(x):\n    ", "return x\n")) is None


# ---------------------------------------------------------------------------
# apply_filters


def test_the_chain_has_every_filter_in_order_under_its_own_name():
    assert [name for name, _ in FILTERS] == [
        "drop_low_confidence",
        "cut_repeated_suffix",
        "drop_duplicate_lines",
        "balance_brackets",
        "trim_trailing_whitespace",
        "drop_empty",
    ]
    assert all(name == filter_.__name__ for name, filter_ in FILTERS)


def test_apply_filters_of_nothing_is_nothing():
    assert apply_filters([], ctx("x = ")) == []


def test_apply_filters_keeps_candidate_order_and_drops_the_dropped():
    context = ctx("total = sum(", ")\n", min_confidence=0.5)
    candidates = [
        Candidate("prices)", (0.9, 0.8)),
        Candidate("weights)", (0.9, 0.1)),  # too unsure
        Candidate(")", (0.9,)),  # only the closer the line already has
        Candidate("costs", (0.7,)),
    ]
    assert [c.text for c in apply_filters(candidates, context)] == ["prices", "costs"]


def test_apply_filters_removes_duplicates_the_filters_create_keeping_the_first():
    context = ctx("def f(x):\n    ", "\n")
    candidates = [Candidate("return x  ", (0.6,)), Candidate("return x", (0.9,)), Candidate("return x\n\n")]
    kept = apply_filters(candidates, context)
    assert kept == [Candidate("return x", (0.6,))]


def test_apply_filters_runs_the_filters_in_the_given_order():
    calls: list[str] = []

    def recording(name):
        def filter_(candidate, context):
            calls.append(name)
            return candidate if name != "stop" else None

        return filter_

    chain = [(name, recording(name)) for name in ("first", "second", "stop", "never")]
    assert apply_filters([Candidate("x")], ctx("y = "), chain) == []
    assert calls == ["first", "second", "stop"]


def test_apply_filters_full_chain_on_a_block_completion():
    context = ctx("def mean(xs):\n    ", "\n\nprint(mean([1, 2]))\n")
    completion = "total = sum(xs)   \n    return total / len(xs)\n\nprint(mean([1, 2]))\n"
    assert [c.text for c in apply_filters([Candidate(completion)], context)] == [
        "total = sum(xs)\n    return total / len(xs)"
    ]


# ---------------------------------------------------------------------------
# Properties of the chain on random text

CODE_ALPHABET = "ab x1=:,.()[]{}'\"#\\ \t\n\r"
code_text = st.text(alphabet=CODE_ALPHABET, max_size=40)


def shown(text: str, mode: str) -> str:
    """What the editor shows: line mode shows the first line only."""
    return text.split("\n")[0].split("\r")[0] if mode == "line" else text


def is_cut_and_unspaced(before: str, after: str) -> bool:
    """Whether `after` is a prefix of `before` with some whitespace deleted."""
    position = 0
    for char in after:
        while position < len(before) and before[position] != char:
            if not before[position].isspace():
                return False
            position += 1
        if position == len(before):
            return False
        position += 1
    return True


@settings(max_examples=300, deadline=None)
@given(
    prefix=code_text,
    suffix=code_text,
    texts=st.lists(code_text, max_size=3),
    mode=st.sampled_from(["line", "block"]),
)
def test_filters_only_cut_and_line_mode_stays_on_one_line(prefix, suffix, texts, mode):
    context = ctx(prefix, suffix, mode)
    for text in texts:
        candidate = Candidate(text)
        for name, filter_ in FILTERS:
            result = filter_(candidate, context)
            if result is None:
                break
            if name == "trim_trailing_whitespace":
                assert is_cut_and_unspaced(candidate.text, result.text), (name, candidate.text, result.text)
            else:
                assert candidate.text.startswith(result.text), (name, candidate.text, result.text)
            if name == "balance_brackets":
                rest = _rest_of_line(suffix)
                assert _imbalance(shown(result.text, mode), context, rest) <= _imbalance(
                    shown(candidate.text, mode), context, rest
                )
            candidate = result
    kept = apply_filters([Candidate(text) for text in texts], context)
    assert len({c.text for c in kept}) == len(kept)
    for candidate in kept:
        assert candidate.text.strip()
        if mode == "line":
            assert "\n" not in candidate.text


def test_is_cut_and_unspaced_helper():
    assert is_cut_and_unspaced("x = 1  \n\ny", "x = 1")
    assert is_cut_and_unspaced("a b", "ab")
    assert not is_cut_and_unspaced("abc", "ac")
    assert not is_cut_and_unspaced("ab", "abc")
