"""
The memory plan of a training configuration, per GPU and without one (memory.memory_plan): what each process
holds at the peak of a training step, a dev evaluation and a checkpoint save, and whether it fits.

    python plan.py config/r1_7b.py                        # 8 GPUs of 80 GB (the recipe's machine)
    python plan.py config/r1_14b.py --world=16 --gpu_gib=80
    python plan.py config/r1_7b.py --row_tokens=8192      # any training setting, as train.py takes it
"""

import sys

from common import read_settings, run
from memory import check_plan
from processes import compute_dtype
from train import TrainConfig  # the settings, read exactly as train.py reads them


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    machine = {"world": 8, "gpu_gib": 80.0}
    for arg in [a for a in argv if a.split("=")[0] in ("--world", "--gpu_gib")]:
        key, _, value = arg[2:].partition("=")
        try:
            machine[key] = type(machine[key])(value)
        except ValueError:
            raise SystemExit(f"{arg}: {key} must be a number") from None
        if machine[key] <= 0:
            raise SystemExit(f"{arg}: {key} must be more than 0")
        argv = [a for a in argv if a != arg]
    cfg = read_settings(TrainConfig, argv)  # (their ranges checked; a plan needs no data files)
    name = " ".join(a for a in argv if not a.startswith("--")) or "defaults"
    # the GPUs the recipe targets: FSDP2 with bf16 compute unless dtype says otherwise
    check_plan(cfg, name, machine["world"], machine["gpu_gib"] * 2**30, compute_dtype(cfg.dtype, "cuda"), True, print)


if __name__ == "__main__":
    run(main, "it writes nothing; run it again")
