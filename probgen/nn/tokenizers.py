"""Tokenizers: text <-> integer ids for language models.

Three kinds, one interface ([`Tokenizer`][probgen.nn.tokenizers.Tokenizer]: ``encode``, ``decode``,
``vocab_size``, ``token_id``, ``save``):

- [`CharTokenizer`][probgen.nn.tokenizers.CharTokenizer]: one id per character seen in the training
  text.
- [`WordTokenizer`][probgen.nn.tokenizers.WordTokenizer]: a regex splits text into words, numbers,
  punctuation runs and whitespace (GPT-2's pre-tokenisation idea, Radford et al. 2019, section 2.2);
  the most frequent pieces form the vocabulary, the rest map to ``<unk>``. Decoding concatenates
  pieces, so text made only of known pieces round-trips exactly.
- [`TiktokenTokenizer`][probgen.nn.tokenizers.TiktokenTokenizer]: GPT-2's byte-level BPE through the
  optional ``tiktoken`` package. tiktoken downloads its BPE files on first use; probgen refuses to
  trigger that download unless asked (``allow_download=True``), see
  [`tiktoken_available`][probgen.nn.tokenizers.tiktoken_available].

Special tokens (``<|endoftext|>`` by default) are matched in the text before splitting and
get the first ids.

Examples:
    >>> from probgen.nn.tokenizers import CharTokenizer
    >>> tok = CharTokenizer.fit("hello world")
    >>> ids = tok.encode("hello<|endoftext|>")
    >>> ids
    [4, 3, 5, 5, 6, 0]
    >>> tok.decode(ids)
    'hello<|endoftext|>'
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "EOS",
    "WORD_PATTERN",
    "Tokenizer",
    "CharTokenizer",
    "WordTokenizer",
    "TiktokenTokenizer",
    "GPT2_PATTERN",
    "tiktoken_available",
    "get_tokenizer",
    "load_tokenizer",
]

#: The end-of-text marker GPT-2 uses; every built-in tokenizer knows it by default.
EOS = "<|endoftext|>"

#: Word-level pre-tokenisation: contractions, words, numbers, punctuation runs (each with an
#: optional leading space) and whitespace. Every character of a text falls in some piece.
WORD_PATTERN = r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"


class Tokenizer(ABC):
    """The interface every tokenizer offers."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids (the embedding table size a model needs)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ids of ``text``; special tokens written in the text become their ids."""

    @abstractmethod
    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ``ids`` (a list or a 1-D tensor)."""

    @abstractmethod
    def token_id(self, token: str) -> int:
        """Id of a single (usually special) token, e.g. ``token_id(EOS)``."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description that
        [`load_tokenizer`][probgen.nn.tokenizers.load_tokenizer] reads back."""

    @property
    def eos_id(self) -> int:
        """Id of `EOS`."""
        return self.token_id(EOS)

    def save(self, path: str | Path) -> None:
        """Write [`to_dict`][probgen.nn.tokenizers.Tokenizer.to_dict] as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")


def _as_id_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"ids: expected a 1-D tensor, got shape {tuple(ids.shape)}")
        return ids.tolist()
    return [int(i) for i in ids]


class _VocabTokenizer(Tokenizer):
    """A tokenizer with an explicit piece list: specials first, then ordinary pieces."""

    kind = ""

    def __init__(
        self,
        pieces: Sequence[str],
        specials: Sequence[str] = (EOS,),
        unk_token: str | None = None,
    ) -> None:
        specials = list(specials)
        if unk_token is not None and unk_token not in specials:
            specials.append(unk_token)
        if len(set(specials)) != len(specials):
            raise ValueError(f"specials: duplicates in {specials}")
        pieces = [p for p in pieces if p not in specials]
        if len(set(pieces)) != len(pieces):
            raise ValueError("pieces: duplicates in the vocabulary")
        if any(p == "" for p in specials + pieces):
            raise ValueError("pieces: the empty string cannot be a token")
        self.specials = specials
        self.unk_token = unk_token
        self.itos: list[str] = specials + pieces
        self.stoi: dict[str, int] = {s: i for i, s in enumerate(self.itos)}
        # longest first, so that one special that is a prefix of another cannot shadow it
        alternation = "|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True))
        self._special_re = re.compile(f"({alternation})") if specials else None

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @abstractmethod
    def _split(self, text: str) -> list[str]:
        """Ordinary (non-special) text -> pieces."""

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        chunks = self._special_re.split(text) if self._special_re else [text]
        ids: list[int] = []
        for j, chunk in enumerate(chunks):
            if j % 2 == 1:  # re.split puts the captured specials at odd positions
                ids.append(self.stoi[chunk])
                continue
            for piece in self._split(chunk):
                i = self.stoi.get(piece)
                if i is None:
                    if self.unk_token is None:
                        raise ValueError(f"text: {piece!r} is not in the vocabulary")
                    i = self.stoi[self.unk_token]
                ids.append(i)
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        out = []
        for i in _as_id_list(ids):
            if not 0 <= i < len(self.itos):
                raise ValueError(f"ids: {i} is outside the vocabulary [0, {len(self.itos)})")
            out.append(self.itos[i])
        return "".join(out)

    def token_id(self, token: str) -> int:
        if token not in self.stoi:
            raise ValueError(f"token: {token!r} is not in the vocabulary")
        return self.stoi[token]

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "specials": self.specials,
            "unk_token": self.unk_token,
            "pieces": self.itos[len(self.specials):],
        }


class CharTokenizer(_VocabTokenizer):
    """One id per character. Build it with [`fit`][probgen.nn.tokenizers.CharTokenizer.fit] on the
    training text.

    Examples:
        >>> from probgen.nn.tokenizers import CharTokenizer
        >>> tok = CharTokenizer.fit("abba")
        >>> tok.vocab_size, tok.encode("ab")
        (3, [1, 2])
    """

    kind = "char"

    @classmethod
    def fit(
        cls, text: str, specials: Sequence[str] = (EOS,), unk_token: str | None = None
    ) -> CharTokenizer:
        """Vocabulary = the sorted distinct characters of ``text`` (plus the specials)."""
        if not isinstance(text, str) or not text:
            raise ValueError("text: expected a non-empty str")
        return cls(sorted(set(text)), specials, unk_token)

    def _split(self, text: str) -> list[str]:
        return list(text)


class WordTokenizer(_VocabTokenizer):
    """Word-level tokens from the regex `WORD_PATTERN`; unknown pieces become ``<unk>``.

    Examples:
        >>> from probgen.nn.tokenizers import WordTokenizer
        >>> tok = WordTokenizer.fit("the cat and the hat")
        >>> tok.decode(tok.encode("the hat and the cat"))
        'the hat and the cat'
        >>> tok.decode(tok.encode("the dog"))
        'the<unk>'
    """

    kind = "word"

    def __init__(
        self,
        pieces: Sequence[str],
        specials: Sequence[str] = (EOS,),
        unk_token: str | None = "<unk>",
        pattern: str = WORD_PATTERN,
    ) -> None:
        super().__init__(pieces, specials, unk_token)
        self.pattern = pattern
        self._word_re = re.compile(pattern)

    @classmethod
    def fit(
        cls,
        text: str,
        max_vocab: int | None = None,
        min_freq: int = 1,
        specials: Sequence[str] = (EOS,),
        unk_token: str | None = "<unk>",
        pattern: str = WORD_PATTERN,
    ) -> WordTokenizer:
        """Keep the pieces seen at least ``min_freq`` times, the ``max_vocab`` most frequent.

        ``max_vocab`` counts every id, specials included. Ties are broken alphabetically,
        so the vocabulary is a deterministic function of the text.
        """
        if not isinstance(text, str) or not text:
            raise ValueError("text: expected a non-empty str")
        if min_freq < 1:
            raise ValueError(f"min_freq: must be >= 1, got {min_freq}")
        n_special = len(set(specials) | ({unk_token} if unk_token else set()))
        if max_vocab is not None and max_vocab <= n_special:
            raise ValueError(f"max_vocab: must exceed the {n_special} special tokens")
        counts = Counter(re.findall(pattern, text))
        ranked = sorted((p for p, c in counts.items() if c >= min_freq),
                        key=lambda p: (-counts[p], p))
        if max_vocab is not None:
            ranked = ranked[: max_vocab - n_special]
        return cls(ranked, specials, unk_token, pattern)

    def _split(self, text: str) -> list[str]:
        return self._word_re.findall(text)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "pattern": self.pattern}


#: GPT-2's pre-tokenisation regex (needs the \\p{..} classes of tiktoken's regex engine).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _gpt2_byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used in its vocab.json.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (control characters,
    space, ...) are shifted to the characters 256, 257, ... in byte order.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


# tiktoken's own files for the encodings probgen knows how to check for offline use.
_TIKTOKEN_URLS = {
    "gpt2": (
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
        "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    ),
}


def _tiktoken_cache_dir() -> str:
    # the same lookup order as tiktoken.load.read_file_cached
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def tiktoken_available(name: str = "gpt2") -> bool:
    """True when ``tiktoken`` is installed and encoding ``name`` is cached (no download needed).

    Examples:
        >>> from probgen.nn.tokenizers import tiktoken_available
        >>> isinstance(tiktoken_available("gpt2"), bool)
        True
    """
    if importlib.util.find_spec("tiktoken") is None:
        return False
    urls = _TIKTOKEN_URLS.get(name)
    cache = _tiktoken_cache_dir()
    if urls is None or cache == "":
        return False
    return all(
        os.path.exists(os.path.join(cache, hashlib.sha1(u.encode()).hexdigest())) for u in urls
    )


class TiktokenTokenizer(Tokenizer):
    """GPT-2 byte-level BPE (or another tiktoken encoding) through ``tiktoken``.

    Raises ``ValueError`` when tiktoken is missing, or when the encoding's files are not
    cached locally and ``allow_download`` is False (the default: probgen never downloads at
    run time unless told to). Put the files in ``$TIKTOKEN_CACHE_DIR`` to use it offline, or
    build GPT-2's tokenizer from the ``vocab.json`` of a local GPT-2 folder with
    [`from_vocab_json`][probgen.nn.tokenizers.TiktokenTokenizer.from_vocab_json].

    Examples:
        >>> from probgen.nn.tokenizers import TiktokenTokenizer, tiktoken_available
        >>> if tiktoken_available("gpt2"):
        ...     print(TiktokenTokenizer("gpt2").vocab_size)
        ... else:
        ...     print(50257)
        50257
    """

    def __init__(self, name: str = "gpt2", allow_download: bool = False) -> None:
        if importlib.util.find_spec("tiktoken") is None:
            raise ValueError("name: tiktoken is not installed (pip install 'probgen[gpt]')")
        if not allow_download and not tiktoken_available(name):
            raise ValueError(
                f"name: tiktoken encoding {name!r} is not cached locally; set "
                "TIKTOKEN_CACHE_DIR to a folder holding its files, or pass allow_download=True"
            )
        import tiktoken

        self.name = name
        self._enc = tiktoken.get_encoding(name)
        self.vocab_json: str | None = None

    @classmethod
    def from_vocab_json(cls, path: str | Path) -> TiktokenTokenizer:
        """GPT-2's BPE from a Hugging Face ``vocab.json`` (a local GPT-2 folder has one).

        ``path`` is the file or its folder. In GPT-2's vocabulary a token's id is also its
        merge rank (ids 0-255 are single bytes, each later id merges two earlier tokens),
        which is exactly what tiktoken needs; ``<|endoftext|>`` becomes the special token.
        """
        if importlib.util.find_spec("tiktoken") is None:
            raise ValueError("path: tiktoken is not installed (pip install 'probgen[gpt]')")
        import tiktoken

        p = Path(path)
        if p.is_dir():
            p = p / "vocab.json"
        if not p.is_file():
            raise ValueError(f"path: {str(path)!r} is not a vocab.json file or its folder")
        vocab: dict[str, int] = json.loads(p.read_text(encoding="utf-8"))
        to_byte = {ch: b for b, ch in _gpt2_byte_to_unicode().items()}
        specials = {tok: i for tok, i in vocab.items() if re.fullmatch(r"<\|\w+\|>", tok)}
        try:
            ranks = {bytes(to_byte[ch] for ch in tok): i
                     for tok, i in vocab.items() if tok not in specials}
        except KeyError as e:
            raise ValueError(f"path: {p} is not a GPT-2 byte-level vocabulary ({e})") from e
        if sorted(ranks.values()) != list(range(len(ranks))):
            raise ValueError(f"path: ids in {p} are not the ranks 0 .. {len(ranks) - 1}")
        self = cls.__new__(cls)
        self.name = "gpt2"
        self.vocab_json = str(p.resolve())
        self._enc = tiktoken.Encoding(name=f"gpt2:{p}", pat_str=GPT2_PATTERN,
                                      mergeable_ranks=ranks, special_tokens=specials)
        return self

    @property
    def vocab_size(self) -> int:
        return self._enc.n_vocab

    def encode(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        return self._enc.encode(text, allowed_special=set(self._enc.special_tokens_set))

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self._enc.decode(_as_id_list(ids))

    def token_id(self, token: str) -> int:
        ids = self._enc.encode(token, allowed_special=set(self._enc.special_tokens_set))
        if len(ids) != 1:
            raise ValueError(f"token: {token!r} is not a single token")
        return ids[0]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "tiktoken", "name": self.name, "vocab_json": self.vocab_json}


def get_tokenizer(kind: str, text: str | None = None, **kwargs: Any) -> Tokenizer:
    """A tokenizer by name: ``"char"`` or ``"word"`` (fitted on ``text``), or a tiktoken
    encoding name such as ``"gpt2"``. Extra keyword arguments go to the ``fit`` method or
    to [`TiktokenTokenizer`][probgen.nn.tokenizers.TiktokenTokenizer].

    Examples:
        >>> from probgen.nn.tokenizers import get_tokenizer
        >>> get_tokenizer("char", "abc").vocab_size
        4
    """
    if kind in ("char", "word"):
        if text is None:
            raise ValueError(f"text: a {kind!r} tokenizer is fitted on text; got None")
        cls = CharTokenizer if kind == "char" else WordTokenizer
        return cls.fit(text, **kwargs)
    if kind in _TIKTOKEN_URLS or kind.endswith("_base"):
        return TiktokenTokenizer(kind, **kwargs)
    raise ValueError(f"kind: unknown tokenizer {kind!r}; use 'char', 'word' or 'gpt2'")


def load_tokenizer(source: str | Path | dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from [`Tokenizer.save`][probgen.nn.tokenizers.Tokenizer.save]'s JSON file
    (or its dict).

    Examples:
        >>> from probgen.nn.tokenizers import CharTokenizer, load_tokenizer
        >>> tok = CharTokenizer.fit("xyz")
        >>> load_tokenizer(tok.to_dict()).encode("zyx") == tok.encode("zyx")
        True
    """
    if isinstance(source, dict):
        d = source
    else:
        p = Path(source)
        if not p.is_file():
            raise ValueError(f"source: {str(source)!r} is not a file")
        d = json.loads(p.read_text(encoding="utf-8"))
    kind = d.get("type")
    if kind == "char":
        return CharTokenizer(d["pieces"], d["specials"], d["unk_token"])
    if kind == "word":
        return WordTokenizer(d["pieces"], d["specials"], d["unk_token"], d["pattern"])
    if kind == "tiktoken":
        if d.get("vocab_json"):
            return TiktokenTokenizer.from_vocab_json(d["vocab_json"])
        return TiktokenTokenizer(d["name"])
    raise ValueError(f"source: unknown tokenizer type {kind!r}")
