"""GC quantiser: L = 5 fixed centres, hard in the forward pass, soft gradient in training."""

from __future__ import annotations

import torch
from torch import nn

from talkcodec.keyframe.gc.alphabet import CENTRES, NUM_LEVELS

__all__ = ["CENTRES", "NUM_LEVELS", "Quantiser"]


class Quantiser(nn.Module):
    """Nearest-centre quantisation with the soft-to-hard gradient of Agustsson et al. (2017).

    The forward value is always the hard centre. In training the gradient is that of the soft
    assignment sum_l softmax(-sigma (z - c_l)^2) c_l, which lets the encoder feel which way to
    move a value that sits between two centres.
    """

    centres: torch.Tensor

    def __init__(self, sigma: float = 2.0) -> None:
        super().__init__()
        self.sigma = sigma
        self.register_buffer("centres", torch.tensor(CENTRES), persistent=False)

    def symbols(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) float -> (B, C, h, w) int64 index of the nearest centre, 0..L-1."""
        # The centres are the integers -2..2, so the nearest one is a rounding (ties to even).
        lowest = float(CENTRES[0])
        return torch.round(latent.clamp(lowest, float(CENTRES[-1])) - lowest).long()

    def dequantise(self, symbols: torch.Tensor) -> torch.Tensor:
        """Symbol indices -> their centres (float32)."""
        return self.centres[symbols]

    def soft_assignment(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) float -> (B, C, h, w, L) softmax(-sigma (z - c_l)^2) over the centres."""
        distances = (latent.unsqueeze(-1) - self.centres) ** 2
        return torch.softmax(-self.sigma * distances, dim=-1)

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantised latent, symbols): hard values, soft gradient when training."""
        symbols = self.symbols(latent)
        hard = self.dequantise(symbols)
        if not (self.training and latent.requires_grad):
            return hard, symbols
        soft = (self.soft_assignment(latent) * self.centres).sum(-1)
        return soft + (hard - soft).detach(), symbols
