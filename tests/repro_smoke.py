"""The smoke size of `sara repro`, shared by the tests of the base and of the study."""

# the base: a tiny DiT on 8 clips at 64², 2 steps, sampled with 2 denoising steps
BASE_SMOKE = [
    "base.world.num=8", "base.world.size=64", "base.world.heldout_fraction=0.25",
    "base.stage2.data.size=64", "base.stage2.models.text_length=16",
    "base.stage2.models.wan=tiny",  # the shapes VAE trains for minutes: tests/test_shapes_vae.py
    "base.stage2.optim.steps=2", "base.stage2.optim.batch_size=2", "base.stage2.optim.warmup_steps=1",
    "base.stage2.log_every=1", "base.stage2.save_every=2", "base.generate_steps=2",
]  # fmt: skip
