"""What the two trainers (the GC keyframe codec, talkcodec.keyframe.gc.train, and the renderer
refiner, talkcodec.generator.train) share: the run folder and its files (run.py), the
multi-scale discriminator and the GAN losses. Nothing here knows which network it trains."""
