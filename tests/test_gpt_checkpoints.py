"""``load_gpt2`` on both checkpoint layouts it reads, against a reference implementation of each.

The book's layout: a small ``GPTModel`` written here in the structure of Raschka, *Build a Large
Language Model (From Scratch)*, ch. 4 (separate W_query / W_key / W_value, LayerNorm with
scale / shift, an untied out_head), saved with ``torch.save(model.state_dict())``. Hugging Face:
a randomly initialised ``transformers.GPT2LMHeadModel`` saved with ``save_pretrained`` (the ``hf``
test extra).
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

from probgen.errors import ProbgenError
from probgen.models.arm.pretrained import load_gpt2

# ------------------------------------------------------- the book's GPTModel, written here


class _LayerNorm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.eps = 1e-5
        self.scale = nn.Parameter(torch.ones(d))
        self.shift = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = x.var(-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class _GELU(nn.Module):
    def forward(self, x):
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


class _FeedForward(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(d, 4 * d), _GELU(), nn.Linear(4 * d, d))

    def forward(self, x):
        return self.layers(x)


class _MultiHeadAttention(nn.Module):
    def __init__(self, d: int, context: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.W_query = nn.Linear(d, d, bias=qkv_bias)
        self.W_key = nn.Linear(d, d, bias=qkv_bias)
        self.W_value = nn.Linear(d, d, bias=qkv_bias)
        self.out_proj = nn.Linear(d, d)
        self.register_buffer("mask", torch.triu(torch.ones(context, context), diagonal=1))

    def forward(self, x):
        b, t, d = x.shape

        def split(y):
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = q @ k.transpose(2, 3)
        scores.masked_fill_(self.mask.bool()[:t, :t], -torch.inf)
        w = torch.softmax(scores / self.head_dim**0.5, dim=-1)
        return self.out_proj((w @ v).transpose(1, 2).contiguous().view(b, t, d))


class _TransformerBlock(nn.Module):
    def __init__(self, d: int, context: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.att = _MultiHeadAttention(d, context, heads, qkv_bias)
        self.ff = _FeedForward(d)
        self.norm1, self.norm2 = _LayerNorm(d), _LayerNorm(d)

    def forward(self, x):
        x = x + self.att(self.norm1(x))
        return x + self.ff(self.norm2(x))


class _GPTModel(nn.Module):
    def __init__(self, vocab: int, context: int, d: int, heads: int, layers: int,
                 qkv_bias: bool) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(context, d)
        self.trf_blocks = nn.Sequential(
            *[_TransformerBlock(d, context, heads, qkv_bias) for _ in range(layers)])
        self.final_norm = _LayerNorm(d)
        self.out_head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1])
        return self.out_head(self.final_norm(self.trf_blocks(self.tok_emb(idx) +
                                                             self.pos_emb(pos))))


def _book_model(qkv_bias: bool, seed: int = 0) -> _GPTModel:
    torch.manual_seed(seed)
    m = _GPTModel(vocab=41, context=12, d=32, heads=4, layers=2, qkv_bias=qkv_bias).eval()
    with torch.no_grad():  # move the norms off their (1, 0) start so they are tested too
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


IDX = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6, 5, 3], [0, 40, 7, 7, 21, 8, 1, 2, 3, 4]])


@pytest.mark.parametrize("qkv_bias", [False, True])
@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_book_layout_gives_the_reference_logits(tmp_path, qkv_bias, suffix):
    ref = _book_model(qkv_bias)
    path = tmp_path / f"gpt{suffix}"
    torch.save(ref.state_dict(), path)
    model = load_gpt2(path, n_head=4)
    assert model.config.n_layer == 2 and model.config.block_size == 12
    with torch.no_grad():
        torch.testing.assert_close(model(IDX), ref(IDX), atol=1e-5, rtol=0)
    # the book's head is untied: a model whose out_head differs from tok_emb keeps its own
    assert not torch.equal(model.lm_head.weight, model.transformer.wte.weight)
    # a folder holding the one .pth file, and the book's model + optimizer checkpoint
    torch.save({"model_state_dict": ref.state_dict(), "epoch": 3}, tmp_path / "ckpt.pth")
    path.unlink()
    again = load_gpt2(tmp_path / "ckpt.pth", n_head=4)
    with torch.no_grad():
        torch.testing.assert_close(again(IDX), ref(IDX), atol=1e-5, rtol=0)
    torch.testing.assert_close(load_gpt2(tmp_path, n_head=4)(IDX), again(IDX))


def test_book_layout_with_a_tied_head_stays_tied(tmp_path):
    ref = _book_model(True)
    ref.out_head.weight = ref.tok_emb.weight  # as when GPT-2's own weights are loaded
    torch.save(ref.state_dict(), tmp_path / "gpt2.pth")
    model = load_gpt2(tmp_path / "gpt2.pth", n_head=4)
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        torch.testing.assert_close(model(IDX), ref(IDX), atol=1e-5, rtol=0)


def test_pickled_objects_and_bad_files_are_refused_in_one_line(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"tok_emb.weight": Payload()}, f, protocol=2)
    with pytest.raises(ProbgenError, match=r"weights-only") as err:
        load_gpt2(tmp_path / "evil.pth")
    assert "\n" not in str(err.value)
    torch.save({"tok_emb.weight": "not a tensor"}, tmp_path / "str.pth")
    with pytest.raises(ProbgenError, match=r"holds a str under 'tok_emb.weight'"):
        load_gpt2(tmp_path / "str.pth")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ProbgenError, match="neither the book's GPTModel layout"):
        load_gpt2(tmp_path / "other.pt")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ProbgenError, match=r"\.pt / \.pth"):
        load_gpt2(tmp_path / "notes.txt")
    ref = _book_model(False)
    torch.save(ref.state_dict(), tmp_path / "odd.pth")
    with pytest.raises(ProbgenError, match="n_head"):  # width 32 is no multiple of 64
        load_gpt2(tmp_path / "odd.pth")


def test_hugging_face_folder_gives_the_transformers_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=41, n_positions=12, n_embd=32, n_layer=2, n_head=4,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    ref.save_pretrained(tmp_path / "hf")
    model = load_gpt2(tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(model(IDX), ref(IDX).logits, atol=1e-5, rtol=0)
