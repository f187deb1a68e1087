"""The quantised latent's alphabet and geometry, shared by the networks and the entropy coder.

Kept free of torch so that the bitstream side (prior, latent coder, codec) imports cheaply.
"""

from __future__ import annotations

# The centres are fixed, not learned: the symbol index is the wire value, so they can never move.
CENTRES = (-2.0, -1.0, 0.0, 1.0, 2.0)
NUM_LEVELS = len(CENTRES)
# The encoder's stride: one latent position per DOWNSAMPLING x DOWNSAMPLING pixels.
DOWNSAMPLING = 16
