"""Autoregressive models: the chain x1 -> x2 -> ... with one causal network (PixelCNN, MADE,
causal convolutions), and GPT (training, pretrained GPT-2 weights, instruction tuning)."""

from probgen.models.arm.arm import ARM, ARMDistribution, build_net, chain_graph, check_levels
from probgen.models.arm.gpt import GPT, IGNORE_INDEX, GPTConfig
from probgen.models.arm.gpt_train import GPTRun, GPTTrainConfig, generate_text
from probgen.models.arm.instruct import (
    InstructExample,
    finetune,
    format_prompt,
    respond,
    toy_instructions,
)
from probgen.models.arm.pretrained import load_gpt2, save_gpt2
from probgen.models.arm.train import ARMConfig, ARMRun

__all__ = [
    "ARM", "ARMDistribution", "chain_graph", "build_net", "check_levels", "ARMConfig", "ARMRun",
    "GPT", "GPTConfig", "IGNORE_INDEX", "load_gpt2", "save_gpt2",
    "GPTTrainConfig", "GPTRun", "generate_text",
    "InstructExample", "format_prompt", "finetune", "respond", "toy_instructions",
]
