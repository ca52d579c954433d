"""Benchmark: GPT generation with and without the key/value cache, in one run.

Builds a randomly initialised GPT (default 4 layers, 256 wide, block_size 1024, the
character vocabulary of the embedded corpus; ``--vocab-size 50257`` for GPT-2's),
generates ``--new-tokens`` tokens greedily from the same prompt with ``use_cache=False``
and ``use_cache=True``, and prints both times, the speedup and whether
the two token sequences are identical. The prompt plus the new tokens fit in the window,
so no context cropping happens and the two paths must agree token for token.

Run:
    python benchmarks/kv_cache.py                 # the issue's setting, CPU, float32
    python benchmarks/kv_cache.py --vocab-size 50257  # GPT-2's vocabulary
    python benchmarks/kv_cache.py --new-tokens 64     # a quick look

With GPT-2's vocabulary the 50257 x 256 output layer, the same work in both paths, is most
of a cached step, so the speedup is smaller than with a character vocabulary.

Timings use one torch thread by default (``--threads 1``). The cached path is hundreds of
tiny operations per token; on a machine whose cores are shared (a course server, a laptop
doing other work) each multi-threaded tiny op can stall waiting for a descheduled worker
thread, which measures the scheduler rather than the algorithm. ``--threads 0`` keeps
torch's default for comparison.

Exit status 0 when the tokens are identical and the speedup reaches ``--min-speedup``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from probgen.data.text import default_corpus
from probgen.models.arm.gpt import GPT, GPTConfig
from probgen.nn.tokenizers import CharTokenizer


def _time_generate(
    model: GPT, prompt: torch.Tensor, n: int, use_cache: bool
) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    out = model.generate(prompt, n, temperature=0, use_cache=use_cache)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--vocab-size", type=int, default=None,
                    help="default: the character vocabulary of the embedded corpus "
                         "(the course's char-level GPT); 50257 is GPT-2's")
    ap.add_argument("--block-size", type=int, default=1024)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=1,
                    help="alternate the two paths this many times; report each one's best")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0: torch's default); see the module docs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-speedup", type=float, default=5.0)
    args = ap.parse_args(argv)
    if args.vocab_size is None:
        args.vocab_size = CharTokenizer.fit(default_corpus()).vocab_size
    if args.prompt_len + args.new_tokens > args.block_size:
        ap.error("--block-size must hold --prompt-len + --new-tokens (no cropping)")
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    config = GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size,
                       n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config).to(args.device).eval()
    g = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(args.vocab_size, (1, args.prompt_len), generator=g).to(args.device)
    model.generate(prompt, 8, temperature=0, use_cache=True)  # warm-up
    model.generate(prompt, 8, temperature=0, use_cache=False)

    # alternate the two paths and keep each one's best time: robust to a busy machine
    t_plain = t_cache = float("inf")
    for _ in range(args.repeats):
        t, out_plain = _time_generate(model, prompt, args.new_tokens, use_cache=False)
        t_plain = min(t_plain, t)
        t, out_cache = _time_generate(model, prompt, args.new_tokens, use_cache=True)
        t_cache = min(t_cache, t)
    identical = torch.equal(out_plain, out_cache)
    speedup = t_plain / t_cache

    print(f"model: {args.n_layer} layers, {args.n_embd} wide, {args.n_head} heads, "
          f"vocab {args.vocab_size}, {model.num_params() / 1e6:.2f}M params")
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}, float32")
    print(f"prompt {args.prompt_len} tokens, {args.new_tokens} new tokens, greedy")
    print(f"without cache: {t_plain:8.3f} s  ({args.new_tokens / t_plain:8.1f} tokens/s)")
    print(f"with cache:    {t_cache:8.3f} s  ({args.new_tokens / t_cache:8.1f} tokens/s)")
    print(f"speedup: {speedup:.1f}x")
    print(f"identical tokens: {identical}")
    ok = identical and speedup >= args.min_speedup
    print("PASS" if ok else f"FAIL (need identical tokens and >= {args.min_speedup}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
