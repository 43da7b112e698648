"""The text analyzer counts what a reader would count."""

from __future__ import annotations

from pathlib import Path

import pytest

from praxis_grpc.config import TasksConfig
from praxis_grpc.errors import InvalidArgument
from praxis_grpc.tools.registry import build_registry
from praxis_grpc.tools.text import MAX_TEXT_LENGTH, TextAnalyzer, analyze, count_sentences
from praxis_grpc.tools.workers import WorkerPool
from praxis_grpc.wire import dict_to_struct

SAMPLE = """The quick brown fox. The lazy dog!
Is it the end? Don't stop.

Mr. Smith met Dr. J. Doe, e.g. at noon
"""


def test_counts_characters_words_lines_and_paragraphs() -> None:
    result = analyze(SAMPLE)

    assert result["characters"] == len(SAMPLE)
    assert result["characters_no_spaces"] == len("".join(SAMPLE.split()))
    assert result["words"] == 23  # "e.g." is two words
    assert result["lines"] == 4
    assert result["paragraphs"] == 2


def test_counts_sentences_skipping_abbreviations_and_initials() -> None:
    assert count_sentences(SAMPLE) == 5
    assert count_sentences("Prof. X arrived. Then etc. happened") == 2
    assert count_sentences("No terminator") == 1
    assert count_sentences("Wait... what?! Yes.") == 3
    assert count_sentences("Heading\n\nBody text.") == 2
    assert count_sentences("") == 0


def test_top_words_are_case_folded_and_ties_alphabetical() -> None:
    result = analyze("b a B c A b d e f g h i j k")

    assert result["top_words"][:3] == [
        {"word": "b", "count": 3},
        {"word": "a", "count": 2},
        {"word": "c", "count": 1},
    ]
    assert len(result["top_words"]) == 10
    assert [entry["word"] for entry in result["top_words"][2:]] == list("cdefghij")


def test_average_word_length_has_two_decimals() -> None:
    assert analyze("ab abc")["average_word_length"] == 2.5
    assert analyze("a bb bb")["average_word_length"] == 1.67


def test_keeps_inner_apostrophes_and_hyphens() -> None:
    result = analyze("don't well-known rock'n'roll")

    assert result["words"] == 3


def test_empty_text_has_zero_counts() -> None:
    result = analyze("")

    assert result["words"] == 0
    assert result["sentences"] == 0
    assert result["average_word_length"] == 0.0
    assert result["top_words"] == []


async def test_the_worker_gives_the_same_result_as_a_direct_call(workers: WorkerPool) -> None:
    text = "Word. " * 20_000

    result = await TextAnalyzer(workers).run({"text": text})

    assert result == analyze(text)
    assert result["sentences"] == 20_000


def test_many_initials_stay_fast() -> None:
    assert count_sentences("a. " * 100_000) == 1


@pytest.mark.parametrize(
    "unit",
    [
        pytest.param("字", id="cjk"),
        pytest.param("\n", id="newlines"),
        pytest.param("😀", id="emoji"),
    ],
)
async def test_the_longest_text_the_schema_admits_fits_the_default_limit(
    unit: str, tmp_path: Path, workers: WorkerPool
) -> None:
    registry = build_registry(["text_analyzer"], None, tmp_path, workers)
    longest = {"text": unit * MAX_TEXT_LENGTH}

    tool = registry.validate("text_analyzer", longest)
    result = await tool.run(longest)

    # What the node measures: the arguments' protobuf wire size (UTF-8).
    arguments = dict_to_struct(longest)
    assert arguments is not None
    assert arguments.ByteSize() <= TasksConfig().max_argument_bytes
    assert result == analyze(longest["text"])
    assert result["characters"] == MAX_TEXT_LENGTH
    with pytest.raises(InvalidArgument) as refused:
        registry.validate("text_analyzer", {"text": unit * (MAX_TEXT_LENGTH + 1)})
    assert refused.value.field == "arguments.text"
    assert f"at most {MAX_TEXT_LENGTH} characters" in refused.value.message


def test_the_spec_states_the_limit() -> None:
    assert f"{MAX_TEXT_LENGTH:,}" in TextAnalyzer(WorkerPool(1)).spec.description
