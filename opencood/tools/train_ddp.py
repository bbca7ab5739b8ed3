"""Multi-process training: ``torchrun --nproc_per_node=N opencood/tools/train_ddp.py -y CONFIG.yaml [--amp]``.

The old ``python -m torch.distributed.launch --nproc_per_node=N --use_env`` launch works too. NCCL on
GPUs, gloo on CPU; rank 0 logs, saves checkpoints and validates; checkpoints are the same plain
state_dicts as single-process training, so either kind of run resumes the other.
"""
from opencood.tools.trainer import main

if __name__ == "__main__":
    main(ddp=True)
