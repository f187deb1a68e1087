"""GC: learned generative keyframe compression after Agustsson et al. 2019 (ICCV)."""
