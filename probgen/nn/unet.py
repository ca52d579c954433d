"""A small U-Net ``f(x, t[, y])`` for images: the noise / score / velocity network of diffusion
and flow-matching models (Ho et al. 2020, appendix B, after PixelCNN++ and Ronneberger et al.
2015), scaled down for 8x8 digits and 32x32 images.

Layout for ``mults = (1, 2)`` on 8x8 (``C = channels``)::

    conv 3x3 -> C                                    8x8
    [ResBlock C]   x num_res_blocks   --skip-->      8x8
    downsample (conv stride 2)                       4x4
    [ResBlock 2C]  x num_res_blocks   --skip-->      4x4
    middle: ResBlock 2C, self-attention, ResBlock 2C 4x4
    [ResBlock 2C (+ skip)] x num_res_blocks          4x4
    upsample (nearest + conv)                        8x8
    [ResBlock C (+ skip)]  x num_res_blocks          8x8
    GroupNorm, SiLU, conv 3x3 -> out_channels (zero-initialised)

Every residual block receives the embedding of the time ``t`` (sinusoidal features then an
MLP, [`TimeEmbedding`][probgen.nn.time_embedding.TimeEmbedding]) plus, with
``num_classes > 0``, a learned label embedding; it enters as a per-channel scale and shift
after the first normalisation (the "adaptive group norm" of Dhariwal & Nichol 2021, sec. 3).
As in [`TimeMLP`][probgen.nn.time_embedding.TimeMLP], label index ``num_classes`` means "no
label" (``y=None``), the unconditional model of classifier-free guidance. ``t`` is scaled by
``time_scale`` before the sinusoidal code: 1000 for ``t`` in [0, 1] (the default), 1 for
integer steps.

Sizes: 8x8 digits ``UNet(1, channels=32, mults=(1, 2))`` (~0.4 M parameters); 32x32 images
``UNet(3, channels=64, mults=(1, 2, 2, 2))``. The input height and width must be divisible by
``2 ** (len(mults) - 1)``.

Examples:
    >>> import torch
    >>> net = UNet(1, channels=16, mults=(1, 2), num_classes=10)
    >>> x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    >>> net(x, t).shape, net(x, t, torch.tensor([0, 1, 2, 3])).shape
    (torch.Size([4, 1, 8, 8]), torch.Size([4, 1, 8, 8]))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from probgen.errors import ProbgenError
from probgen.nn.time_embedding import TimeEmbedding

__all__ = ["ResBlock", "SelfAttention2d", "UNet"]


def _norm(channels: int) -> nn.GroupNorm:
    groups = 8 if channels % 8 == 0 else (4 if channels % 4 == 0 else 1)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """``x, emb -> x'``: norm, scale-shift by ``emb``, SiLU, conv, norm, SiLU, dropout, conv,
    plus a (1x1-projected) skip.

    Examples:
        >>> block = ResBlock(8, 16, emb_dim=32)
        >>> block(torch.randn(2, 8, 4, 4), torch.randn(2, 32)).shape
        torch.Size([2, 16, 4, 4])
    """

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2, self.conv2 = _norm(out_ch), nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return h + self.skip(x)


class SelfAttention2d(nn.Module):
    """Single-head self-attention over the ``H * W`` positions, with a residual connection.

    Examples:
        >>> SelfAttention2d(8)(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]  # (B, HW, C)
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class UNet(nn.Module):
    """``f(x, t[, y])`` for images ``x`` ``(N, C, H, W)``: output ``(N, out_channels, H, W)``.

    Args:
        in_channels: channels of ``x``.
        out_channels: output channels (default ``in_channels``: a noise, score or velocity).
        channels: width of the first level.
        mults: width multiplier of each level (one level per entry; each after the first
            halves the resolution).
        num_res_blocks: residual blocks per level.
        num_classes: > 0 adds a label embedding (index ``num_classes`` is "no label").
        time_scale: multiplies ``t`` before the sinusoidal code.
        dropout: dropout inside the residual blocks.
        attention: self-attention in the middle (lowest resolution).
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None,
                 channels: int = 32, mults: Sequence[int] = (1, 2), num_res_blocks: int = 1,
                 num_classes: int = 0, time_scale: float = 1000.0, dropout: float = 0.0,
                 attention: bool = True) -> None:
        super().__init__()
        if in_channels < 1 or channels < 1 or not mults or min(mults) < 1 or num_res_blocks < 1:
            raise ProbgenError(f"in_channels, channels, mults, num_res_blocks: need positive "
                               f"sizes, got {in_channels}, {channels}, {tuple(mults)}, "
                               f"{num_res_blocks}")
        if num_classes < 0:
            raise ProbgenError(f"num_classes: must be >= 0, got {num_classes}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.levels = len(mults)
        emb = 4 * channels
        self.time = TimeEmbedding(emb, time_scale, features=channels)
        self.label = nn.Embedding(num_classes + 1, emb) if num_classes else None
        self.inp = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in mults]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, c = [channels], channels
        for i, w in enumerate(widths):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(c, w, emb, dropout))
                c = w
                skips.append(c)
            if i < self.levels - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid1 = ResBlock(c, c, emb, dropout)
        self.attn = SelfAttention2d(c) if attention else nn.Identity()
        self.mid2 = ResBlock(c, c, emb, dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(c + skips.pop(), w, emb, dropout))
                c = w
            if i > 0:
                self.upsample.append(nn.Conv2d(c, c, 3, padding=1))
        self.num_res_blocks = num_res_blocks
        self.out_norm = _norm(c)
        self.out = nn.Conv2d(c, out_channels or in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def embed(self, t: Tensor, y: Tensor | None, n: int, device: torch.device) -> Tensor:
        """The ``(N, 4 * channels)`` conditioning vector of time ``t`` and label ``y``."""
        t = torch.as_tensor(t, device=device).float().expand(n)
        e = self.time(t)
        if self.label is not None:
            if y is None:
                y = torch.full((n,), self.num_classes, device=device, dtype=torch.long)
            e = e + self.label(y)
        elif y is not None:
            raise ProbgenError("y: this network has no label input (num_classes=0)")
        return e

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ProbgenError(f"x: expected (N, {self.in_channels}, H, W), got "
                               f"{tuple(x.shape)}")
        f = 2 ** (self.levels - 1)
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ProbgenError(f"x: height and width must be divisible by {f} for "
                               f"{self.levels} levels, got {tuple(x.shape[-2:])}")
        emb = self.embed(t, y, x.shape[0], x.device)
        h = self.inp(x)
        hs = [h]
        blocks = iter(self.down)
        for i in range(self.levels):
            for _ in range(self.num_res_blocks):
                h = next(blocks)(h, emb)
                hs.append(h)
            if i < self.levels - 1:
                h = self.downsample[i](h)
                hs.append(h)
        h = self.mid2(self.attn(self.mid1(h, emb)), emb)
        blocks = iter(self.up)
        for j in range(self.levels):
            for _ in range(self.num_res_blocks + 1):
                h = next(blocks)(torch.cat([h, hs.pop()], dim=1), emb)
            if j < self.levels - 1:
                h = self.upsample[j](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.out(F.silu(self.out_norm(h)))
