"""Degenerate-input policy of the data path, with counters a trainer reports once per epoch.

What the loaders do with inputs that are legal but unusual (nothing is silently dropped: every case is
counted, and ``train.log`` gets one ``inputs:`` line per epoch when a count is non-zero):

- an **empty point cloud** (0 points) is legal (a LiDAR may see nothing) and is used as it is; counted;
- points with a **NaN or infinite coordinate** are dropped; counted;
- points **farther than** :data:`MAX_ABS_COORD` metres from the sensor on any axis (a sensor's cloud cannot
  reach there; typically garbage or another unit) are dropped; counted;
- a **grayscale** (or palette/RGBA/16-bit) camera image is converted to RGB; counted;
- an image whose size does not fit its intrinsics is refused (a one-line DataError, ``camera_utils``).

The counters live in shared memory created with the dataset, so DataLoader workers (any start method: the
dataset, and with it the counters, travels to each worker when it is started) add to the same numbers.
"""
import multiprocessing

import numpy as np

MAX_ABS_COORD = 1000.0
"""metres; a point with |x|, |y| or |z| above this is dropped as absurd."""

COUNTERS = ("clouds", "empty_clouds", "nonfinite_points", "far_points", "images", "converted_images")
_LABELS = {"empty_clouds": "empty clouds", "nonfinite_points": "NaN/inf points dropped",
           "far_points": f"points beyond {MAX_ABS_COORD:g} m dropped", "converted_images": "non-RGB images converted"}


class InputStats:
    """Counters of :data:`COUNTERS`, shared by a dataset and its DataLoader workers."""

    def __init__(self):
        self._values = multiprocessing.get_context().Array("q", len(COUNTERS))

    def add(self, name, n=1):
        if n:
            with self._values.get_lock():
                self._values[COUNTERS.index(name)] += int(n)

    def take(self):
        """The counts since the last ``take`` ({name: int}); resets them."""
        with self._values.get_lock():
            out = dict(zip(COUNTERS, self._values[:]))
            self._values[:] = [0] * len(COUNTERS)
        return out

    def clean_points(self, points):
        """Apply the cloud policy to (N, 4) ``[x, y, z, intensity]`` points; returns the kept rows.

        Args:
            points: (N, 4) float32 as read (non-finite rows included).
        """
        xyz = points[:, :3]
        finite = np.isfinite(xyz).all(axis=1)
        near = (np.abs(np.where(finite[:, None], xyz, 0.0)) <= MAX_ABS_COORD).all(axis=1)
        keep = finite & near
        self.add("clouds")
        self.add("nonfinite_points", int((~finite).sum()))
        self.add("far_points", int((finite & ~near).sum()))
        if not keep.all():
            points = points[keep]
        if len(points) == 0:
            self.add("empty_clouds")
        return points

    def rgb(self, image):
        """A PIL image as RGB (converted and counted when it is not)."""
        self.add("images")
        if image.mode == "RGB":
            return image
        self.add("converted_images")
        return image.convert("RGB")


def summary_line(counts):
    """``'inputs: 3 empty clouds, 12 NaN/inf points dropped (of 480 clouds, 1920 images)'`` or None when clean."""
    parts = [f"{counts[k]} {label}" for k, label in _LABELS.items() if counts.get(k)]
    if not parts:
        return None
    return f"inputs: {', '.join(parts)} (of {counts['clouds']} clouds, {counts['images']} images)"


def merge(*counts):
    """Sum several ``take()`` results."""
    return {k: sum(c.get(k, 0) for c in counts) for k in COUNTERS}
