"""Greedy generation with the KV cache: probgen's GPT vs transformers' GPT2LMHeadModel.

For each size (default: the course's char-level GPT, 4 layers x 256 wide with the embedded
corpus's character vocabulary; the same with GPT-2's 50257-token vocabulary; GPT-2 small,
12 x 768 x 50257) it builds one randomly initialised probgen `GPT`, copies its weights into
a ``transformers.GPT2LMHeadModel`` of the same configuration (`to_gpt2_state_dict`, the
layout `load_gpt2` reads), and generates ``--new-tokens`` tokens greedily from the same
prompt with both:

- probgen: ``GPT.generate(prompt, n, temperature=0, use_cache=True)``;
- transformers: ``GPT2LMHeadModel.generate(prompt, max_new_tokens=n, do_sample=False,
  use_cache=True)`` (eager attention, as loaded).

The weight matrices and embeddings are drawn with std ``--init-std`` (default 0.1) rather
than GPT-2's 0.02, with which a random model's greedy continuation is one token repeated;
the time does not depend on the values.

The two sides alternate ``--repeats`` times in one process; the ratio printed is the median
of the per-round ratios (transformers time / probgen time, goal >= 1.2x at every size), of
wall-clock time and of thread CPU time. The
tokens of every run are compared with each other and with probgen's uncached path (one
uncached run per size).

Run: ``python benchmarks/gpt_vs_transformers.py [--sizes char gpt2vocab gpt2small]
[--new-tokens 96] [--repeats 7]`` (one torch thread by default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

from probgen.data.text import default_corpus
from probgen.models.arm.gpt import GPT, GPTConfig
from probgen.models.arm.pretrained import to_gpt2_state_dict
from probgen.nn.tokenizers import CharTokenizer

SIZES = {  # name: (n_layer, n_embd, n_head, vocab)
    "char": (4, 256, 4, None),
    "gpt2vocab": (4, 256, 4, 50257),
    "gpt2small": (12, 768, 12, 50257),
}


def _hf_model(model: GPT):
    import transformers

    c = model.config
    cfg = transformers.GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer,
        n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        activation_function="gelu_new", layer_norm_epsilon=1e-5,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    missing, unexpected = hf.transformer.load_state_dict(to_gpt2_state_dict(model), strict=False)
    if unexpected or any(not k.endswith((".attn.bias", ".attn.masked_bias")) for k in missing):
        raise RuntimeError(f"weights do not map: missing {missing}, unexpected {unexpected}")
    hf.tie_weights()
    return hf


def bench(size: str, new_tokens: int, prompt_len: int, repeats: int, seed: int,
          init_std: float | None = 0.1) -> dict:
    import transformers

    n_layer, n_embd, n_head, vocab = SIZES[size]
    if vocab is None:
        vocab = CharTokenizer.fit(default_corpus()).vocab_size
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, block_size=1024, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd)).eval()
    if init_std is not None:  # GPT-2's init (0.02) makes greedy decoding repeat one token
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() >= 2:  # weight matrices and embeddings; layer norms stay 1, 0
                    p.normal_(0.0, init_std)
    hf = _hf_model(model)
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(vocab, (1, prompt_len), generator=g)
    gen_cfg = transformers.GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=True,
        pad_token_id=0, eos_token_id=None, bos_token_id=0,
    )
    mask = torch.ones_like(prompt)

    def run_hf():
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return hf.generate(prompt, attention_mask=mask, generation_config=gen_cfg)

    def run_pg():
        return model.generate(prompt, new_tokens, temperature=0, use_cache=True)

    run_hf(), run_pg()  # warm-up
    t_hf, t_pg, ratios, cpu_ratios = [], [], [], []
    outs_hf, outs_pg = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        outs_hf.append(run_hf())
        t1, c1 = time.perf_counter(), time.thread_time()
        outs_pg.append(run_pg())
        t2, c2 = time.perf_counter(), time.thread_time()
        t_hf.append(t1 - t0)
        t_pg.append(t2 - t1)
        ratios.append(t_hf[-1] / t_pg[-1])
        cpu_ratios.append((c1 - c0) / (c2 - c1))
    plain = model.generate(prompt, new_tokens, temperature=0, use_cache=False)
    same = all(torch.equal(o, plain) for o in outs_pg + outs_hf)
    return {
        "size": f"{size} ({n_layer} x {n_embd}, vocab {vocab})",
        "hf_s": statistics.median(t_hf),
        "pg_s": statistics.median(t_pg),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "cpu_ratio": statistics.median(cpu_ratios),
        "identical": same,
        "distinct": len(set(plain[0, prompt_len:].tolist())),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init-std", type=float, default=0.1,
                    help="std of the random weights (GPT-2's 0.02 makes greedy decoding "
                         "repeat one token, a weak check of identical tokens)")
    ap.add_argument("--min-ratio", type=float, default=1.2)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    print(f"greedy generation with cache, {args.prompt_len}-token prompt, {args.new_tokens} new "
          f"tokens, float32, {torch.get_num_threads()} torch thread(s); transformers "
          f"{transformers.__version__}, torch {torch.__version__}")
    print(f"{'size':34s} {'transformers':>12s} {'probgen':>9s} {'ratio':>7s} {'CPU':>6s}  "
          "identical")
    ok = True  # the exit status needs identical tokens and the wall-clock goal
    for size in args.sizes:
        r = bench(size, args.new_tokens, args.prompt_len, args.repeats, args.seed,
                  args.init_std)
        print(f"{r['size']:34s} {r['hf_s']:10.3f} s {r['pg_s']:7.3f} s {r['ratio']:6.2f}x "
              f"{r['cpu_ratio']:5.2f}x  "
              f"{r['identical']} ({r['distinct']} distinct new tokens; per round: "
              + " ".join(f"{x:.2f}" for x in r["ratios"]) + ")", flush=True)
        ok = ok and r["identical"] and r["ratio"] >= args.min_ratio
    print(f"ratio: median over {args.repeats} interleaved rounds of transformers' wall time / "
          f"probgen's (CPU: of thread CPU time, which descheduling by other processes does not "
          f"inflate); goal >= {args.min_ratio}x with identical tokens; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
