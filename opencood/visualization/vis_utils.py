"""Bird's-eye-view pictures of point clouds, GT boxes and predictions, drawn headless with OpenCV.

Picture convention (all inputs in metres, in one common frame, usually the ego LiDAR frame):
  * +x (forward) points to the right of the picture, one column per ``1 / pixels-per-metre`` metres;
  * ``left_hand=True`` (CARLA / OPV2V / V2XSet, x forward, y right): +y points *down*, so the picture is
    the true top view of the left-handed world (a car heading right has its right side below it);
  * ``left_hand=False`` (right-handed frames such as DAIR-V2X, y left): +y points *up*.
Colours (RGB): GT green, predictions red, points grey, agents from a palette without green or red. A short
line from each box centre to the middle of its front face (corners 0-1) shows the heading.

Nothing here touches a display or global plotting state; PNGs are written atomically.
"""
import os

import cv2
import numpy as np

from opencood.utils.atomic_io import atomic_open

GT_COLOR = (0, 255, 0)
PRED_COLOR = (255, 0, 0)
POINT_COLOR = (150, 150, 150)
BACKGROUND_COLOR = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)
AGENT_COLORS = ((0, 0, 255), (255, 140, 0), (160, 32, 240), (0, 170, 200), (120, 80, 20), (255, 0, 200))
DEFAULT_PIXELS_PER_METRE = 5.0
_BOX_THICKNESS = 2
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _as_array(x, name, min_cols):
    """Float64 numpy copy of a torch tensor / array (None -> None), checking the trailing layout."""
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.size == 0:
        return None
    if name == "points":
        if arr.ndim != 2 or arr.shape[1] < min_cols:
            raise ValueError(f"vis_utils: points must have shape (P, >=2), got {arr.shape}")
    elif arr.ndim != 3 or arr.shape[1] < 4 or arr.shape[2] < min_cols:
        raise ValueError(f"vis_utils: {name} must have shape (N, 8, 3), got {arr.shape}")
    return arr


class _BevCanvas:
    """Maps metric BEV coordinates to pixels of an RGB image (H, W, 3) uint8."""

    def __init__(self, pc_range, image_size, left_hand):
        if len(pc_range) != 6 or pc_range[3] <= pc_range[0] or pc_range[4] <= pc_range[1]:
            raise ValueError(f"vis_utils: pc_range must be [xmin, ymin, zmin, xmax, ymax, zmax], got {pc_range}")
        self.xmin, self.ymin, _, self.xmax, self.ymax, _ = (float(v) for v in pc_range)
        if image_size is None:
            image_size = (round((self.xmax - self.xmin) * DEFAULT_PIXELS_PER_METRE),
                          round((self.ymax - self.ymin) * DEFAULT_PIXELS_PER_METRE))
        self.width, self.height = int(image_size[0]), int(image_size[1])
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"vis_utils: image_size must be positive (width, height), got {image_size}")
        self.left_hand = left_hand
        self.sx = self.width / (self.xmax - self.xmin)  # pixels per metre along x
        self.sy = self.height / (self.ymax - self.ymin)  # pixels per metre along y
        self.image = np.empty((self.height, self.width, 3), dtype=np.uint8)
        self.image[:] = BACKGROUND_COLOR

    def to_pixels(self, xy):
        """Pixel coordinates (..., 2) float [column, row] of metric points (..., 2)."""
        col = (xy[..., 0] - self.xmin) * self.sx
        if self.left_hand:
            row = (xy[..., 1] - self.ymin) * self.sy
        else:
            row = (self.ymax - xy[..., 1]) * self.sy
        return np.stack([col, row], axis=-1)

    def draw_points(self, points):
        """Paint points (P, >=2) one pixel each."""
        pix = np.floor(self.to_pixels(points[:, :2])).astype(np.int64)  # (P, 2)
        keep = (pix[:, 0] >= 0) & (pix[:, 0] < self.width) & (pix[:, 1] >= 0) & (pix[:, 1] < self.height)
        pix = pix[keep]
        self.image[pix[:, 1], pix[:, 0]] = POINT_COLOR

    def draw_boxes(self, corners, color):
        """Outline the bottom faces of boxes (N, 8, 3) and their heading."""
        quads = self.to_pixels(corners[:, :4, :2])  # (N, 4, 2)
        centre = quads.mean(axis=1)  # (N, 2)
        front = 0.5 * (quads[:, 0] + quads[:, 1])  # (N, 2)
        cv2.polylines(self.image, list(np.round(quads).astype(np.int32)), True, color,
                      _BOX_THICKNESS, cv2.LINE_8)
        for c, f in zip(np.round(centre).astype(np.int32), np.round(front).astype(np.int32)):
            cv2.line(self.image, tuple(int(v) for v in c), tuple(int(v) for v in f), color, 1, cv2.LINE_8)

    def draw_agents(self, agent_positions):
        """Filled circle plus text label per agent; colour fixed per distinct label."""
        labels = sorted({str(label) for _, _, label in agent_positions})
        for x, y, label in agent_positions:
            color = AGENT_COLORS[labels.index(str(label)) % len(AGENT_COLORS)]
            col, row = np.round(self.to_pixels(np.array([x, y], dtype=np.float64))).astype(int)
            cv2.circle(self.image, (int(col), int(row)), 6, color, -1, cv2.LINE_AA)
            cv2.putText(self.image, str(label), (int(col) + 8, int(row) - 8), _FONT, 0.5, color, 1, cv2.LINE_AA)

    def draw_legend(self, title):
        """Title (top left) and a GT / prediction legend (top right)."""
        if title:
            cv2.putText(self.image, str(title), (8, 18), _FONT, 0.5, TEXT_COLOR, 1, cv2.LINE_AA)
        for i, (text, color) in enumerate((("GT", GT_COLOR), ("pred", PRED_COLOR))):
            row = 18 + 18 * i
            col = self.width - 60
            cv2.line(self.image, (col, row - 5), (col + 14, row - 5), color, _BOX_THICKNESS, cv2.LINE_8)
            cv2.putText(self.image, text, (col + 18, row), _FONT, 0.45, TEXT_COLOR, 1, cv2.LINE_AA)


def _write_png_atomic(path, rgb):
    """Encode an RGB image (H, W, 3) as PNG and write it via a temp file + rename."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"vis_utils: could not encode PNG for {path}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with atomic_open(path, "wb") as f:
        f.write(buf.tobytes())


def draw_bev(points, gt_corners, pred_corners, path, pc_range, agent_positions=None, title=None,
             left_hand=True, image_size=None):
    """Draw a BEV picture of points, GT and predictions and save it as PNG (no display needed).

    Args:
        points: (P, >=2) point cloud (x, y first), metres, or None.
        gt_corners: (G, 8, 3) GT box corners (corners 0-3 = bottom face) or None; drawn green.
        pred_corners: (K, 8, 3) predicted corners or None; drawn red.
        path: output PNG path (parent folders are created).
        pc_range: [xmin, ymin, zmin, xmax, ymax, zmax] metres, the area shown.
        agent_positions: optional list of (x, y, label) agent positions in metres, e.g. (0, 0, "m1").
        title: optional text in the top-left corner.
        left_hand: True for left-handed frames (CARLA: +y drawn downwards), False for right-handed (+y up).
        image_size: (width, height) in pixels; default 5 pixels per metre of ``pc_range``.

    Returns:
        (H, W, 3) uint8 RGB image as written.
    """
    canvas = _BevCanvas(pc_range, image_size, left_hand)
    points = _as_array(points, "points", 2)
    gt_corners = _as_array(gt_corners, "gt_corners", 2)
    pred_corners = _as_array(pred_corners, "pred_corners", 2)
    if points is not None:
        canvas.draw_points(points)
    if gt_corners is not None:
        canvas.draw_boxes(gt_corners, GT_COLOR)
    if pred_corners is not None:
        canvas.draw_boxes(pred_corners, PRED_COLOR)
    if agent_positions:
        canvas.draw_agents(agent_positions)
    canvas.draw_legend(title)
    _write_png_atomic(str(path), canvas.image)
    return canvas.image
