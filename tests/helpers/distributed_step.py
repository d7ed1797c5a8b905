"""Started by tests/e2e/test_distributed.py under torchrun or mpirun, one copy per process:

    python tests/helpers/distributed_step.py pytorch|jittor OUT_DIR TRAIN_PY_ARGS...

builds the run with the shared loop's setup and the tree's train.py, trains one epoch, and writes what this
process holds afterwards (the student's and FGD's state, and the images it was given) to OUT_DIR/rank<r>.npz,
so the test can check that the processes shared the data and stayed in step."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402

from yolocore.training import loop  # noqa: E402


def main(tree, out, argv):
    if tree == "jittor":
        from YOLOv5Jittor import train
        from YOLOv5Jittor.utils.framework import state_dict_to_numpy
    else:
        from YOLOv5Pytorch import train
        from YOLOv5Pytorch.utils.framework import state_dict_to_numpy
    run = loop.setup(train.parse_opt(argv), train)
    seen = run.train_loader.batch_sampler.order(0)
    loop.train_one_epoch(run, 0, train)
    arrays = {}
    for part, module in (("model", run.model), ("fgd", run.fgd)):
        if module is not None:
            arrays.update({f"{part}/{k}": v for k, v in state_dict_to_numpy(module.state_dict()).items()})
    np.savez(Path(out) / f"rank{run.rank}.npz", seen=seen, world_size=run.world_size, **arrays)
    train.close_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
