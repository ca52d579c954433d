"""GPT: shapes, the KV cache against the uncached path, log_prob, sampling, GPT-2 weights."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from probgen.data.splits import text_splits
from probgen.infer import runs
from probgen.models.arm.gpt import (
    GPT,
    IGNORE_INDEX,
    GPTConfig,
    apply_repetition_penalty,
    filter_top_k,
    filter_top_p,
)
from probgen.models.arm.gpt_train import generate_text
from probgen.models.arm.pretrained import load_gpt2, save_gpt2, to_gpt2_state_dict
from probgen.models.family import load_run, train
from probgen.nn.transformer import KVCache

ROOT = Path(__file__).resolve().parents[1]


def _model(vocab=23, block=32, n_layer=2, n_head=2, n_embd=16, seed=0, scale=0.3) -> GPT:
    """A random GPT with larger-than-default weights, so its distributions are peaked."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab, block, n_layer, n_head, n_embd))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)
    return model.eval()


def _prompt(B=1, T=4, vocab=23, seed=1) -> torch.Tensor:
    return torch.randint(vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- model basics


def test_shapes_and_weight_tying():
    model = _model()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model(_prompt(B=3, T=7)).shape == (3, 7, 23)
    n_all = sum(p.numel() for p in model.parameters())
    assert model.num_params(non_embedding=False) == n_all


@pytest.mark.parametrize(
    "kwargs, name",
    [(dict(vocab_size=0, block_size=8), "vocab_size"),
     (dict(vocab_size=5, block_size=8, n_embd=10, n_head=3), "n_head"),
     (dict(vocab_size=5, block_size=8, dropout=1.0), "dropout")],
)
def test_config_rejects_bad_sizes(kwargs, name):
    with pytest.raises(ValueError, match=name):
        GPTConfig(**kwargs)


def test_bad_inputs_raise_value_error():
    model = _model(block=8)
    with pytest.raises(ValueError, match="idx"):
        model(torch.zeros(1, 9, dtype=torch.long))  # longer than block_size
    with pytest.raises(ValueError, match="idx"):
        model(torch.zeros(9, dtype=torch.long))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(_prompt(), 2, temperature=-1)
    with pytest.raises(ValueError, match="idx"):
        model.generate(torch.full((1, 2), 99), 2)
    with pytest.raises(ValueError, match="stop_tokens"):
        model.generate(_prompt(), 2, stop_tokens=[99])


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    model = GPT(GPTConfig(11, 8, 1, 1, 8, dropout=0.5))
    x = _prompt(T=6, vocab=11)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


# ---------------------------------------------------------------------------- likelihood


def test_log_prob_is_a_normalised_chain_rule():
    """Summing exp(log_prob) over every continuation of x1 gives 1 (exact enumeration)."""
    model = _model(vocab=4, block=8)
    seqs = torch.tensor([[2, *rest] for rest in itertools.product(range(4), repeat=3)])
    total = model.log_prob(seqs).double().exp().sum()
    assert abs(total.item() - 1.0) < 1e-5


def test_log_prob_equals_stepwise_conditionals_and_loss():
    model = _model()
    x = _prompt(B=2, T=6)
    manual = torch.zeros(2)
    for t in range(1, 6):
        logp = F.log_softmax(model(x[:, :t])[:, -1], dim=-1)  # log p(x_t | x_<t)
        manual += logp.gather(1, x[:, t:t + 1]).squeeze(1)
    torch.testing.assert_close(model.log_prob(x), manual, atol=1e-5, rtol=1e-5)
    nll = model.loss(x[:, :-1], x[:, 1:])
    torch.testing.assert_close(nll, -manual.sum() / 10, atol=1e-5, rtol=1e-5)


def test_loss_ignores_masked_targets():
    model = _model()
    x = _prompt(T=6)
    y = x.roll(-1, 1)
    masked = y.clone()
    masked[:, :3] = IGNORE_INDEX
    logits = model(x)
    want = F.cross_entropy(logits[0, 3:], y[0, 3:])
    torch.testing.assert_close(model.loss(x, masked), want)


# ---------------------------------------------------------------------------- KV cache


def test_cached_forward_matches_full_forward():
    model = _model()
    x = _prompt(B=2, T=12)
    full = model(x)
    cache = model.new_cache(2)
    parts = [model(x[:, :5], cache)]  # prefill (causal mask)
    parts += [model(x[:, t:t + 1], cache) for t in range(5, 8)]  # one token at a time
    parts.append(model(x[:, 8:], cache))  # a chunk after a cached prefix (explicit mask)
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_cache_refuses_overflow():
    cache = KVCache(n_layer=1, batch_size=1, n_head=1, head_dim=2, max_len=3)
    cache.update(0, torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))
    cache.advance(3)
    with pytest.raises(ValueError):
        cache.update(0, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))


@pytest.mark.parametrize("B", [1, 3])
def test_greedy_cached_equals_uncached(B):
    model = _model(block=64)
    x = _prompt(B=B, T=5)
    a = model.generate(x, 40, temperature=0, use_cache=True)
    b = model.generate(x, 40, temperature=0, use_cache=False)
    assert a.shape == (B, 45)
    assert torch.equal(a, b)
    assert torch.equal(a[:, :5], x)


@pytest.mark.parametrize(
    "kwargs",
    [dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8),
     dict(temperature=1.0, top_k=10, top_p=0.9, repetition_penalty=1.5)],
)
def test_seeded_sampling_cached_equals_uncached(kwargs):
    model = _model(block=64)
    x = _prompt(B=2, T=3)
    outs = [model.generate(x, 30, use_cache=c, generator=torch.Generator().manual_seed(7),
                           **kwargs) for c in (True, False)]
    assert torch.equal(outs[0], outs[1])


def test_window_overflow_still_matches_uncached():
    model = _model(block=10)
    x = _prompt(T=4)
    a = model.generate(x, 25, temperature=0, use_cache=True)
    b = model.generate(x, 25, temperature=0, use_cache=False)
    assert a.shape == (1, 29) and torch.equal(a, b)
    g = [torch.Generator().manual_seed(3) for _ in range(2)]
    a = model.generate(x, 25, temperature=1.0, use_cache=True, generator=g[0])
    b = model.generate(x, 25, temperature=1.0, use_cache=False, generator=g[1])
    assert torch.equal(a, b)


def test_generate_restores_training_mode():
    model = _model().train()
    model.generate(_prompt(), 2)
    assert model.training


# ---------------------------------------------------------------------------- sampling rules


def test_top_k_1_and_tiny_top_p_are_greedy():
    model = _model()
    x = _prompt(B=2)
    greedy = model.generate(x, 15, temperature=0)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(model.generate(x, 15, top_k=1, generator=g), greedy)
    assert torch.equal(model.generate(x, 15, top_p=1e-6, generator=g), greedy)


def test_filters():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert filter_top_k(logits, 2).isinf().tolist() == [[True, False, False, True]]
    assert torch.equal(filter_top_k(logits, 10), logits)
    p = torch.tensor([[0.1, 0.6, 0.2, 0.1]])
    assert filter_top_p(p.log(), 0.75).isinf().tolist() == [[True, False, False, True]]
    assert filter_top_p(p.log(), 0.6).isinf().tolist() == [[True, False, True, True]]
    with pytest.raises(ValueError, match="p"):
        filter_top_p(logits, 0.0)


def test_repetition_penalty():
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    model = _model(vocab=23)
    seq = _prompt(T=2)
    out = model.generate(seq, 20, temperature=0, repetition_penalty=1.8)
    for _ in range(20):  # the same rule, written as a plain loop
        logits = apply_repetition_penalty(model(seq)[:, -1], seq, 1.8)
        seq = torch.cat([seq, logits.argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, seq)
    plain = model.generate(_prompt(T=2), 20, temperature=0)
    assert len(set(out[0].tolist())) > len(set(plain[0].tolist()))


def test_stop_tokens_end_rows_and_pad():
    model = _model(block=64)
    x = _prompt(B=2, T=3)
    free = model.generate(x, 12, temperature=0)
    stop = int(free[0, 6])  # row 0 emits this at its 4th new token
    out = model.generate(x, 12, temperature=0, stop_tokens=[stop])
    first = (free[0, 3:] == stop).nonzero()[0].item() + 3
    assert torch.equal(out[0, : first + 1], free[0, : first + 1])
    assert (out[0, first:] == stop).all()  # finished rows are padded with their stop token
    row1_stops = (free[1, 3:] == stop).nonzero()
    if len(row1_stops) == 0:  # row 1 never stops: runs the full length
        assert out.shape[1] == 15 and torch.equal(out[1], free[1])
    single = model.generate(x[:1], 12, temperature=0, stop_tokens=[stop])
    assert single.shape[1] == first + 1 and int(single[0, -1]) == stop


# ---------------------------------------------------------------------------- GPT-2 weights


def _hf_reference_logits(sd: dict, cfg: dict, idx: torch.Tensor) -> torch.Tensor:
    """GPT-2 forward written directly on the Hugging Face tensors (Conv1D: x @ W + b)."""
    nh, C = cfg["n_head"], cfg["n_embd"]
    B, T = idx.shape

    def ln(x, p):
        return F.layer_norm(x, (C,), sd[p + ".weight"], sd[p + ".bias"], 1e-5)

    def conv1d(x, p):
        return x @ sd[p + ".weight"] + sd[p + ".bias"]

    def gelu(x):  # GPT-2's tanh approximation, written out
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    x = sd["wte.weight"][idx] + sd["wpe.weight"][:T]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(cfg["n_layer"]):
        h = f"h.{i}"
        q, k, v = conv1d(ln(x, h + ".ln_1"), h + ".attn.c_attn").split(C, dim=-1)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(C // nh)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + conv1d(y, h + ".attn.c_proj")
        x = x + conv1d(gelu(conv1d(ln(x, h + ".ln_2"), h + ".mlp.c_fc")), h + ".mlp.c_proj")
    return ln(x, "ln_f") @ sd["wte.weight"].T


def _fake_hf_state(cfg: dict, prefix: str = "") -> dict:
    g = torch.Generator().manual_seed(0)
    C, V, P = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"]

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.2

    sd = {"wte.weight": r(V, C), "wpe.weight": r(P, C), "ln_f.weight": 1 + r(C),
          "ln_f.bias": r(C)}
    for i in range(cfg["n_layer"]):
        h = f"h.{i}"
        sd.update({
            f"{h}.ln_1.weight": 1 + r(C), f"{h}.ln_1.bias": r(C),
            f"{h}.attn.c_attn.weight": r(C, 3 * C), f"{h}.attn.c_attn.bias": r(3 * C),
            f"{h}.attn.c_proj.weight": r(C, C), f"{h}.attn.c_proj.bias": r(C),
            f"{h}.ln_2.weight": 1 + r(C), f"{h}.ln_2.bias": r(C),
            f"{h}.mlp.c_fc.weight": r(C, 4 * C), f"{h}.mlp.c_fc.bias": r(4 * C),
            f"{h}.mlp.c_proj.weight": r(4 * C, C), f"{h}.mlp.c_proj.bias": r(C),
            f"{h}.attn.bias": torch.tril(torch.ones(1, 1, P, P)),  # HF's mask buffer
        })
    return {prefix + k: v for k, v in sd.items()}


CFG = {"vocab_size": 37, "n_positions": 16, "n_ctx": 16, "n_layer": 2, "n_head": 2,
       "n_embd": 12, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5}


@pytest.mark.parametrize("fmt, prefix", [("safetensors", ""), ("safetensors", "transformer."),
                                         ("bin", "")])
def test_load_gpt2_matches_reference_forward(tmp_path, fmt, prefix):
    sd = _fake_hf_state(CFG, prefix)
    (tmp_path / "config.json").write_text(json.dumps(CFG))
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "model.safetensors"))
    else:
        torch.save(sd, tmp_path / "pytorch_model.bin")
    model = load_gpt2(tmp_path)
    idx = torch.tensor([[1, 5, 9, 36, 0, 2]])
    plain = {k.removeprefix("transformer."): v for k, v in sd.items()}
    torch.testing.assert_close(model(idx), _hf_reference_logits(plain, CFG, idx),
                               atol=1e-4, rtol=1e-4)


def test_gpt2_round_trip_and_bad_folders(tmp_path):
    model = _model(vocab=37, block=16, n_embd=12)
    save_gpt2(model, tmp_path / "m")
    again = load_gpt2(tmp_path / "m")
    idx = _prompt(T=6, vocab=37)
    assert torch.equal(model(idx), again(idx))
    sd = to_gpt2_state_dict(model)
    assert sd["h.0.attn.c_attn.weight"].shape == (12, 36)  # Conv1D layout (in, out)
    torch.testing.assert_close(_hf_reference_logits(sd, CFG, idx), model(idx),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="path"):
        load_gpt2(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(CFG))
    with pytest.raises(ValueError, match="path"):
        load_gpt2(tmp_path / "empty")
    bad = dict(CFG, n_layer=3)
    (tmp_path / "m" / "config.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="path"):
        load_gpt2(tmp_path / "m")


# ---------------------------------------------------------------------------- training


def test_gpt_family_learns_and_round_trips_its_run_folder(tmp_path):
    text = "the cat sat on the mat. " * 50
    run = train("gpt", data=text_splits(text), out=tmp_path / "run", steps=60, block_size=16,
                n_layer=1, n_head=2, n_embd=32, batch_size=16, lr=3e-3, warmup=5,
                val_every=20, dropout=0.0, progress=False)
    history = runs.read_history(tmp_path / "run" / "metrics.jsonl")
    assert history[-1]["val_loss"] < 0.6 * history[0]["val_loss"]
    for name in ("config.json", "weights.safetensors", "tokenizer.json", "metrics.json",
                 "samples.txt", "metrics.jsonl"):
        assert (tmp_path / "run" / name).is_file()
    loaded = load_run(tmp_path / "run")
    a = generate_text(run, "the ", max_new_tokens=20, temperature=0)
    b = generate_text(tmp_path / "run", "the ", max_new_tokens=20, temperature=0)
    assert a == b and a.startswith("the ")
    assert loaded.model.lm_head.weight is loaded.model.transformer.wte.weight
    # far below the uniform distribution over the 11 characters (2.4 nats per token)
    assert run.metrics["test_nll"] < 1.0 and run.metrics["nll_kind"].startswith("exact")
    with pytest.raises(ValueError, match="run"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="block_size"):
        train("gpt", data=text_splits("abc" * 40), block_size=64, steps=2, progress=False)


def test_benchmark_script_smoke():
    spec = importlib.util.spec_from_file_location("kv_cache", ROOT / "benchmarks" / "kv_cache.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--vocab-size", "50",
            "--block-size", "64", "--new-tokens", "20", "--min-speedup", "0"]
    assert bench.main(args) == 0


def test_transformers_benchmark_gives_the_same_greedy_tokens(monkeypatch):
    """benchmarks/gpt_vs_transformers.py on a tiny size: GPT2LMHeadModel.generate with our
    weights continues the prompt with exactly our cached and uncached tokens."""
    pytest.importorskip("transformers")
    spec = importlib.util.spec_from_file_location(
        "gpt_vs_transformers", ROOT / "benchmarks" / "gpt_vs_transformers.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(bench.SIZES, "tiny", (2, 32, 4, 61))
    r = bench.bench("tiny", new_tokens=24, prompt_len=5, repeats=1, seed=3)
    assert r["identical"] and r["distinct"] >= 3 and r["hf_s"] > 0 and r["pg_s"] > 0
