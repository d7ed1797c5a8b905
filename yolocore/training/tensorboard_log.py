"""TensorBoard event files of a training run, written once for both trees: per epoch the results.csv row (losses,
FGD terms, P/R/mAP, validation losses, learning rates) as scalars under the same tags as its columns, and the
first training batches as images, so `tensorboard --logdir runs/train` puts a teacher, a student and an FGD
student side by side, from either tree.

The writer is tensorboard's own event-file writer and protobufs: tensorboardX and torch.utils.tensorboard
would import torch, which the Jittor tree must not (Jittor has to be imported first, and needs no torch)."""
import math
import time
from pathlib import Path

import cv2
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class TensorBoardLog:
    """Event files in a run folder; a resumed run adds a file beside the first, which TensorBoard merges."""

    def __init__(self, log_dir):
        self.writer = EventFileWriter(str(log_dir))

    def _add(self, summary, step):
        self.writer.add_event(Event(summary=summary, step=int(step), wall_time=time.time()))

    def scalars(self, row, step):
        """The finite values of a results row (tag -> number) at step (the epoch); an epoch without validation
        leaves a gap rather than a NaN point, as results.png does."""
        values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in row.items()
                  if tag != "epoch" and math.isfinite(v)]
        self._add(Summary(value=values), step)

    def image(self, tag, path, step=0):
        """An image file already written to the run (a plot of a training batch), as TensorBoard shows images."""
        encoded = Path(path).read_bytes()
        h, w, c = cv2.imread(str(path)).shape
        image = Summary.Image(height=h, width=w, colorspace=c, encoded_image_string=encoded)
        self._add(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def flush(self):
        self.writer.flush()

    def close(self):
        self.writer.close()
