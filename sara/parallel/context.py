"""Ulysses sequence parallelism of the Wan DiT, through diffusers' own context parallelism.

``WanTransformer3DModel._cp_plan`` says where diffusers splits the token sequence (the
rotary tables and the input of block 0; the per-token timesteps of TI2V) and where it
gathers it (``proj_out``); its attention dispatch runs the Ulysses all-to-all over heads,
with an exact backward. ``ModelMixin.enable_parallelism`` cannot run on CPU (it takes
``rank % device_count()`` with no devices), so :func:`apply_ulysses` does its three steps
with the mesh of :class:`~sara.parallel.world.World`: set the config up, hand it to every
attention processor, register the split/gather hooks. These are private diffusers
interfaces: ``pyproject.toml`` pins diffusers to 0.42.*, and the parity tests fail if
they change.

The output gather's backward returns each rank's own slice, unsummed: exact when every
rank of the group computes the same loss on the gathered output, with parameter gradients
then **summed** over the group (:func:`sara.parallel.gradients.backward` scales the loss so
FSDP's average becomes that sum).
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks.context_parallel import apply_context_parallel
from diffusers.models._modeling_parallel import ContextParallelConfig
from diffusers.models._modeling_parallel import ParallelConfig as DiffusersParallel

from sara.config.parallel import ParallelConfig
from sara.parallel.precision import param_dtype
from sara.parallel.world import World


def apply_ulysses(dit: WanTransformer3DModel, world: World) -> None:
    """Split ``dit``'s token sequence over ``world``'s ``cp`` ranks (Ulysses all-to-all).

    Raises:
        ValueError: the DiT's attention heads do not divide by the degree.
    """
    check_heads(dit.config.num_attention_heads, world.cp)
    config = DiffusersParallel(context_parallel_config=ContextParallelConfig(ulysses_degree=world.cp, mesh=world.mesh))
    config.setup(world.rank, world.size, world.device, mesh=world.mesh)
    dit._parallel_config = config
    for module in dit.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = config
    apply_context_parallel(dit, config.context_parallel_config, dit._cp_plan)


def check_heads(heads: int, cp: int) -> None:
    """Refuse a Ulysses degree that does not split the DiT's attention heads.

    Raises:
        ValueError: naming ``parallel.ulysses`` and the head count.
    """
    if heads % cp:
        raise ValueError(f"parallel.ulysses: {cp} does not divide the DiT's {heads} attention heads")


def check_tokens(tokens: int, cp: int, where: str) -> None:
    """Refuse a clip shape whose DiT tokens do not split evenly over ``cp`` ranks.

    Raises:
        ValueError: naming ``where`` (the bucket) and the token count.
    """
    if tokens % cp:
        raise ValueError(
            f"{where}: {tokens} DiT tokens do not split over parallel.ulysses = {cp} ranks; "
            f"choose a size or frame count whose token count divides by {cp}"
        )


def attention_backend(config: ParallelConfig, device: torch.device) -> str:
    """The diffusers attention backend of ``parallel.attention`` on ``device``: ``auto`` is
    ``_native_flash`` on CUDA in a half dtype (PyTorch's flash kernel keeps the log-sum-exp
    for its backward, and diffusers' Ulysses attention uses it; the ``native`` backend's
    backward runs attention again, a third time per block under gradient checkpointing) and
    ``native`` elsewhere (the flash kernel takes no fp32, and no CPU)."""
    if config.attention != "auto":
        return config.attention
    half = param_dtype(config, device) in (torch.bfloat16, torch.float16)
    return "_native_flash" if device.type == "cuda" and half else "native"


def set_attention(dit: WanTransformer3DModel, backend: str) -> None:
    """Run ``dit``'s attention on ``backend`` (``native``, diffusers' default, is left as it is)."""
    if backend != "native":
        dit.set_attention_backend(backend)
