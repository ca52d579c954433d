"""Layer 0: neural building blocks (transformer, tokenizers, flow layers, MADE, PixelCNN,
time embeddings, U-Net, weight averaging)."""

from probgen.nn.causal_conv import CausalConv1d, CausalConvNet
from probgen.nn.ema import EMA
from probgen.nn.flow_layers import (
    ActNorm,
    Invert,
    InvertibleConv1x1,
    Permutation,
    clear_transform_caches,
)
from probgen.nn.flow_multiscale import ConvCouplingNet, FactorOut, Squeeze, Unsqueeze
from probgen.nn.made import MADE, MaskedLinear
from probgen.nn.pixelcnn import GatedLayer, GatedPixelCNN
from probgen.nn.time_embedding import TimeEmbedding, TimeMLP, sinusoidal_embedding
from probgen.nn.tokenizers import (
    EOS,
    CharTokenizer,
    TiktokenTokenizer,
    WordTokenizer,
    get_tokenizer,
    load_tokenizer,
    tiktoken_available,
)
from probgen.nn.transformer import MLP, Block, CausalSelfAttention, KVCache
from probgen.nn.unet import ResBlock, SelfAttention2d, UNet

__all__ = [
    "Block", "KVCache", "CausalSelfAttention", "MLP",
    "CharTokenizer", "WordTokenizer", "TiktokenTokenizer", "get_tokenizer", "load_tokenizer",
    "tiktoken_available", "EOS",
    "ActNorm", "InvertibleConv1x1", "Permutation", "Invert", "clear_transform_caches",
    "Squeeze", "Unsqueeze", "FactorOut", "ConvCouplingNet",
    "MADE", "MaskedLinear", "CausalConv1d", "CausalConvNet", "GatedPixelCNN", "GatedLayer",
    "sinusoidal_embedding", "TimeEmbedding", "TimeMLP",
    "UNet", "ResBlock", "SelfAttention2d", "EMA",
]
