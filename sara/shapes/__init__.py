"""The shapes world: the synthetic data set the demo, the tests and the toy reproduction run
on — coloured shapes moving over a textured background, captioned with exactly what is drawn
— with everything that knows its rules. ``vocabulary`` holds its words (kinds, colours,
motions, counts, held-out pairs, backgrounds; a leaf that imports nothing of ``sara``),
``geometry`` each kind's outline, area and rasterised mask, ``palette`` the entity colours
found in pixels, ``render`` the clips, masks and manifests (``SynthSpec``, ``synthesize``,
``render_clip``), ``prompt_set`` the held-out prompts of unseen colour–shape pairs,
``metric`` the exact metric that scores a video against its prompt, ``oracle`` the teacher
whose token features are the drawn scene itself, and ``vae`` the ``shapes`` Wan preset's VAE
trained on these clips.
"""
