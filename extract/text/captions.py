r"""Caption parsing: hashtags, mentions, URLs, emoji and stable hashtag ids (pure Python, stdlib only).

Captions are untrusted user text, so every step here is linear in the caption length (no
backtracking regular expressions) and accepts any ``str``: control characters, lone
surrogates and megabyte captions included.

Parsing rules (``parse_caption``), in order:

1. *Invisible characters are removed*: every Unicode ``Default_Ignorable_Code_Point``
   (zero-width space/joiner/non-joiner, word joiner, BOM, bidi marks, embeddings, overrides
   and isolates, variation selectors, soft hyphen, Hangul fillers, tag characters, ...), so
   ``#f\u200byp`` and ``#fyp`` are the same tag. Lone surrogates become U+FFFD.
2. *URLs* (``http://``, ``https://``, ``ftp://`` or ``www.`` up to whitespace; trailing
   ``.,;:!?'"`` and unbalanced closing brackets are not part of the URL) are found first,
   and nothing inside a URL is a hashtag or mention: ``https://x.com/a#frag`` has no tag;
   a tag glued to a URL ends where the URL starts (``#fyphttps://x.com`` is ``#fyp``).
3. A *hashtag* is a hash sign (``#``, or a look-alike that NFKC folds to ``#``: ``＃`` ``﹟``)
   followed by one or more tag characters: letters, combining marks (not enclosing marks),
   decimal digits or ``_`` in any script, judged after NFKC (so full-width ``ｆｙｐ`` counts).
   It ends at anything else (space, punctuation, emoji, another ``#``). A lone ``#`` is not
   a tag; ``##double`` is the tag ``double``; glued tags count (``🔥#fyp``, ``love#fyp``).
4. A *mention* is ``@`` (or ``＠`` ``﹫``) followed by tag characters and inner dots, not
   preceded by a tag character or one of ``.-+`` (so ``name@example.com`` is an e-mail
   address, not a mention). ``🔥@user`` is a mention.
5. *Normalised tag* (``normalize_hashtag``): NFKC, casefold, NFKC again (the NFKC_Casefold
   closure, so normalising twice changes nothing). ``#ＦＹＰ``, ``#FYP`` and ``#fyp`` are
   one tag; composed and decomposed accents are one tag.

``tag_id`` (README wording)::

    tag_id = int.from_bytes(blake2b(tag.encode("utf-8"), digest_size=8).digest(),
                            "big", signed=True)

    i.e. BLAKE2b with an 8-byte digest (BLAKE2b-64, no key, salt or person) of the UTF-8
    bytes of the *normalised* tag, read as a big-endian two's-complement signed 64-bit
    integer. Example: tag_id("fyp") is the same number in every process, machine and
    language that implements BLAKE2b-64 (Java: Bouncy Castle Blake2bDigest(64)).
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# --- Unicode data (Unicode 14+, stable properties; tests compare against the `regex` module) ---

# Default_Ignorable_Code_Point (DerivedCoreProperties.txt): invisible in rendering.
_IGNORABLE_RANGES = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)

# Extended_Pictographic (emoji-data.txt): code points that start an emoji.
_PICTOGRAPHIC_TABLE = """
A9 AE 203C 2049 2122 2139 2194-2199 21A9-21AA 231A-231B 2328 23CF 23E9-23F3 23F8-23FA 24C2
25AA-25AB 25B6 25C0 25FB-25FE 2600-2604 260E 2611 2614-2615 2618 261D 2620 2622-2623 2626 262A
262E-262F 2638-263A 2640 2642 2648-2653 265F-2660 2663 2665-2666 2668 267B 267E-267F 2692-2697
2699 269B-269C 26A0-26A1 26A7 26AA-26AB 26B0-26B1 26BD-26BE 26C4-26C5 26C8 26CE-26CF 26D1
26D3-26D4 26E9-26EA 26F0-26F5 26F7-26FA 26FD 2702 2705 2708-270D 270F 2712 2714 2716 271D 2721
2728 2733-2734 2744 2747 274C 274E 2753-2755 2757 2763-2764 2795-2797 27A1 27B0 27BF 2934-2935
2B05-2B07 2B1B-2B1C 2B50 2B55 3030 303D 3297 3299 1F004 1F02C-1F02F 1F094-1F09F 1F0AF-1F0B0
1F0C0 1F0CF-1F0D0 1F0F6-1F0FF 1F170-1F171 1F17E-1F17F 1F18E 1F191-1F19A 1F1AF-1F1E5
1F201-1F20F 1F21A 1F22F 1F232-1F23A 1F23C-1F23F 1F249-1F25F 1F266-1F321 1F324-1F393
1F396-1F397 1F399-1F39B 1F39E-1F3F0 1F3F3-1F3F5 1F3F7-1F3FA 1F400-1F4FD 1F4FF-1F53D
1F549-1F54E 1F550-1F567 1F56F-1F570 1F573-1F57A 1F587 1F58A-1F58D 1F590 1F595-1F596
1F5A4-1F5A5 1F5A8 1F5B1-1F5B2 1F5BC 1F5C2-1F5C4 1F5D1-1F5D3 1F5DC-1F5DE 1F5E1 1F5E3 1F5E8
1F5EF 1F5F3 1F5FA-1F64F 1F680-1F6C5 1F6CB-1F6D2 1F6D5-1F6E5 1F6E9 1F6EB-1F6F0 1F6F3-1F6FF
1F7DC-1F7F0 1F80C-1F80F 1F848-1F84F 1F85A-1F85F 1F888-1F88F 1F8AE-1F8AF 1F8BC-1F8BF
1F8C2-1F8CF 1F8D9-1F8FF 1F90C-1F93A 1F93C-1F945 1F947-1F9FF 1FA58-1FA5F 1FA6E-1FAFF
1FC00-1FFFD
"""

# Pictographs that are ordinary typography unless followed by VS16 (emoji presentation).
_TYPOGRAPHIC_PICTOGRAPHS = frozenset(
    [0xA9, 0xAE, 0x203C, 0x2049, 0x2122, 0x2139, *range(0x2194, 0x219A), 0x21A9, 0x21AA]
)
_EMOJI_MODIFIERS = (0x1F3FB, 0x1F3FF)  # skin tones
_REGIONAL_INDICATORS = (0x1F1E6, 0x1F1FF)  # two make a flag
_EMOJI_TAGS = (0xE0020, 0xE007F)  # subdivision flag tag sequences
_VS15, _VS16, _ZWJ = "\ufe0e", "\ufe0f", "\u200d"

# Scripts written without spaces between words: transcript matching uses plain substrings.
_UNSPACED_RANGES = (
    (0x0E00, 0x0EFF), (0x0F00, 0x0FFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x2E80, 0x2FDF),
    (0x3005, 0x3007), (0x3021, 0x3029), (0x3038, 0x303B), (0x3040, 0x30FF), (0x31F0, 0x31FF),
    (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F),
)

HASH_SIGNS = frozenset("#\uff03\ufe5f")  # every character whose NFKC is "#"
AT_SIGNS = frozenset("@\uff20\ufe6b")  # every character whose NFKC is "@"
_EMAIL_LOCAL_PUNCT = frozenset(".-+")
_URL_TRAILING = ".,;:!?'\""
_URL_CLOSERS = {")": "(", "]": "[", "}": "{"}


def _parse_ranges(table: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in table.split():
        lo, _, hi = item.partition("-")
        out.append((int(lo, 16), int(hi or lo, 16)))
    return tuple(out)


_PICTOGRAPHIC_RANGES = _parse_ranges(_PICTOGRAPHIC_TABLE)
_PICTOGRAPHIC_STARTS = [lo for lo, _ in _PICTOGRAPHIC_RANGES]


def _char_class(ranges: tuple[tuple[int, int], ...]) -> str:
    return "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in ranges)


_IGNORABLE_RE = re.compile(f"[{_char_class(_IGNORABLE_RANGES)}]+")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
# Literal scheme prefixes keep the search linear; the body stops at whitespace, quotes and emoji.
_URL_RE = re.compile(
    r"(?:https?://|ftp://|www\.)[^\s<>\"`{}|\\^" + _char_class(_PICTOGRAPHIC_RANGES) + "]+",
    re.IGNORECASE,
)
# Candidates for an emoji start: keycaps, or a coarse superset of the pictographic, modifier and
# regional-indicator ranges (a few ranges scan ~5x faster than the exact 156) checked exactly later.
_EMOJI_START_RE = re.compile("[0-9#*]\ufe0f?\u20e3|[\u00a9\u00ae\u203c-\u3299\U0001f000-\U0001fffd]")
_SIGIL_RE = re.compile("[" + "".join(sorted(HASH_SIGNS | AT_SIGNS)) + "]")


# --- public API --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HashtagOccurrence:
    """One hashtag as it occurs in a caption (one row of the ``hashtags`` table).

    ``position``: 0-based order among the caption's hashtags; ``raw``: as written, invisible
    characters removed, without ``#``; ``tag``: ``normalize_hashtag(raw)``; ``tag_id``:
    ``tag_id(tag)``.
    """

    position: int
    raw: str
    tag: str
    tag_id: int


@dataclass(frozen=True)
class ParsedCaption:
    """Everything ``parse_caption`` finds in one caption.

    ``hashtags``: every occurrence in order; ``unique_tags``: normalised tags, de-duplicated in
    order of first appearance; ``mentions``: normalised handles without ``@`` (every
    occurrence); ``urls``: as written; ``text_without_hashtags``: the normalised caption with
    every hashtag (``#`` included) removed and whitespace/control runs collapsed to one space;
    ``length``: characters of the caption after invisible-character removal and NFKC;
    ``n_emoji``: emoji, each ZWJ sequence, flag, keycap or modified emoji counted once.
    """

    hashtags: tuple[HashtagOccurrence, ...]
    unique_tags: tuple[str, ...]
    mentions: tuple[str, ...]
    urls: tuple[str, ...]
    text_without_hashtags: str
    length: int
    n_emoji: int


def remove_invisible(text: str) -> str:
    """``text`` without Default_Ignorable code points; lone surrogates become U+FFFD."""
    text = _IGNORABLE_RE.sub("", text)
    return _SURROGATE_RE.sub("\ufffd", text)


def normalize_hashtag(raw: str) -> str:
    """The normalised form of a tag: invisible characters removed, NFKC, casefold, NFKC.

    ``raw`` is a tag body as written; a leading ``#`` (or look-alike) and surrounding
    whitespace are dropped. Idempotent: ``normalize_hashtag(normalize_hashtag(x))`` equals
    ``normalize_hashtag(x)``.
    """
    text = unicodedata.normalize("NFKC", remove_invisible(raw)).strip().lstrip("#").strip()
    return fold_text(text)


def fold_text(text: str) -> str:
    """Caseless, look-alike-free form of any text: invisible characters removed, NFKC,
    casefold, NFKC (Unicode's NFKC_Casefold closure). Used for tags and transcripts alike."""
    text = unicodedata.normalize("NFKC", remove_invisible(text)).casefold()
    return remove_invisible(unicodedata.normalize("NFKC", text))


def tag_id(tag: str) -> int:
    """Stable signed 64-bit id of a *normalised* tag (pass ``normalize_hashtag(raw)``).

    ``int.from_bytes(hashlib.blake2b(tag.encode("utf-8"), digest_size=8).digest(), "big",
    signed=True)``: BLAKE2b-64 of the UTF-8 bytes, big-endian two's complement. Identical
    across processes, machines and Python versions (never Python's salted ``hash()``).
    """
    digest = hashlib.blake2b(tag.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def parse_caption(caption: str | None) -> ParsedCaption:
    """Parse one caption (``None`` = no caption) into hashtags, mentions, URLs and counts.

    See the module docstring for the rules. Linear time in ``len(caption)``; never raises
    on any ``str``.
    """
    if not caption:
        return ParsedCaption((), (), (), (), "", 0, 0)
    clean = remove_invisible(caption)
    url_spans = _url_spans(clean)
    urls = tuple(clean[a:b] for a, b in url_spans)
    tag_spans: list[tuple[int, int]] = []
    occurrences: list[HashtagOccurrence] = []
    mentions: list[str] = []
    span_i = 0
    for match in _SIGIL_RE.finditer(clean):
        start = match.start()
        while span_i < len(url_spans) and url_spans[span_i][1] <= start:
            span_i += 1
        limit = len(clean)
        if span_i < len(url_spans):
            if url_spans[span_i][0] <= start:
                continue  # inside a URL: a fragment or a user path, not a tag or mention
            limit = url_spans[span_i][0]  # "#fyphttps://x.com" is #fyp and a URL
        end = _scan_tag_body(clean, start + 1, limit)
        if end == start + 1:
            continue
        if match.group() in HASH_SIGNS:
            raw = clean[start + 1:end]
            tag, tid = _tag_and_id(raw)
            occurrences.append(HashtagOccurrence(len(occurrences), raw, tag, tid))
            tag_spans.append((start, end))
        elif _mention_allowed(clean, start):
            handle = _scan_mention(clean, start + 1, limit)
            if handle:
                mentions.append(fold_text(handle))
    unique = tuple(dict.fromkeys(o.tag for o in occurrences))
    return ParsedCaption(
        hashtags=tuple(occurrences),
        unique_tags=unique,
        mentions=tuple(mentions),
        urls=urls,
        text_without_hashtags=collapse_text(_cut_spans(clean, tag_spans, _hash_signs_to_keep_apart(clean, url_spans))),
        length=len(unicodedata.normalize("NFKC", clean)),
        n_emoji=count_emoji(caption),
    )


def count_emoji(text: str) -> int:
    """Number of emoji in ``text``; a ZWJ sequence, flag, keycap or skin-toned emoji is one.

    An emoji starts at an Extended_Pictographic code point (typographic ones such as ``©``
    and ``™`` only with VS16), a skin-tone modifier, a regional-indicator pair, or a keycap
    (``1️⃣``). Linear time.
    """
    n, pos, size = 0, 0, len(text)
    for match in _EMOJI_START_RE.finditer(text):
        i = match.start()
        if i < pos:
            continue  # part of a sequence already counted
        if match.end() - i > 1:  # keycap
            n += 1
            pos = match.end()
        elif _in(ord(text[i]), _REGIONAL_INDICATORS):
            if i + 1 < size and _in(ord(text[i + 1]), _REGIONAL_INDICATORS):
                n += 1
                pos = i + 2
        elif _is_emoji_base(text, i):
            n += 1
            pos = _skip_emoji_sequence(text, i + 1)
    return n


def tag_words(raw: str) -> list[str]:
    """Words of a tag, normalised: camelCase, snake_case, digit runs and script changes split.

    ``"MyDogMax"`` -> ``["my", "dog", "max"]``; ``"NYCSubway"`` -> ``["nyc", "subway"]``;
    ``"dog_life"`` -> ``["dog", "life"]``; ``"top10"`` -> ``["top", "10"]``;
    ``"東京Tokyo"`` -> ``["東京", "tokyo"]``. Words are ``normalize_hashtag``-ed.
    """
    text = unicodedata.normalize("NFKC", remove_invisible(raw))
    words: list[str] = []
    current: list[str] = []
    prev = ""  # class of the last non-mark character of the current word
    for ch in text:
        cls = _word_class(ch)
        if cls == "sep":
            _flush(words, current)
            prev = ""
            continue
        if cls == "mark":
            if current:
                current.append(ch)
            continue
        if prev and cls != prev:
            if prev == "upper" and cls == "lower":
                # "NYCSubway": the last capital of a capital run starts the next word.
                if sum(1 for c in current if _word_class(c) == "upper") > 1:
                    tail = _split_last_letter(current)
                    _flush(words, current)
                    current.extend(tail)
            else:
                _flush(words, current)
        current.append(ch)
        prev = cls
    _flush(words, current)
    return words


class TranscriptMatcher:
    """Answers "do this tag's words appear in the transcript?" for many tags of one video.

    The transcript is normalised like tags (invisible characters removed, NFKC, casefold) and
    split into words at anything that is not a letter, mark or digit. A tag matches when its
    words, joined, equal a run of consecutive transcript words joined, so ``#MyDogMax``,
    ``#mydogmax`` and ``#my_dog_max`` all match "this is my dog, Max!". Tags in scripts
    written without spaces (CJK, Thai, ...) match as substrings of the joined words.
    """

    def __init__(self, transcript: str | None):
        words = fold_text(transcript or "").translate(_SEPARATOR_TABLE).split()
        self._joined = "".join(words)
        self._boundaries = set()
        offset = 0
        for w in words:
            self._boundaries.add(offset)
            offset += len(w)
        self._boundaries.add(offset)

    def contains_tag(self, raw: str) -> bool:
        """True when the words of ``raw`` (see ``tag_words``) appear in the transcript."""
        target = "".join(tag_words(raw))
        if not target or len(target) > len(self._joined):
            return False
        if any(_in_any(ord(c), _UNSPACED_RANGES) for c in target):
            return target in self._joined
        start = self._joined.find(target)
        while start != -1:
            if start in self._boundaries and start + len(target) in self._boundaries:
                return True
            start = self._joined.find(target, start + 1)
        return False


def tag_in_transcript(raw: str, transcript: str) -> bool:
    """True when the tag's words appear in ``transcript`` (see ``TranscriptMatcher``)."""
    return TranscriptMatcher(transcript).contains_tag(raw)


# --- internals ---------------------------------------------------------------------------------


def _in(cp: int, bounds: tuple[int, int]) -> bool:
    return bounds[0] <= cp <= bounds[1]


def _in_any(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def is_pictographic(cp: int) -> bool:
    """True when code point ``cp`` is Extended_Pictographic (can start an emoji)."""
    i = bisect.bisect_right(_PICTOGRAPHIC_STARTS, cp) - 1
    return i >= 0 and cp <= _PICTOGRAPHIC_RANGES[i][1]


def _is_emoji_base(text: str, i: int) -> bool:
    cp = ord(text[i])
    if _in(cp, _EMOJI_MODIFIERS):
        return True
    if not is_pictographic(cp):
        return False
    if cp in _TYPOGRAPHIC_PICTOGRAPHS:
        return i + 1 < len(text) and text[i + 1] == _VS16
    return True


def _skip_emoji_sequence(text: str, i: int) -> int:
    """Index after the modifiers, variation selectors, tags and ZWJ links of one emoji."""
    size = len(text)
    while i < size:
        ch = text[i]
        cp = ord(ch)
        if ch in (_VS15, _VS16) or _in(cp, _EMOJI_MODIFIERS) or _in(cp, _EMOJI_TAGS):
            i += 1
        elif ch == _ZWJ and i + 1 < size and (is_pictographic(ord(text[i + 1]))
                                              or _in(ord(text[i + 1]), _EMOJI_MODIFIERS)):
            i += 2
        else:
            break
    return i


@lru_cache(maxsize=4096)
def _tag_and_id(raw: str) -> tuple[str, int]:
    tag = normalize_hashtag(raw)
    return tag, tag_id(tag)


def _is_base_tag_char(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat[0] == "L" or cat in ("Mn", "Mc", "Nd") or ch == "_"


@lru_cache(maxsize=65536)
def is_tag_char(ch: str) -> bool:
    """True when ``ch`` can be part of a hashtag: after NFKC, only letters, non-enclosing
    marks, decimal digits and ``_`` (``ｆ`` yes, ``ﷺ`` no since NFKC gives spaces)."""
    if ch.isascii():
        return ch.isalnum() or ch == "_"
    folded = unicodedata.normalize("NFKC", ch)
    return bool(folded) and all(_is_base_tag_char(c) for c in folded)


def _scan_tag_body(text: str, i: int, limit: int) -> int:
    """End of the tag characters from ``i`` (at most ``limit``)."""
    while i < limit and is_tag_char(text[i]):
        i += 1
    return i


def _mention_allowed(text: str, at: int) -> bool:
    if at == 0:
        return True
    prev = text[at - 1]
    return not (is_tag_char(prev) or prev in _EMAIL_LOCAL_PUNCT)


def _scan_mention(text: str, i: int, limit: int) -> str:
    """The handle after ``@``: tag characters with inner dots (``first.last``)."""
    start = i
    while i < limit and (is_tag_char(text[i]) or text[i] == "."):
        i += 1
    return text[start:i].rstrip(".")


def _url_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every URL, trailing punctuation and unbalanced closers left out."""
    spans = []
    for match in _URL_RE.finditer(text):
        start, end = match.span()
        url = match.group()
        balance = {c: url.count(c) - url.count(o) for c, o in _URL_CLOSERS.items()}
        while end > start:
            last = text[end - 1]
            if last in _URL_TRAILING:
                end -= 1
            elif balance.get(last, 0) > 0:  # "(see https://x.com/a)": the ")" is prose
                balance[last] -= 1
                end -= 1
            else:
                break
        spans.append((start, end))
    return spans


def _hash_signs_to_keep_apart(text: str, url_spans: list[tuple[int, int]]) -> set[int]:
    """Positions of hash signs (outside URLs) that start no hashtag but whose next character
    NFKC turns into tag characters: ``#¼`` is no hashtag (NFKC gives ``1⁄4``), but the NFKC
    text ``#1⁄4`` would read as ``#1``."""
    apart = set()
    for i in range(len(text) - 1):
        if text[i] in HASH_SIGNS and not is_tag_char(text[i + 1]) \
                and not any(a <= i < b for a, b in url_spans):
            folded = unicodedata.normalize("NFKC", text[i + 1])
            if folded and _is_base_tag_char(folded[0]):
                apart.add(i)
    return apart


def _cut_spans(text: str, spans: list[tuple[int, int]], apart: set[int]) -> str:
    """``text`` without the ``spans`` (each becomes a space: "a#tag b" -> "a b", glued words must
    not merge), with a space after each position in ``apart``."""
    pieces, pos = [], 0
    marks, k = sorted(apart), 0
    for start, end in [*spans, (len(text), len(text))]:
        while k < len(marks) and marks[k] < start:  # never inside a span: a span starts at a tag's sign
            pieces.append(text[pos:marks[k] + 1])
            pieces.append(" ")
            pos = marks[k] + 1
            k += 1
        pieces.append(text[pos:start])
        if start < len(text):
            pieces.append(" ")
        pos = end
    return "".join(pieces)


def collapse_text(text: str) -> str:
    """NFKC, control characters as spaces, whitespace runs collapsed to one space, trimmed."""
    text = _CONTROL_RE.sub(" ", unicodedata.normalize("NFKC", text))
    return " ".join(text.split())


def _word_class(ch: str) -> str:
    if not is_tag_char(ch) or ch == "_":
        return "sep"
    cat = unicodedata.category(ch)
    if cat in ("Lu", "Lt"):
        return "upper"
    if cat == "Ll":
        return "lower"
    if cat == "Nd":
        return "digit"
    if cat[0] == "M":
        return "mark"
    return "other"


def _split_last_letter(current: list[str]) -> list[str]:
    """Remove and return the last letter of ``current`` with the marks that follow it."""
    i = len(current) - 1
    while i > 0 and _word_class(current[i]) == "mark":
        i -= 1
    tail = current[i:]
    del current[i:]
    return tail


def _flush(words: list[str], current: list[str]) -> None:
    if current:
        word = normalize_hashtag("".join(current))
        if word:
            words.append(word)
        current.clear()


class _SeparatorMap(dict):
    """``str.translate`` table: characters that cannot be in a word map to a space (cached)."""

    def __missing__(self, cp: int) -> int:
        ch = chr(cp)
        value = cp if is_tag_char(ch) and ch != "_" else 0x20
        self[cp] = value
        return value


_SEPARATOR_TABLE = _SeparatorMap()
