"""Instruction fine-tuning: the Alpaca template, response-only loss masks, padding, EOS."""

from __future__ import annotations

import string

import pytest
import torch
import torch.nn.functional as F

from probgen.models.arm.gpt import GPT, IGNORE_INDEX, GPTConfig
from probgen.models.arm.instruct import (
    ALPACA_PROMPT,
    InstructExample,
    collate,
    encode_example,
    finetune,
    format_prompt,
    respond,
    toy_instructions,
)
from probgen.nn.tokenizers import CharTokenizer


@pytest.fixture(scope="module")
def tok() -> CharTokenizer:
    examples = toy_instructions(50)
    text = "".join(format_prompt(e) + e.output for e in examples) + ALPACA_PROMPT
    text += string.ascii_letters + string.digits
    return CharTokenizer.fit(text)


def test_template_with_and_without_input():
    assert format_prompt(InstructExample("Say hi.")) == ALPACA_PROMPT.format(instruction="Say hi.")
    p = format_prompt(InstructExample("Reverse the word.", "cat", "tac"))
    assert "### Input:\ncat\n\n### Response:\n" in p and p.endswith("### Response:\n")
    with pytest.raises(ValueError, match="example"):
        format_prompt(InstructExample(""))


def test_labels_mask_the_prompt_and_keep_eos(tok):
    ex = InstructExample("Reverse the word.", "frog", "gorf")
    ids, labels = encode_example(tok, ex)
    n_prompt = len(tok.encode(format_prompt(ex)))
    assert len(ids) == len(labels) == n_prompt + 5
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert ids[-1] == tok.eos_id and tok.decode(ids[n_prompt:-1]) == "gorf"
    short_ids, short_labels = encode_example(tok, ex, block_size=n_prompt + 1)
    assert short_ids == ids[: n_prompt + 2] and short_labels == labels[: n_prompt + 2]
    # a context of exactly the prompt still reads it whole and predicts the first response token
    assert encode_example(tok, ex, block_size=n_prompt)[0] == ids[: n_prompt + 1]
    with pytest.raises(ValueError, match=rf"block_size: the prompt alone has {n_prompt} tokens, "
                                         rf"more than the model's block_size={n_prompt - 1}"):
        encode_example(tok, ex, block_size=n_prompt - 1)


def test_collate_pads_inputs_and_ignores_padded_targets(tok):
    a = encode_example(tok, InstructExample("Reverse the word.", "cat", "tac"))
    b = encode_example(tok, InstructExample("Reverse the word.", "moon", "noom"))
    eos = tok.eos_id
    x, y = collate([a, b], pad_id=eos)  # pad with EOS, as GPT-2 fine-tuning usually does
    assert x.shape == y.shape == (2, len(b[0]) - 1)
    assert x[0, : len(a[0]) - 1].tolist() == a[0][:-1]
    assert (x[0, len(a[0]) - 1:] == eos).all()
    assert y[0, len(a[0]) - 2].item() == eos  # the real EOS stays a target ...
    assert (y[0, len(a[0]) - 1:] == IGNORE_INDEX).all()  # ... the padding does not
    assert y[1].tolist() == b[1][1:]
    with pytest.raises(ValueError, match="encoded"):
        collate([], pad_id=0)


def test_loss_counts_only_response_tokens(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(tok.vocab_size, 256, 1, 2, 16)).eval()
    exs = [InstructExample("Reverse the word.", "cat", "tac"),
           InstructExample("Write the word in capital letters.", "sun", "SUN")]
    x, y = collate([encode_example(tok, e) for e in exs], tok.eos_id)
    logits = model(x)
    keep = y != IGNORE_INDEX
    assert keep.sum().item() == 8  # 3 letters + EOS, twice
    want = F.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(model.loss(x, y), want)


def test_finetune_lowers_the_masked_loss_and_respond_stops_at_eos(tok):
    torch.manual_seed(0)
    model = GPT(GPTConfig(tok.vocab_size, 256, 1, 2, 32))
    losses = finetune(model, tok, toy_instructions(64), steps=40, batch_size=8, lr=3e-3,
                      progress=False)
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert not model.training
    answer = respond(model, tok, "Reverse the word.", "cat", max_new_tokens=12)
    prompt = tok.encode(format_prompt(InstructExample("Reverse the word.", "cat")))
    out = model.generate(torch.tensor([prompt]), 12, temperature=0,
                         stop_tokens=[tok.eos_id])[0, len(prompt):].tolist()
    want = out[: out.index(tok.eos_id)] if tok.eos_id in out else out
    assert answer == tok.decode(want) and "<|endoftext|>" not in answer


def test_toy_instructions_are_deterministic_and_correct():
    exs = toy_instructions(40, seed=1)
    assert exs == toy_instructions(40, seed=1)
    for e in exs:
        if e.instruction == "Reverse the word.":
            assert e.output == e.input[::-1]
        elif e.instruction.startswith("How many"):
            assert e.output == str(len(e.input))
    with pytest.raises(ValueError, match="n"):
        toy_instructions(0)
