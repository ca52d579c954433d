"""Autoregressive models: the chain x1 -> x2 -> ... with one causal network (PixelCNN, MADE,
causal convolutions), and GPT (training, pretrained GPT-2 weights, instruction tuning)."""

from probgen.models.arm.arm import (
    ARM,
    ARMDistribution,
    build_net,
    chain_graph,
    check_levels,
    load_arm_run,
    train_arm,
)
from probgen.models.arm.gpt import GPT, IGNORE_INDEX, GPTConfig
from probgen.models.arm.gpt_train import GPTRun, generate_text, load_gpt_run, train_gpt
from probgen.models.arm.instruct import (
    InstructExample,
    finetune,
    format_prompt,
    respond,
    toy_instructions,
)
from probgen.models.arm.pretrained import load_gpt2, save_gpt2

__all__ = [
    "ARM", "ARMDistribution", "chain_graph", "build_net", "check_levels", "train_arm",
    "load_arm_run",
    "GPT", "GPTConfig", "IGNORE_INDEX", "load_gpt2", "save_gpt2",
    "train_gpt", "load_gpt_run", "generate_text", "GPTRun",
    "InstructExample", "format_prompt", "finetune", "respond", "toy_instructions",
]
