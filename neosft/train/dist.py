"""Where this process stands among torchrun's: ranks, nodes, and a barrier that a single process skips."""

from __future__ import annotations

import os

from neosft.ports import free_port


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def node() -> int:
    return rank() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def nodes() -> int:
    return world_size() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def barrier() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()


def single_process_env() -> None:
    """DeepSpeed wants torchrun's variables even in one process: provide them when torchrun did not."""
    if "RANK" not in os.environ:
        port = free_port()
        os.environ.update(
            RANK="0",
            LOCAL_RANK="0",
            WORLD_SIZE="1",
            LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
        )


def without_shm_comm() -> None:
    """One process has no peer to share memory with: keep DeepSpeed from JIT-compiling its shared-memory
    all-reduce (`deepspeed_shm_comm`, about 30 s of C++ on a fresh machine) before the first step."""
    if world_size() == 1:
        import importlib

        # DeepSpeed itself, only when it trains; by module path: `deepspeed.comm.torch` as an attribute is torch
        backend = importlib.import_module("deepspeed.comm.torch")
        setattr(backend, "build_shm_op", lambda: None)  # noqa: B010  # its only caller reads the module's name


def _group():
    import torch.distributed as td

    return td if td.is_available() and td.is_initialized() else None


def shard() -> tuple[int, int]:
    """(rank, world size) of the initialized process group; (0, 1) without one, so one process does all the work."""
    td = _group()
    return (td.get_rank(), td.get_world_size()) if td else (0, 1)


def all_reduce_sum(tensor) -> None:
    """Sum `tensor` over the process group, in place (nothing without one)."""
    if td := _group():
        td.all_reduce(tensor)


def all_gather_objects(obj) -> list:
    """`obj` of every rank, in rank order ([obj] without a process group)."""
    td = _group()
    if not td:
        return [obj]
    out = [None] * td.get_world_size()
    td.all_gather_object(out, obj)
    return out


def release_deepspeed() -> None:
    """Forget the DeepSpeed config that training registered: transformers' (its `is_deepspeed_zero3_enabled` weakref)
    and accelerate's (the shared AcceleratorState holding the DeepSpeed plugin, which keeps that config alive). Left
    registered, every later `from_pretrained` in this process (the merge, the eval) is partitioned under ZeRO-3."""
    from accelerate.state import AcceleratorState
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    AcceleratorState._reset_state()  # the process group (PartialState) stays: the merge and the eval still use it
