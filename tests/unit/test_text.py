"""Chinese script normalisation (OpenCC), scoring normalisation and the WER/CER built on them."""

from __future__ import annotations

import pytest

from cinedub.eval.asr import cer, wer
from cinedub.text import (
    max_ngram_repeats,
    normalize_for_scoring,
    normalize_script,
    opencc_converter,
    remove_cjk_spaces,
    scoring_units,
    to_simplified,
    to_traditional,
)

# AISHELL-1 BAC009S0724W0121 reference (Simplified) and its Traditional spelling
SIMPLIFIED = "广州市房地产中介协会分析"
TRADITIONAL = "廣州市房地產中介協會分析"


def test_opencc_t2s_and_s2t():
    assert to_simplified(TRADITIONAL) == SIMPLIFIED
    assert to_traditional(SIMPLIFIED) == TRADITIONAL
    # phrase-level conversion: 發 is both 发 (send) and 髮 (hair) in Simplified
    assert to_traditional("头发") == "頭髮"
    assert to_simplified("頭髮 發展") == "头发 发展"


def test_converter_is_cached():
    assert opencc_converter("t2s") is opencc_converter("t2s")


def test_normalize_script_by_language():
    assert normalize_script(TRADITIONAL, "zh") == SIMPLIFIED
    assert normalize_script(TRADITIONAL, "zh-TW", "simplified") == SIMPLIFIED
    assert normalize_script(SIMPLIFIED, "zh", "traditional") == TRADITIONAL
    assert normalize_script(SIMPLIFIED, "yue", "traditional") == TRADITIONAL
    # only Chinese text changes: Latin inside stays, other languages are left alone (Japanese kanji included)
    assert normalize_script("我用 iPhone 發訊息", "zh") == "我用 iPhone 发讯息"
    assert normalize_script("頭髮", "ja") == "頭髮"
    assert normalize_script("Hello", "en") == "Hello"
    assert normalize_script("", "zh") == ""
    with pytest.raises(ValueError, match="zh_script"):
        normalize_script(SIMPLIFIED, "zh", "pinyin")  # type: ignore[arg-type]


def test_normalize_for_scoring_latin():
    assert normalize_for_scoring("Good morning.  My name is Jordi Mas!") == "good morning my name is jordi mas"
    assert normalize_for_scoring("Don't stop — twenty-one, (ok)?") == "dont stop twenty one ok"
    assert normalize_for_scoring("Don\u2019t") == "dont"
    assert normalize_for_scoring("ＡＢＣ　１２３") == "abc 123"  # full-width forms and ideographic space (NFKC)
    assert normalize_for_scoring(" ... ") == ""


def test_normalize_for_scoring_cjk():
    text = "二十一是薛妹妹的生日，你说该怎么个办法？「好」《红楼梦》、…"
    assert normalize_for_scoring(text) == "二十一是薛妹妹的生日 你说该怎么个办法 好 红楼梦"
    assert normalize_for_scoring("你好，world。", split_cjk=True) == "你 好 world"
    assert scoring_units("Hi 你好!") == ["hi", "你", "好"]
    assert remove_cjk_spaces("广州 市 iPhone 手机 and more") == "广州市iPhone手机and more"


def test_max_ngram_repeats():
    assert max_ngram_repeats([]) == (0, 0)
    assert max_ngram_repeats("the cat sat on the mat".split()) == (1, 1)
    assert max_ngram_repeats("a b a b a b c".split()) == (3, 2)
    assert max_ngram_repeats("no no no no no".split()) == (5, 1)
    assert max_ngram_repeats(list("我爱你我爱你我爱你我爱你")) == (4, 3)


def test_wer_counts_words_after_normalisation():
    ref = "Good morning. My name is Jordi Mas."
    assert wer(ref, "good morning, my name is Jordi Mas") == 0.0
    assert wer("a b c d", "a x c d") == pytest.approx(0.25)
    assert wer("a b c d", "a b c d e f") == pytest.approx(0.5)  # insertions count
    assert wer("a b", "") == 1.0
    assert wer("", "") == 0.0
    with pytest.raises(ValueError, match="reference is empty"):
        wer("...", "something")


def test_wer_treats_cjk_characters_as_words():
    assert wer("广州市", "广州是") == pytest.approx(1 / 3)
    assert wer("我用iPhone", "我用 iphone") == 0.0


def test_cer_chinese_with_script_normalisation():
    hyp = "廣州市佛地產中間協會分析"  # whisper-base's output on that AISHELL clip: 2 substitutions (房->佛, 介->间)
    assert cer(SIMPLIFIED, hyp, zh_script="simplified") == pytest.approx(2 / 12)
    assert cer(SIMPLIFIED, hyp) > 2 / 12  # without script normalisation 地產/協會 also count as errors
    assert cer(SIMPLIFIED, "广州 市房地产，中介协会分析。") == 0.0  # CJK spaces and punctuation do not count
    assert cer("ab cd", "abcd") == pytest.approx(1 / 5)  # the space between Latin words does
