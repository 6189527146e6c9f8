"""The second general-text source, "news" (the Lee corpus in the gensim wheel), and retention on it."""

import importlib.util
import re
import sys
from collections import Counter

import pytest
from support.tiny_lm import save_tiny_lm
from transformers import AutoModelForCausalLM, AutoTokenizer

from e2wm.errors import E2WMError
from e2wm.eval.retention import perplexity, retention_perplexity
from e2wm.training import general_text


def test_news_parts_are_disjoint_articles_cut_at_sentence_ends():
    fisher = general_text.passages("fisher", "news")
    retention = general_text.passages("retention", "news")
    assert len(retention) == 50  # lee.cor: 50 articles, none over the passage size
    assert 293 <= len(fisher) <= 450  # lee_background.cor: 293 distinct articles, the long ones cut
    assert set(fisher).isdisjoint(retention)
    sentences = [{s for p in part for s in re.split(r"(?<=[.?!])\s+", p)} for part in (fisher, retention)]
    assert sentences[0].isdisjoint(sentences[1])
    assert general_text.passages("fisher", "news") == fisher  # deterministic
    for passage in fisher + retention:
        assert 50 <= len(passage) <= general_text.MAX_PASSAGE_CHARS
        assert "<i>" not in passage and "\n" not in passage and passage == passage.strip()
    words = Counter(w for p in retention for w in re.findall(r"[a-z]+", p.lower()))
    assert words["the"] > 200 and words["said"] > 30  # news prose, not code
    assert "£" in "".join(fisher + retention)  # the files' one non-ASCII character, read as Latin-1


def test_sources_differ_and_pydoc_is_the_default():
    assert general_text.SOURCES == ("pydoc", "news")
    assert general_text.passages("retention") == general_text.passages("retention", "pydoc")
    assert set(general_text.passages("fisher", "pydoc")).isdisjoint(general_text.passages("fisher", "news"))
    with pytest.raises(E2WMError, match="unknown general-text source 'wiki'"):
        general_text.passages("fisher", "wiki")


def test_news_is_read_without_importing_gensim():
    general_text._news_passages.cache_clear()
    sys.modules.pop("gensim", None)
    general_text.passages("retention", "news")
    assert "gensim" not in sys.modules


def test_missing_gensim_is_one_line_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gensim" else real(name, *a)
    )
    general_text._news_passages.cache_clear()
    try:
        with pytest.raises(E2WMError, match=r"pip install gensim==4\.4\.0") as info:
            general_text.passages("retention", "news")
        assert "\n" not in str(info.value)
    finally:
        general_text._news_passages.cache_clear()


def test_retention_perplexity_on_news(tmp_path):
    folder = save_tiny_lm(tmp_path / "lm")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    passages = general_text.passages("retention", "news")
    spaced = [passages[i * 50 // 8] for i in range(8)]
    news = retention_perplexity(model, tokenizer, max_passages=8, max_length=64, source="news")
    assert news == perplexity(model, tokenizer, spaced, 64)
    assert news != retention_perplexity(model, tokenizer, max_passages=8, max_length=64)  # pydoc
    with pytest.raises(E2WMError, match="unknown general-text source"):
        retention_perplexity(model, tokenizer, source="web")
