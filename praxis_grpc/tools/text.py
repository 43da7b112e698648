"""The ``text_analyzer`` tool: counts and word frequencies of a text."""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

from praxis_grpc.tools.base import JSON, ToolSpec
from praxis_grpc.tools.workers import WorkerPool

# A character takes up to 4 bytes in UTF-8, so a text of this many characters
# in any script, with its envelope, fits the default argument limit
# (tasks.max_argument_bytes, 1 MiB of protobuf wire size).
MAX_TEXT_LENGTH: Final = 250_000
TOP_WORDS: Final = 10

# Letters and digits, with inner apostrophes or hyphens ("don't", "well-known").
_WORD: Final = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")
_SENTENCE_END: Final = re.compile(r"[.!?]+(?=[\s\"'\u201d)\]]|$)")
_PARAGRAPH_BREAK: Final = re.compile(r"\n[ \t\r\f\v]*\n")
_ABBREVIATIONS: Final = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd"}
)


def analyze(text: str) -> JSON:
    """Count characters, words, lines, sentences and paragraphs of ``text``.

    Words are runs of letters and digits (inner ``'`` and ``-`` kept); they are
    case-folded for ``top_words``, which lists the ten most frequent with ties
    in alphabetical order. A sentence ends at ``.``, ``!`` or ``?`` followed by
    whitespace or the end, except after a common abbreviation or an initial;
    trailing text without a terminator counts as a sentence. Paragraphs are
    separated by blank lines.

    Returns:
        ``characters``, ``characters_no_spaces``, ``words``, ``lines``,
        ``sentences``, ``paragraphs``, ``average_word_length`` (two decimals)
        and ``top_words`` (a list of ``{"word", "count"}``).
    """
    words = _WORD.findall(text)
    counts = Counter(word.casefold() for word in words)
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_WORDS]
    average = round(sum(map(len, words)) / len(words), 2) if words else 0.0
    return {
        "characters": len(text),
        "characters_no_spaces": sum(1 for char in text if not char.isspace()),
        "words": len(words),
        "lines": len(text.splitlines()),
        "sentences": count_sentences(text),
        "paragraphs": sum(1 for block in _PARAGRAPH_BREAK.split(text) if block.strip()),
        "average_word_length": average,
        "top_words": [{"word": word, "count": count} for word, count in top],
    }


def count_sentences(text: str) -> int:
    """Count sentences with a punctuation heuristic that skips abbreviations.

    A paragraph break also ends a sentence, so a heading or a list item
    without a full stop counts as one.
    """
    return sum(_sentences_in(block) for block in _PARAGRAPH_BREAK.split(text))


def _sentences_in(block: str) -> int:
    count = 0
    start = 0
    for match in _SENTENCE_END.finditer(block):
        if match.group() == "." and _follows_abbreviation(
            block, max(start, match.start() - 32), match.start()
        ):
            continue
        if _WORD.search(block, start, match.start()):
            count += 1
        start = match.end()
    if _WORD.search(block, start):
        count += 1
    return count


def _follows_abbreviation(text: str, start: int, end: int) -> bool:
    # Only a short window is inspected: abbreviations are short, and looking
    # back to the last sentence end would be quadratic on "a. b. c. ...".
    tokens = text[start:end].split()
    if not tokens:
        return False
    token = tokens[-1].strip("\"'(").casefold()
    return token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha())


class TextAnalyzer:
    """Analyses text in a worker process of ``workers``."""

    _SPEC: Final = ToolSpec(
        name="text_analyzer",
        description="Count characters, words, lines, sentences and the most frequent words "
        f"of a text of up to {MAX_TEXT_LENGTH:,} characters (in any script, that fits the "
        "default 1 MiB argument limit).",
        input_schema={
            "type": "object",
            "properties": {
                "text": {
                    "type": "string",
                    "maxLength": MAX_TEXT_LENGTH,
                    "description": f"at most {MAX_TEXT_LENGTH:,} characters (Unicode code "
                    "points): at 4 UTF-8 bytes each, within the default 1 MiB argument limit",
                }
            },
            "required": ["text"],
            "additionalProperties": False,
        },
        idempotent=True,
    )

    def __init__(self, workers: WorkerPool) -> None:
        self._workers = workers

    @property
    def spec(self) -> ToolSpec:
        """The ``text_analyzer`` tool spec."""
        return self._SPEC

    async def run(self, arguments: JSON) -> JSON:
        """Return the result of :func:`analyze` for ``arguments["text"]``."""
        result: JSON = await self._workers.call(f"{__name__}:analyze", str(arguments["text"]))
        return result
