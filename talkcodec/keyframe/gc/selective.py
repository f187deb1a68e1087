"""Selective compression (GC's SC mode): all latent channels on the person, few on the rest.

In the spirit of Agustsson et al. 2019 (section 4, "selective generative compression"): the
sender spends the latent's bits where the viewer looks -- the person, found by mediapipe's
selfie segmentation -- and sends only the first `background_channels` channels (possibly none)
of the background's latent positions; the generator synthesises what was not sent. The decoder
gets the person mask at latent resolution (range-coded, a few bytes), so it knows which symbols
follow and which channels each position's input mask marks as sent.

This module is the one definition of that mask, used by training and by the codec alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from talkcodec.keyframe.gc.alphabet import DOWNSAMPLING

# A latent position is "person" when at least this share of its pixels is, before the dilation.
PERSON_SHARE = 0.25


def person_cells(probability: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) person probability in [0, 1], H and W multiples of 16 -> (B, h, w) bool.

    A position is person when PERSON_SHARE of its 16x16 pixels are (probability > 0.5); the
    mask is then dilated by one position, so the person's outline (hair, shoulders) is always
    coded in full and the synthesised background only starts beyond it.
    """
    if probability.ndim != 4 or probability.shape[1] != 1:
        raise ValueError(f"probability must be (B, 1, H, W), got {tuple(probability.shape)}")
    share = F.avg_pool2d((probability > 0.5).float(), DOWNSAMPLING)
    cells = (share >= PERSON_SHARE).float()
    return F.max_pool2d(cells, 3, stride=1, padding=1)[:, 0] > 0


def cell_channels(cells: torch.Tensor, channels: int, background_channels: int) -> torch.Tensor:
    """(B, h, w) bool person cells -> (B, h, w) int64 number of channels sent at each position:
    `channels` on the person, `background_channels` elsewhere."""
    if not 0 <= background_channels <= channels:
        raise ValueError(f"background channels must be in 0..{channels}, got {background_channels}")
    return torch.where(cells, channels, background_channels).long()


def sent_mask(counts: torch.Tensor, total_channels: int) -> torch.Tensor:
    """(B, h, w) channels sent per position -> (B, total_channels, h, w) float 0/1 mask, 1 for
    the first `counts` channels of each position (what the generator is told was sent)."""
    index = torch.arange(total_channels, device=counts.device).view(1, -1, 1, 1)
    return (index < counts.unsqueeze(1)).float()
