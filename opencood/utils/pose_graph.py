"""CoAlign's agent-object pose graph (spec baselines §B CoAlign 2c): refine noisy agent poses from boxes.

Every agent has detected boxes (x, y, yaw) in its own LiDAR frame, with optional log-variances (x, y, yaw)
from the uncertainty head. With the noisy poses all boxes are put into the world; boxes of DIFFERENT agents
whose centres are closer than ``thres`` metres are clustered (union-find, one box per agent and cluster:
the one nearest the cluster's mean), and every cluster seen by >= 2 agents becomes a landmark, initialised
at its first box's world pose (SE(2), or only x, y without ``landmark_SE2``). The graph has one SE(2)
vertex per agent (the ego fixed) and one per landmark; an edge agent -> landmark measures the box pose in
the agent frame with information diag(exp(-log sigma^2)), the x/y terms divided by the anchor diagonal^2
(the head's variances are in anchor-normalised units), or identity without ``use_uncertainty``.
``scipy.optimize.least_squares`` (Levenberg-Marquardt) minimises the whitened residuals.

Hard cases keep the noisy poses (``abandon_hard_cases``): <= 3 landmarks, or at least half the clusters
with a yaw variance > 0.2 rad^2. With ``drop_hard_boxes`` such clusters are left out of the graph.

Poses here are (x, y, yaw) with yaw in RADIANS (the 6-vector poses of the datasets carry degrees).
"""
import json
import math
import os

import numpy as np
from scipy.optimize import least_squares

from opencood.utils.config import Key, Schema
from opencood.utils.errors import ConfigError, DataError

ANCHOR_DIAGONAL_SQ = 1.6 ** 2 + 3.9 ** 2  # (w^2 + l^2) of the car anchor: the unit of the x/y variances

POSE_GRAPH_ARGS = Schema({
    "thres": Key(float, 1.5, "metres: boxes of different agents closer than this are one object"),
    "use_uncertainty": Key(bool, True, "weight the edges by the predicted variances (else identity)"),
    "landmark_SE2": Key(bool, True, "landmarks are SE(2) poses (else only x, y; no yaw edges)"),
    "abandon_hard_cases": Key(bool, True, "keep the noisy poses in hard cases (few landmarks, inconsistent yaw)"),
    "drop_hard_boxes": Key(bool, False, "leave clusters with inconsistent yaw out of the graph"),
    "adaptive_landmark": Key(bool, False, "CoAlign's adaptive landmark variant (not built: only false)",
                             choices=(False,)),
    "normalize_uncertainty": Key(bool, False, "CoAlign's per-agent variance normalisation (not built: only false)",
                                 choices=(False,)),
    "min_landmarks": Key(int, 4, "fewer landmarks than this is a hard case (CoAlign: <= 3)"),
    "yaw_var_thres": Key(float, 0.2, "rad^2: a cluster with a larger yaw variance is inconsistent"),
    "max_iterations": Key(int, 1000, "solver iterations (function evaluations = this x (variables + 1))"),
}, name="box_align.args")


def wrap_angle(a):
    """Angles (radians) wrapped to [-pi, pi)."""
    return (np.asarray(a) + math.pi) % (2 * math.pi) - math.pi


def to_world(pose, boxes):
    """Boxes (K, 3) (x, y, yaw) in the frame of ``pose`` (x, y, yaw) -> world (K, 3)."""
    c, s = math.cos(pose[2]), math.sin(pose[2])
    x = pose[0] + c * boxes[:, 0] - s * boxes[:, 1]
    y = pose[1] + s * boxes[:, 0] + c * boxes[:, 1]
    return np.stack([x, y, wrap_angle(boxes[:, 2] + pose[2])], axis=1)


def in_frame(pose, world):
    """World poses (K, 3) -> the frame of ``pose`` (x, y, yaw): the inverse of :func:`to_world`."""
    c, s = math.cos(pose[2]), math.sin(pose[2])
    dx, dy = world[:, 0] - pose[0], world[:, 1] - pose[1]
    return np.stack([c * dx + s * dy, -s * dx + c * dy, wrap_angle(world[:, 2] - pose[2])], axis=1)


def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def cluster_boxes(world_boxes, owners, thres):
    """Clusters of boxes of different agents whose centres are closer than ``thres``.

    Args:
        world_boxes: (K, 3) all agents' boxes in the world.
        owners: (K,) agent index of each box.
        thres: metres.

    Returns:
        list of index arrays, each with >= 2 agents and at most one box per agent (the one nearest the
        cluster's mean centre), in order of their first box.
    """
    k = len(world_boxes)
    parent = list(range(k))
    d = np.linalg.norm(world_boxes[:, None, :2] - world_boxes[None, :, :2], axis=-1)  # (K, K)
    close = (d < thres) & (owners[:, None] != owners[None, :])
    for i, j in zip(*np.nonzero(np.triu(close, 1))):
        parent[_find(parent, i)] = _find(parent, j)
    groups = {}
    for i in range(k):
        groups.setdefault(_find(parent, i), []).append(i)
    clusters = []
    for members in sorted(groups.values(), key=min):
        members = np.asarray(members)
        centre = world_boxes[members, :2].mean(axis=0)
        best = {}
        for i in members:
            dist = np.linalg.norm(world_boxes[i, :2] - centre)
            if owners[i] not in best or dist < best[owners[i]][0]:
                best[owners[i]] = (dist, i)
        if len(best) >= 2:
            clusters.append(np.sort([i for _, i in best.values()]))
    return clusters


def yaw_variance(yaws):
    """Variance (rad^2) of yaws about the first one, differences wrapped to [-pi, pi)."""
    diffs = wrap_angle(np.asarray(yaws) - yaws[0])
    return float(np.var(diffs))


def edge_weights(log_var):
    """(K, 3) square-root information of the edges: exp(-s / 2), x/y divided by the anchor diagonal."""
    w = np.exp(-0.5 * np.asarray(log_var, dtype=np.float64))
    w[:, :2] /= math.sqrt(ANCHOR_DIAGONAL_SQ)
    return w


class PoseGraph:
    """One frame's agent-object graph.

    Args:
        poses: (n, 3) noisy agent poses (x, y, yaw rad) in the world, ego first.
        boxes: n arrays (K_i, 3) of box poses (x, y, yaw rad) in each agent's frame.
        log_vars: n arrays (K_i, 3) of log-variances (anchor-normalised x, y; yaw), or None.
        cfg: parsed :data:`POSE_GRAPH_ARGS`.
    """

    def __init__(self, poses, boxes, log_vars, cfg):
        self.poses = np.asarray(poses, dtype=np.float64).reshape(-1, 3)
        self.cfg = cfg
        self.boxes = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 3) for b in boxes])
        self.owners = np.concatenate([np.full(len(np.asarray(b).reshape(-1, 3)), i) for i, b in enumerate(boxes)])
        if log_vars is not None and cfg.use_uncertainty:
            self.weights = edge_weights(np.concatenate([np.asarray(v).reshape(-1, 3) for v in log_vars]))
        else:
            self.weights = np.ones((len(self.boxes), 3))
        world = np.concatenate([to_world(self.poses[o], self.boxes[[i]]) for i, o in enumerate(self.owners)]) \
            if len(self.boxes) else np.zeros((0, 3))
        self.clusters = cluster_boxes(world, self.owners, cfg.thres) if len(world) else []
        self.inconsistent = [yaw_variance(world[c, 2]) > cfg.yaw_var_thres for c in self.clusters]
        self.world = world

    def hard_case(self):
        """True when the graph should not be trusted (see module docstring)."""
        if len(self.clusters) < self.cfg.min_landmarks:
            return True
        return sum(self.inconsistent) >= 0.5 * len(self.clusters)

    def landmarks(self):
        """Clusters used in the graph (inconsistent ones dropped with ``drop_hard_boxes``)."""
        if self.cfg.drop_hard_boxes:
            return [c for c, bad in zip(self.clusters, self.inconsistent) if not bad]
        return list(self.clusters)

    def solve(self):
        """Refined (n, 3) poses (ego and agents without a landmark unchanged); the noisy ones in hard cases."""
        if self.cfg.abandon_hard_cases and self.hard_case():
            return self.poses.copy()
        clusters = self.landmarks()
        free = sorted({int(self.owners[i]) for c in clusters for i in c} - {0})
        if not clusters or not free:
            return self.poses.copy()
        dims = 3 if self.cfg.landmark_SE2 else 2
        edges = [(int(self.owners[i]), li, i) for li, c in enumerate(clusters) for i in c]
        x0 = np.concatenate([self.poses[free].reshape(-1),
                             np.concatenate([self.world[c[0], :dims] for c in clusters])])

        def unpack(x):
            poses = self.poses.copy()
            poses[free] = x[:3 * len(free)].reshape(-1, 3)
            return poses, x[3 * len(free):].reshape(-1, dims)

        def residuals(x):
            poses, marks = unpack(x)
            out = []
            for agent, li, box in edges:
                mark = marks[li] if dims == 3 else np.r_[marks[li], self.boxes[box, 2] + poses[agent, 2]]
                pred = in_frame(poses[agent], mark[None])[0]
                r = pred - self.boxes[box]
                r[2] = wrap_angle(r[2])
                out.append((r * self.weights[box])[:dims])
            return np.concatenate(out)

        n_res = len(edges) * dims
        method = "lm" if n_res >= len(x0) else "trf"
        sol = least_squares(residuals, x0, method=method, max_nfev=self.cfg.max_iterations * (len(x0) + 1))
        refined, _ = unpack(sol.x)
        refined[free, 2] = wrap_angle(refined[free, 2])
        return refined


def refine_poses(poses, boxes, log_vars=None, args=None, where="box_align.args", source="config"):
    """Pose-graph refinement of one frame (see module docstring).

    Args:
        poses: (n, 3) noisy (x, y, yaw rad) world poses, ego first.
        boxes: n arrays (K_i, 3) of (x, y, yaw rad) boxes in each agent's frame.
        log_vars: n arrays (K_i, 3) log-variances, or None.
        args: the ``box_align.args`` section (or a parsed one).

    Returns:
        (n, 3) refined poses.
    """
    cfg = POSE_GRAPH_ARGS.parse(args, where, source)
    return PoseGraph(poses, boxes, log_vars, cfg).solve()


BOX_ALIGN = Schema({
    "train_result": Key(str, None, "JSON of pre-computed boxes of the training split (pose_graph_pre_calc.py)"),
    "val_result": Key(str, None, "the same for the validation split"),
    "test_result": Key(str, None, "the same for the test split (inference)"),
    "args": Key(dict, {}, "pose-graph options", schema=POSE_GRAPH_ARGS),
}, name="box_align")


class BoxAlignment:
    """Refines the noisy poses of a frame's agents from a pre-computed boxes file (CoAlign at load time).

    File layout (written by ``opencood/tools/pose_graph_pre_calc.py``): ``{"<scenario>/<timestamp>":
    {"<agent id>": {"boxes": [[x, y, z, h, w, l, yaw] ...] (agent's LiDAR frame, metres/radians),
    "uncertainty": [[s_x, s_y, s_yaw] ...] log-variances or absent, "scores": [...]}}}``.

    Args:
        section: the top-level ``box_align`` section.
        split: ``train`` | ``val`` | ``test`` (picks ``<split>_result``).
        source: config file, for messages.
    """

    def __init__(self, section, split, source="config"):
        cfg = BOX_ALIGN.parse(section, "box_align", source)
        key = f"{split}_result"
        self.path = cfg[key]
        if not self.path or not os.path.isfile(self.path):
            raise ConfigError(f"{source}: box_align.{key}: pre-computed boxes file {self.path!r} not found (write "
                              f"it with opencood/tools/pose_graph_pre_calc.py)")
        try:
            with open(self.path) as f:
                self.results = json.load(f)
        except (OSError, ValueError) as err:
            raise DataError(f"{self.path}: not a boxes JSON ({err})") from None
        self.args = cfg.args
        self.source = source

    def agent_boxes(self, entry, agent_id):
        """(K, 3) boxes (x, y, yaw) and (K, 3) log-variances (or None) of one agent of a frame entry."""
        item = entry.get(str(agent_id), {})
        boxes = np.asarray(item.get("boxes", []), dtype=np.float64).reshape(-1, 7)[:, [0, 1, 6]]
        unc = item.get("uncertainty")
        return boxes, (None if unc is None else np.asarray(unc, dtype=np.float64).reshape(-1, 3))

    def align(self, agents, frame_key):
        """Overwrite x, y, yaw of every agent's (noisy) ``lidar_pose`` with the pose-graph solution.

        Args:
            agents: ``AgentFrame`` records of one frame, ego first.
            frame_key: ``"<scenario>/<timestamp>"``.
        """
        if frame_key not in self.results:
            raise DataError(f"{self.path}: missing key '{frame_key}' (boxes of another dataset or split?)")
        entry = self.results[frame_key]
        poses = np.array([[a.lidar_pose[0], a.lidar_pose[1], math.radians(a.lidar_pose[4])] for a in agents])
        per_agent = [self.agent_boxes(entry, a.agent_id) for a in agents]
        log_vars = None if any(u is None for _, u in per_agent) else [u for _, u in per_agent]
        refined = PoseGraph(poses, [b for b, _ in per_agent], log_vars, self.args).solve()
        for agent, pose in zip(agents, refined):
            agent.lidar_pose = np.array(agent.lidar_pose, dtype=np.float64)
            agent.lidar_pose[0], agent.lidar_pose[1] = pose[0], pose[1]
            agent.lidar_pose[4] = math.degrees(pose[2])
