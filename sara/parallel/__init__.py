"""Many processes: the world and its mesh, the collectives with their backward, Ulysses
sequence parallelism and FSDP2 applied to built models (``docs/DISTRIBUTED.md``)."""
