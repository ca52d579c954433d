"""Tokenizers (char, regex word, optional tiktoken) and the embedded text corpus."""

from __future__ import annotations

import json
import re

import pytest
import torch

from probgen.data.text import (
    DEFAULT_MODULES,
    default_corpus,
    load_text,
    sample_batch,
    split_tokens,
)
from probgen.nn.tokenizers import (
    EOS,
    WORD_PATTERN,
    CharTokenizer,
    TiktokenTokenizer,
    WordTokenizer,
    get_tokenizer,
    load_tokenizer,
    tiktoken_available,
)

SAMPLE = "Hello, world! It's 2024_v2 -- don't panic.\n\tTabs  and  spaces...\n"


# ---------------------------------------------------------------------------- char


def test_char_round_trip_and_specials():
    tok = CharTokenizer.fit(SAMPLE)
    assert tok.vocab_size == len(set(SAMPLE)) + 1
    assert tok.eos_id == 0
    ids = tok.encode(SAMPLE + EOS + "Hello")
    assert ids.count(tok.eos_id) == 1
    assert tok.decode(ids) == SAMPLE + EOS + "Hello"
    assert tok.decode(torch.tensor(ids)) == SAMPLE + EOS + "Hello"


def test_char_unknown_characters():
    tok = CharTokenizer.fit("abc")
    with pytest.raises(ValueError, match="text"):
        tok.encode("abz")
    with_unk = CharTokenizer.fit("abc", unk_token="?")
    assert with_unk.decode(with_unk.encode("abz")) == "ab?"
    with pytest.raises(ValueError, match="ids"):
        tok.decode([99])
    with pytest.raises(ValueError, match="text"):
        CharTokenizer.fit("")


# ---------------------------------------------------------------------------- word


def test_word_pattern_covers_every_character():
    text = default_corpus()[:50_000] + SAMPLE + "ünïcödé 日本語 x_y"
    assert "".join(re.findall(WORD_PATTERN, text)) == text


def test_word_round_trip_vocab_limit_and_unknowns():
    tok = WordTokenizer.fit(SAMPLE * 3)
    assert tok.decode(tok.encode(SAMPLE)) == SAMPLE
    assert tok.encode("Hello")[0] == tok.token_id("Hello")
    assert tok.decode(tok.encode("Hello zebra")) == "Hello<unk>"
    small = WordTokenizer.fit(SAMPLE, max_vocab=5)
    assert small.vocab_size == 5 and small.specials == [EOS, "<unk>"]
    with pytest.raises(ValueError, match="max_vocab"):
        WordTokenizer.fit(SAMPLE, max_vocab=2)


def test_word_vocab_is_frequency_ranked_and_deterministic():
    tok = WordTokenizer.fit("b a b c b a")
    # pieces "b", " a", " b", " c", " b", " a": by count, ties alphabetically
    assert tok.itos[2:] == [" a", " b", " c", "b"]
    assert tok.to_dict() == WordTokenizer.fit("b a b c b a").to_dict()


@pytest.mark.parametrize("kind", ["char", "word"])
def test_save_and_load(tmp_path, kind):
    tok = get_tokenizer(kind, SAMPLE)
    tok.save(tmp_path / "tok.json")
    again = load_tokenizer(tmp_path / "tok.json")
    assert type(again) is type(tok)
    assert again.encode(SAMPLE) == tok.encode(SAMPLE)
    with pytest.raises(ValueError, match="source"):
        load_tokenizer({"type": "nope"})
    with pytest.raises(ValueError, match="source"):
        load_tokenizer(tmp_path / "missing.json")


def test_get_tokenizer_errors():
    with pytest.raises(ValueError, match="kind"):
        get_tokenizer("bytes", "abc")
    with pytest.raises(ValueError, match="text"):
        get_tokenizer("char")


# ---------------------------------------------------------------------------- tiktoken


def test_tiktoken_only_when_cached(monkeypatch, tmp_path):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # an empty cache
    assert tiktoken_available("gpt2") is False
    with pytest.raises(ValueError, match="name"):
        TiktokenTokenizer("gpt2")
    assert tiktoken_available("no-such-encoding") is False


@pytest.mark.skipif(not tiktoken_available("gpt2"), reason="GPT-2 BPE files not cached")
def test_tiktoken_gpt2_round_trip():
    tok = TiktokenTokenizer("gpt2")
    assert tok.vocab_size == 50257 and tok.eos_id == 50256
    assert tok.decode(tok.encode(SAMPLE + EOS)) == SAMPLE + EOS
    assert tok.encode("Hello world") == [15496, 995]


def _byte_char(b: int) -> str:
    """GPT-2's printable stand-in for byte b, written out independently for the test."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    if b in printable:
        return chr(b)
    return chr(256 + [x for x in range(256) if x not in printable].index(b))


def test_gpt2_bpe_from_a_local_vocab_json(tmp_path):
    pytest.importorskip("tiktoken")
    byte_tokens = {_byte_char(b): i for i, b in enumerate(
        [*range(33, 127), *range(161, 173), *range(174, 256),
         *[x for x in range(256) if x not in [*range(33, 127), *range(161, 173),
                                               *range(174, 256)]]])}
    sp = _byte_char(32)  # "Ġ", GPT-2's stand-in for a space
    vocab = {**byte_tokens, sp + "t": 256, "he": 257, sp + "the": 258, EOS: 259}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tok = TiktokenTokenizer.from_vocab_json(tmp_path)
    assert tok.vocab_size == 260 and tok.eos_id == 259
    assert tok.encode("a") == [64]  # 'a' is id 64 in GPT-2's byte order, as in the real vocab
    assert tok.encode(" the") == [258]
    text = "Hello, the world! ünï\n" + EOS
    assert tok.decode(tok.encode(text)) == text
    again = load_tokenizer(tok.to_dict())
    assert again.encode(text) == tok.encode(text)
    bad = dict(vocab, extra=999)
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="path"):
        TiktokenTokenizer.from_vocab_json(tmp_path / "bad.json")


# ---------------------------------------------------------------------------- corpus


def test_default_corpus_is_embedded_deterministic_and_sized():
    text = default_corpus()
    assert text.startswith("The Zen of Python, by Tim Peters")
    assert "Beautiful is better than ugly." in text
    assert 200_000 < len(text) < 1_000_000
    assert text == default_corpus.__wrapped__()  # rebuilt from scratch: same text
    assert load_text() is text
    assert len(DEFAULT_MODULES) == len(set(DEFAULT_MODULES))


def test_load_text_from_a_user_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("to be or not to be\n", encoding="utf-8")
    assert load_text(p) == "to be or not to be\n"
    with pytest.raises(ValueError, match="path"):
        load_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="path"):
        load_text(tmp_path / "empty.txt")


def test_split_and_batches():
    tokens = torch.arange(100)
    train, val = split_tokens(tokens, 0.2)
    assert torch.equal(torch.cat([train, val]), tokens) and len(val) == 20
    g = torch.Generator().manual_seed(0)
    x, y = sample_batch(train, 4, 10, g)
    assert x.shape == y.shape == (4, 10) and torch.equal(y, x + 1) and int(y.max()) < 80
    with pytest.raises(ValueError, match="block_size"):
        sample_batch(torch.arange(5), 2, 5)
    with pytest.raises(ValueError, match="val_fraction"):
        split_tokens(tokens, 1.0)
