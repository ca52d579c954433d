"""``probgen finetune`` / ``respond`` / ``generate``: a GPT base run with a long context,
instruction fine-tuning into a run folder (refuse / resume / overwrite), the real limits in the
errors."""

from __future__ import annotations

import json

import pytest
import torch

from probgen.cli import main
from probgen.infer import runs
from probgen.models.arm.finetune import encode_instructions, read_instructions
from probgen.models.arm.gpt import IGNORE_INDEX
from probgen.models.arm.instruct import InstructExample, format_prompt
from probgen.models.family import load_run

#: four instructions to memorise: the homework's "answers its training prompts", in seconds
EXAMPLES = [
    {"instruction": "Reverse the word.", "input": "frog", "output": "gorf"},
    {"instruction": "Reverse the word.", "input": "moon", "output": "noom"},
    {"instruction": "Write the word in capital letters.", "input": "rose", "output": "ROSE"},
    {"instruction": "Name a colour.", "output": "blue"},
]
BASE = ["--set", "block_size=320", "n_layer=1", "n_head=2", "n_embd=48", "dropout=0",
        "batch_size=4", "--steps", "3", "--quiet"]
FT_SETS = ["lr=3e-3", "batch_size=4", "val_fraction=0", "warmup=5", "val_every=50"]
FT = ["--set", *FT_SETS, "--quiet"]


def _files(tmp_path):
    text = " ".join(format_prompt(InstructExample(e["instruction"], e.get("input", ""),
                                                  e["output"])) + e["output"] for e in EXAMPLES)
    (tmp_path / "notes.txt").write_text(text * 4 + " the quick brown fox", encoding="utf-8")
    with open(tmp_path / "ex.jsonl", "w", encoding="utf-8") as f:
        for e in EXAMPLES:
            print(json.dumps(e), file=f)
    return tmp_path / "notes.txt", tmp_path / "ex.jsonl"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    notes, data = _files(tmp)
    assert main(["train", "gpt", "--data", str(notes), "--out", str(tmp / "base"), *BASE]) == 0
    return tmp, data


def test_every_gpt_setting_is_a_set_key(base):
    tmp, _ = base
    saved = runs.read_json(tmp / "base" / "config.json")
    run = load_run(tmp / "base")
    assert run.model.config.block_size == 320 and saved["config"]["block_size"] == 320
    c = run.model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.dropout, c.bias) == (1, 2, 48, 0.0, True)
    # config.json holds the family's settings and the engine's, nothing else (no loop leftovers)
    assert set(saved) == {"family", "data", "config", "fast", "fit"}
    assert "name" not in saved["fit"] and set(saved["config"]) >= {"tokenizer", "bias"}


def test_finetune_answers_its_training_prompts_and_respond_has_every_control(base, capsys):
    tmp, data = base
    out = tmp / "ft"
    assert main(["finetune", str(tmp / "base"), "--data", str(data), "--out", str(out),
                 "--steps", "150", *FT]) == 0
    m = runs.read_json(out / "metrics.json")
    assert m["train_exact"] == 1.0 and m["steps"] == 150
    saved = runs.read_json(out / "config.json")
    assert saved["family"] == "gpt" and saved["finetune"]["config"]["loss"] == "response"
    assert saved["finetune"]["base"] == str(tmp / "base")
    capsys.readouterr()
    for e in EXAMPLES:
        args = ["respond", str(out), "--instruction", e["instruction"]]
        if "input" in e:
            args += ["--input", e["input"]]
        assert main(args) == 0
        assert capsys.readouterr().out.strip() == e["output"]
    # sampling controls: the cache never changes the tokens; a seed makes sampling repeatable
    common = ["respond", str(out), "--instruction", "Reverse the word.", "--input", "frog",
              "--temperature", "1.5", "--top-k", "5", "--top-p", "0.9",
              "--repetition-penalty", "1.3", "--seed", "3"]
    outs = []
    for extra in ([], ["--no-cache"], []):
        assert main(common + extra) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] == outs[2]
    assert main(["generate", str(out), "--prompt", "Below", "--max-new-tokens", "20",
                 "--no-cache", "--seed", "1", "--stop", "<|endoftext|>"]) == 0
    # the folder is guarded like a training run
    assert main(["finetune", str(tmp / "base"), "--data", str(data), "--out", str(out),
                 "--steps", "2", *FT]) == 2
    assert "--resume" in capsys.readouterr().err


def test_resume_is_bit_for_bit_and_sequence_loss_is_an_option(base):
    tmp, data = base
    full, half = tmp / "full", tmp / "half"
    args = ["--data", str(data), "--set", *FT_SETS, "loss=sequence", "--quiet"]
    assert main(["finetune", str(tmp / "base"), "--out", str(full), "--steps", "6", *args]) == 0
    assert main(["finetune", str(tmp / "base"), "--out", str(half), "--steps", "3", *args]) == 0
    assert main(["finetune", str(tmp / "base"), "--out", str(half), "--resume", "--steps", "6",
                 *args]) == 0
    a = runs.load_tensors(full / "weights.safetensors")
    b = runs.load_tensors(half / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs.read_json(half / "config.json")["finetune"]["config"]["loss"] == "sequence"
    assert main(["finetune", str(tmp / "base"), "--out", str(full), "--overwrite", "--steps",
                 "2", "--data", str(data), *FT]) == 0


def test_response_and_sequence_targets(base):
    tmp, data = base
    run = load_run(tmp / "base")
    ex = read_instructions(data)
    x, y = encode_instructions(run, ex, "response")
    _, ys = encode_instructions(run, ex, "sequence")
    e = ex[0]
    prompt = run.tokenizer.encode(format_prompt(e))
    ids = prompt + run.tokenizer.encode(e.output) + [run.tokenizer.eos_id]
    n = len(ids) - 1
    assert x[0, :n].tolist() == ids[:-1]
    assert y[0, :n].tolist() == [IGNORE_INDEX] * (len(prompt) - 1) + ids[len(prompt):]
    assert ys[0, :n].tolist() == ids[1:]
    assert bool((y[0, n:] == IGNORE_INDEX).all()) and bool((ys[0, n:] == IGNORE_INDEX).all())


def test_errors_name_the_block_size_and_the_real_length(base, tmp_path, capsys):
    tmp, _ = base
    run = load_run(tmp / "base")
    long = {"instruction": "Reverse the word. " * 12, "input": "frog", "output": "gorf"}
    ex = InstructExample(long["instruction"], long["input"], long["output"])
    need = len(run.tokenizer.encode(format_prompt(ex))) + 4  # prompt + response, no EOS
    (tmp_path / "long.jsonl").write_text(json.dumps(long) + "\n")
    assert main(["finetune", str(tmp / "base"), "--data", str(tmp_path / "long.jsonl"),
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"needs a context of {need} tokens" in err and "block_size=320" in err
    assert f"--set block_size={need}" in err and err.count("\n") == 1
    assert main(["respond", str(tmp / "base"), "--instruction", "Reverse the word. " * 20]) == 2
    assert "block_size=320" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"instruction": "x", "outptu": "y"}\n')
    assert main(["finetune", str(tmp / "base"), "--data", str(tmp_path / "bad.jsonl"),
                 "--out", str(tmp_path / "y"), "--quiet"]) == 2
    assert "bad.jsonl:1 has unknown keys ['outptu']" in capsys.readouterr().err
    (tmp_path / "chars.jsonl").write_text('{"instruction": "Say \\u00e9", "output": "y"}\n')
    assert main(["finetune", str(tmp / "base"), "--data", str(tmp_path / "chars.jsonl"),
                 "--out", str(tmp_path / "z"), "--quiet"]) == 2
    assert "example 1" in capsys.readouterr().err


def test_dropout_is_off_unless_the_base_runs_is_asked_for(base, tmp_path):
    tmp, data = base
    notes = tmp / "notes.txt"
    drop = ["--set", "block_size=320", "n_layer=1", "n_head=2", "n_embd=16", "dropout=0.2",
            "batch_size=4", "--steps", "1", "--quiet"]
    assert main(["train", "gpt", "--data", str(notes), "--out", str(tmp_path / "b"), *drop]) == 0
    for extra, p in (([], 0.0), (["dropout=none"], 0.2)):
        out = tmp_path / f"ft{p}"
        assert main(["finetune", str(tmp_path / "b"), "--data", str(data), "--out", str(out),
                     "--steps", "1", "--set", "batch_size=4", "val_fraction=0", *extra,
                     "--quiet"]) == 0
        assert runs.read_json(out / "config.json")["config"]["dropout"] == p
        assert load_run(out).model.config.dropout == p
