"""GAN training losses: distortion (MS-SSIM), least-squares and hinge GAN, feature matching.

Used by GC (least squares) and the refiner (hinge).

None needs pretrained weights, so training runs offline.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from talkcodec.metrics import MS_SSIM_WEIGHTS

_C1, _C2 = 0.01**2, 0.03**2  # SSIM constants for images in [0, 1]


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - size // 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    return kernel / kernel.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur per channel with mirrored borders (as talkcodec.metrics)."""
    channels, pad = x.shape[1], window.numel() // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, window.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, window.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, num_scales: int = 5) -> torch.Tensor:
    """Differentiable MS-SSIM per image, (B,), of (B, 3, H, W) images in [0, 1], per channel.

    Same window, weights and 2x2 average pooling as talkcodec.metrics.ms_ssim; values are
    clamped to a small positive floor so the fractional powers keep a gradient.
    """
    weights = torch.tensor(MS_SSIM_WEIGHTS[:num_scales], device=x.device)
    weights = weights / weights.sum()
    window = _gaussian_window().to(x.device)
    result = torch.ones(x.shape[0], device=x.device)
    for scale in range(num_scales):
        mu_x, mu_y = _blur(x, window), _blur(y, window)
        var_x = _blur(x * x, window) - mu_x**2
        var_y = _blur(y * y, window) - mu_y**2
        cov = _blur(x * y, window) - mu_x * mu_y
        term = (2 * cov + _C2) / (var_x + var_y + _C2)
        if scale == num_scales - 1:
            term = term * (2 * mu_x * mu_y + _C1) / (mu_x**2 + mu_y**2 + _C1)
        value = term.mean(dim=(1, 2, 3)).clamp(min=1e-4)
        result = result * value ** weights[scale]
        if scale < num_scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return result


def generator_adversarial_loss(fake_outputs: list[list[torch.Tensor]]) -> torch.Tensor:
    """LSGAN: the generator wants every scale's patch scores on its images to read 1."""
    losses = [((scale[-1] - 1) ** 2).mean() for scale in fake_outputs]
    return torch.stack(losses).mean()


def discriminator_loss(
    real_outputs: list[list[torch.Tensor]], fake_outputs: list[list[torch.Tensor]]
) -> torch.Tensor:
    """LSGAN: real patches should score 1, generated ones 0."""
    losses = [
        ((real[-1] - 1) ** 2).mean() + (fake[-1] ** 2).mean()
        for real, fake in zip(real_outputs, fake_outputs, strict=True)
    ]
    return torch.stack(losses).mean() / 2


def hinge_generator_loss(fake_outputs: list[list[torch.Tensor]]) -> torch.Tensor:
    """Hinge GAN: the generator raises every scale's patch scores on its images."""
    return torch.stack([-scale[-1].mean() for scale in fake_outputs]).mean()


def hinge_discriminator_loss(
    real_outputs: list[list[torch.Tensor]], fake_outputs: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Hinge GAN: real patches should score >= 1, generated ones <= -1."""
    losses = [
        F.relu(1 - real[-1]).mean() + F.relu(1 + fake[-1]).mean()
        for real, fake in zip(real_outputs, fake_outputs, strict=True)
    ]
    return torch.stack(losses).mean() / 2


def feature_matching_loss(
    real_outputs: list[list[torch.Tensor]], fake_outputs: list[list[torch.Tensor]]
) -> torch.Tensor:
    """L1 between the discriminator's features of the real and the generated image (pix2pixHD)."""
    losses = [
        F.l1_loss(fake, real.detach())
        for real_scale, fake_scale in zip(real_outputs, fake_outputs, strict=True)
        for real, fake in zip(real_scale[:-1], fake_scale[:-1], strict=True)
    ]
    return torch.stack(losses).mean()


def _convolve_same(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """scipy's convolve2d(mode="same") with zero padding, as talkcodec.metrics, of (B, 1, H, W)
    by a (k, k) kernel: the flipped kernel correlated over a window k // 2 before each pixel."""
    size = kernel.shape[0]
    before, after = size // 2, size - 1 - size // 2
    x = F.pad(x, (before, after, before, after))
    return F.conv2d(x, kernel.flip(0, 1).view(1, 1, size, size))


def haarpsi(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Differentiable HaarPSI per image, (B,), of (B, 3, H, W) RGB images in [0, 1]: the same
    colour index as talkcodec.metrics.haarpsi (which works on 0..255 values), computed with
    torch so that a network can be trained on it."""
    from talkcodec.metrics import HAARPSI_ALPHA, HAARPSI_C, HAARPSI_SCALES, YIQ_FROM_RGB

    yiq_from_rgb = torch.tensor(YIQ_FROM_RGB, dtype=torch.float32, device=x.device)

    def channels(image: torch.Tensor) -> list[torch.Tensor]:
        yiq = torch.einsum("bchw,dc->bdhw", image * 255.0, yiq_from_rgb)
        box = torch.full((2, 2), 0.25, device=image.device)
        return [_convolve_same(yiq[:, i : i + 1], box)[..., ::2, ::2] for i in range(3)]

    def haar(channel: torch.Tensor) -> list[torch.Tensor]:
        """Horizontal then vertical responses, finest scale first."""
        horizontal, vertical = [], []
        for scale in range(1, HAARPSI_SCALES + 1):
            size = 2**scale
            kernel = torch.full((size, size), 2.0**-scale, device=channel.device)
            kernel[: size // 2] *= -1
            horizontal.append(_convolve_same(channel, kernel))
            vertical.append(_convolve_same(channel, kernel.t()))
        return horizontal + vertical

    def similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (2 * a * b + HAARPSI_C) / (a**2 + b**2 + HAARPSI_C)

    ref, dec = channels(x), channels(y)
    ref_haar, dec_haar = haar(ref[0]), haar(dec[0])
    similarities, weights = [], []
    for orientation in range(2):
        coarsest = HAARPSI_SCALES - 1 + orientation * HAARPSI_SCALES
        weights.append(torch.maximum(ref_haar[coarsest].abs(), dec_haar[coarsest].abs()))
        fine = (orientation * HAARPSI_SCALES, 1 + orientation * HAARPSI_SCALES)
        local = [similarity(ref_haar[i].abs(), dec_haar[i].abs()) for i in fine]
        similarities.append((local[0] + local[1]) / 2)
    box = torch.full((2, 2), 0.25, device=x.device)
    chroma = [
        similarity(_convolve_same(r, box).abs(), _convolve_same(d, box).abs())
        for r, d in zip(ref[1:], dec[1:], strict=True)
    ]
    similarities.append((chroma[0] + chroma[1]) / 2)
    weights.append((weights[0] + weights[1]) / 2)
    local = torch.cat(similarities, dim=1)  # (B, 3, h, w)
    weight = torch.cat(weights, dim=1)
    pooled = (torch.sigmoid(HAARPSI_ALPHA * local) * weight).sum((1, 2, 3)) / weight.sum(
        (1, 2, 3)
    ).clamp_min(1e-6)
    pooled = pooled.clamp(1e-6, 1 - 1e-6)
    return (torch.log(pooled / (1 - pooled)) / HAARPSI_ALPHA) ** 2
