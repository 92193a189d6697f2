"""Many processes, whatever the model: the world and its mesh, the collectives with their
backward, the Ulysses attention context, the precision policy, the gradient scale, rank-0
loading (``docs/DISTRIBUTED.md``). Applying them to the Wan DiT is Stage 2's
(:mod:`sara.stage2.parallelize`)."""
