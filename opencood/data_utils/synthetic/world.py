"""A seeded cooperative-driving scene: a four-leg intersection lined by buildings, with traffic.

Everything is laid out in a *map frame* (intersection at the origin, roads along the map x and y axes,
CARLA/UE4 axes: x forward, y right, z up, metres) and then placed in the world by one random rigid
motion (yaw about z + x/y offset), so the world poses written to the YAMLs are not axis-aligned.

Traffic drives on the right (a vehicle heading along +x uses the lanes at +y). Moving vehicles keep a
constant velocity along their lane; parked vehicles stand at the curb. Frames are 0.1 s apart (10 Hz).
Connected agents (CAVs) are traffic vehicles placed on different legs of the intersection, 10-28 m from
its centre, so buildings at the corners hide each leg from the others and collaboration matters.
"""
from dataclasses import dataclass

import numpy as np

from opencood.utils.transformation_utils import tfm_to_pose, x_to_world

FRAME_DT = 0.1  # seconds between saved frames (10 Hz)
LANE_W = 3.5  # lane width, metres
ROAD_HALF = 2 * LANE_W  # carriageway half width (two lanes per direction)
PARK_OFFSET = 8.75  # parking lane centre from the road axis
CURB = 10.5  # outer edge of the parking lane; sidewalk beyond
BUILD_START = 13.0  # building facades start here (from the road axis)
EXTENT = 125.0  # roads and buildings reach this far from the centre
MIN_CLEARANCE = 5.6  # centre distance keeping two car boxes apart (> twice their half diagonal)
LIDAR_MOUNT = (-0.5, 0.0, 1.9)  # LiDAR position in the vehicle frame (x, y, z), metres
# Infrastructure (road-side units): a pole on a sidewalk corner of the intersection, facing its centre. Corners
# as map-frame signs (x, y), diagonal pairs first; the pole foot lies between the curb and the facades.
RSU_CORNERS = ((1.0, 1.0), (-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0))
RSU_CORNER_OFFSET = 11.75  # |map x| = |map y| of the pole foot, metres (CURB < 11.75 < BUILD_START)
RSU_LIDAR_HEIGHT = 3.0  # LiDAR above the ground, metres (vehicles: 1.9)

# (heading yaw in radians, lateral offset) of the driving lanes of the x-road; the y-road uses the
# same lanes rotated by +90 degrees.
_X_LANES = ((0.0, LANE_W / 2), (0.0, 1.5 * LANE_W), (np.pi, -LANE_W / 2), (np.pi, -1.5 * LANE_W))
_LEGS = {"E": (1.0, 0.0), "W": (-1.0, 0.0), "N": (0.0, 1.0), "S": (0.0, -1.0)}


@dataclass
class Vehicles:
    """All vehicles of a scenario (map frame). V = number of vehicles.

    Attributes:
        ids: (V,) int64 CARLA-like actor ids (agents' ids are their folder names).
        half: (V, 3) half extents (l/2, w/2, h/2), metres.
        center: (V, 3) bounding-box centre offset from the actor origin (world axes, unrotated), metres.
        start: (V, 2) actor origin x/y at frame 0, map frame.
        heading: (V,) yaw in the map frame, radians.
        speed: (V,) m/s along the heading (0 for parked cars).
        color: (V, 3) uint8 RGB paint.
    """
    ids: np.ndarray
    half: np.ndarray
    center: np.ndarray
    start: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    color: np.ndarray


@dataclass
class Boxes:
    """Upright boxes of one frame in the world frame (B boxes).

    Attributes:
        center: (B, 3) box centres, metres.
        half: (B, 3) half extents along the box's own x (length), y (width), z (height).
        yaw: (B,) heading in radians.
        ids: (B,) int64 vehicle id, -1 for static structures.
        color: (B, 3) uint8 RGB.
    """
    center: np.ndarray
    half: np.ndarray
    yaw: np.ndarray
    ids: np.ndarray
    color: np.ndarray

    def __len__(self):
        return self.center.shape[0]

    def subset(self, keep):
        """Boxes selected by a boolean mask or index array."""
        return Boxes(self.center[keep], self.half[keep], self.yaw[keep], self.ids[keep], self.color[keep])


class World:
    """One scenario: static buildings, vehicle trajectories, agents and the map->world placement.

    Args:
        static: static structures, already in the world frame.
        vehicles: every vehicle (agents included), map frame.
        agent_ids: ids of the connected agents (ego candidate first).
        map_yaw: rotation of the map frame in the world, radians.
        map_offset: (2,) translation of the map frame in the world, metres.
        n_frames: number of saved frames.
        infrastructure: number of road-side units (0..4), ids -1, -2, ... on the corners of
            :data:`RSU_CORNERS`; they add no geometry (no pole is ray cast), so the vehicles' sensors see the
            same world with or without them.
    """

    def __init__(self, static, vehicles, agent_ids, map_yaw, map_offset, n_frames, infrastructure=0):
        self.static = static
        self.vehicles = vehicles
        self.agent_ids = list(agent_ids)
        self.map_yaw = float(map_yaw)
        self.map_offset = np.asarray(map_offset, np.float64)
        self.n_frames = n_frames
        c, s = np.cos(self.map_yaw), np.sin(self.map_yaw)
        self._rot = np.array([[c, -s], [s, c]])  # (2, 2) map -> world
        if not 0 <= infrastructure <= len(RSU_CORNERS):
            raise ValueError(f"infrastructure must be 0..{len(RSU_CORNERS)}, got {infrastructure}")
        self.rsu_poses = {}  # id (< 0) -> (6,) world pose of the pole foot (metres, degrees)
        for k, (sx, sy) in enumerate(RSU_CORNERS[:infrastructure]):
            xy = self.map_to_world_xy(np.array([sx, sy]) * RSU_CORNER_OFFSET)
            yaw = np.degrees(np.arctan2(-sy, -sx) + self.map_yaw)  # facing the intersection centre
            self.rsu_poses[-(k + 1)] = np.array([xy[0], xy[1], 0.0, 0.0, (yaw + 180.0) % 360.0 - 180.0, 0.0])
        self.tilt = None  # (V, n_frames, 2) roll, pitch of every vehicle in degrees (None: level)

    def set_tilt(self, rng, sigma_deg):
        """Give every vehicle a body roll and pitch: a constant offset (std ``sigma_deg``) plus per-frame jitter
        (std ``sigma_deg / 4``), degrees. The ray-cast boxes stay upright; poses, mounted sensors and the YAML
        ``angle`` entries carry the attitude (real OPV2V poses and angles have non-zero roll and pitch)."""
        n = len(self.vehicles.ids)
        self.tilt = (rng.normal(0.0, sigma_deg, (n, 1, 2)) + rng.normal(0.0, sigma_deg / 4, (n, self.n_frames, 2)))

    def attitude(self, vid, frame):
        """(roll, pitch) of a vehicle at ``frame``, degrees (0, 0 without tilt and for road-side units)."""
        if self.tilt is None or vid in self.rsu_poses:
            return 0.0, 0.0
        roll, pitch = self.tilt[self.vehicle_index(vid), frame]
        return float(roll), float(pitch)

    @property
    def infrastructure_ids(self):
        """Ids of the road-side units (-1, -2, ...); their folders are named like that."""
        return list(self.rsu_poses)

    def map_to_world_xy(self, xy):
        """(..., 2) map-frame x/y -> world x/y."""
        return xy @ self._rot.T + self.map_offset

    def world_to_map_xy(self, xy):
        """(..., 2) world x/y -> map-frame x/y."""
        return (xy - self.map_offset) @ self._rot

    def vehicle_states(self, frame):
        """World poses of every vehicle at ``frame``.

        Returns:
            location (V, 3) actor origins (z = 0, on the ground) and yaw (V,) in radians, world frame.
        """
        v = self.vehicles
        t = frame * FRAME_DT
        direction = np.stack([np.cos(v.heading), np.sin(v.heading)], axis=1)  # (V, 2)
        xy = self.map_to_world_xy(v.start + direction * (v.speed * t)[:, None])  # (V, 2)
        location = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)  # (V, 3)
        yaw = np.arctan2(np.sin(v.heading + self.map_yaw), np.cos(v.heading + self.map_yaw))
        return location, yaw

    def boxes(self, frame):
        """Static structures + vehicles at ``frame`` as one :class:`Boxes` (world frame)."""
        location, yaw = self.vehicle_states(frame)
        v = self.vehicles
        return Boxes(center=np.concatenate([self.static.center, location + v.center]),
                     half=np.concatenate([self.static.half, v.half]),
                     yaw=np.concatenate([self.static.yaw, yaw]),
                     ids=np.concatenate([self.static.ids, v.ids]),
                     color=np.concatenate([self.static.color, v.color]))

    def vehicle_index(self, vid):
        """Row of vehicle ``vid`` in :attr:`vehicles`."""
        return int(np.flatnonzero(self.vehicles.ids == vid)[0])

    def actor_pose(self, vid, frame):
        """World pose ``[x, y, z, roll, yaw, pitch]`` (metres, degrees) of a vehicle's actor origin (a road-side
        unit, ``vid < 0``: the fixed pole foot)."""
        if vid in self.rsu_poses:
            return self.rsu_poses[vid].copy()
        location, yaw = self.vehicle_states(frame)
        i = self.vehicle_index(vid)
        roll, pitch = self.attitude(vid, frame)
        return np.array([*location[i], roll, np.degrees(yaw[i]), pitch])

    def mounted_pose(self, vid, frame, mount):
        """World pose of a sensor mounted at ``mount`` = (x, y, z, yaw deg) in the vehicle frame.

        Returns:
            (6,) ``[x, y, z, roll, yaw, pitch]`` in metres and degrees (the body's roll and pitch, 0 when level).
        """
        pose = self.actor_pose(vid, frame)
        if pose[3] != 0.0 or pose[5] != 0.0:  # tilted body: compose the transforms
            return tfm_to_pose(x_to_world(pose) @ x_to_world([mount[0], mount[1], mount[2], 0.0, mount[3], 0.0]))
        xyz = x_to_world(pose) @ np.array([mount[0], mount[1], mount[2], 1.0])  # (4,)
        yaw = (pose[4] + mount[3] + 180.0) % 360.0 - 180.0
        return np.array([xyz[0], xyz[1], xyz[2], 0.0, yaw, 0.0])

    def lidar_pose(self, vid, frame):
        """World pose of an agent's LiDAR (vehicles 1.9 m, road-side units 3.0 m above the ground), metres and
        degrees."""
        if vid in self.rsu_poses:
            return self.mounted_pose(vid, frame, (0.0, 0.0, RSU_LIDAR_HEIGHT, 0.0))
        return self.mounted_pose(vid, frame, (*LIDAR_MOUNT, 0.0))

    def surface_class(self, map_xy):
        """(..., 2) map x/y -> (...,) int surface class: 0 asphalt, 1 parking lane/sidewalk, 2 off-road."""
        ax, ay = np.abs(map_xy[..., 0]), np.abs(map_xy[..., 1])
        lateral = np.minimum(ax, ay)  # distance to the nearest road axis
        return np.where(lateral < ROAD_HALF, 0, np.where(lateral < BUILD_START, 1, 2))


def _vehicle_color(rng):
    """A saturated random paint colour (uint8 RGB)."""
    hue = rng.random()
    k = (np.array([5.0, 3.0, 1.0]) + hue * 6.0) % 6.0
    rgb = 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0) * 0.8
    return (rgb * 235).astype(np.uint8)


def _random_car(rng):
    """Half extents (l/2, w/2, h/2) and actor->bbox centre offset of a passenger car, metres."""
    half = np.array([rng.uniform(1.9, 2.5), rng.uniform(0.9, 1.1), rng.uniform(0.65, 0.85)])
    center = np.array([rng.uniform(-0.02, 0.02), rng.uniform(-0.01, 0.01), half[2]])
    return half, center


def _trajectory(start, heading, speed, n_frames):
    """(T, 2) map x/y of a constant-velocity vehicle."""
    t = np.arange(n_frames) * FRAME_DT
    return start[None] + np.array([np.cos(heading), np.sin(heading)])[None] * (speed * t)[:, None]


def _is_free(track, tracks, clearance=MIN_CLEARANCE):
    """True when ``track`` (T, 2) keeps ``clearance`` from every accepted track (A, T, 2) at every frame."""
    if not tracks:
        return True
    gaps = np.linalg.norm(np.stack(tracks) - track[None], axis=2)  # (A, T)
    return bool(gaps.min() > clearance)


def _lane_point(heading, lateral, s, road):
    """Map x/y of arc position ``s`` on a lane of the x-road (road 'x') or the y-road (road 'y')."""
    if road == "x":
        return np.array([s, lateral]), heading
    return np.array([-lateral, s]), heading + np.pi / 2


def _place_agents(rng, n_agents, n_frames, tracks):
    """Choose agent cars on different legs of the intersection (E/W/N/S, then doubling up).

    Returns:
        list of (start (2,), heading, speed) in the map frame; ``tracks`` receives their trajectories.
    """
    for _ in range(200):
        legs = list(rng.permutation(list(_LEGS)))
        chosen, local_tracks = [], []
        for i in range(n_agents):
            leg = legs[i % 4]
            ux, uy = _LEGS[leg]
            road = "x" if ux != 0 else "y"
            heading, lateral = _X_LANES[rng.integers(len(_X_LANES))]
            dist = rng.uniform(10.0, 28.0)
            s = dist * (ux + uy)
            start, yaw = _lane_point(heading, lateral, s, road)
            speed = 0.0 if rng.random() < 0.25 else rng.uniform(2.0, 8.0)
            track = _trajectory(start, yaw, speed, n_frames)
            if not _is_free(track, local_tracks, clearance=10.0):
                break
            chosen.append((start, yaw, speed))
            local_tracks.append(track)
        if len(chosen) == n_agents:
            ego = local_tracks[0]
            reach = max(np.linalg.norm(t - ego, axis=1).max() for t in local_tracks)
            if reach <= 65.0:
                tracks.extend(local_tracks)
                return chosen
    raise RuntimeError(f"could not place {n_agents} agents without collisions")


def _buildings(rng):
    """Static structures of the four corner blocks, map frame: (centers (S,3), half (S,3), colors (S,3))."""
    centers, halves, colors = [], [], []
    for sx in (-1.0, 1.0):
        for sy in (-1.0, 1.0):
            for along_x in (True, False):
                s = BUILD_START + (0.0 if along_x else rng.uniform(0.0, 6.0))
                while s < EXTENT:
                    length = rng.uniform(8.0, 30.0)
                    if rng.random() < 0.85:  # a building
                        depth, height = rng.uniform(8.0, 18.0), rng.uniform(5.0, 25.0)
                        a, b = s + length / 2, BUILD_START + depth / 2
                        half = [length / 2, depth / 2, height / 2]
                        color = np.array([215, 195, 160]) + rng.integers(-20, 21, 3)
                    else:  # a garden wall along the sidewalk
                        height = rng.uniform(1.2, 2.8)
                        a, b = s + length / 2, BUILD_START - 0.5
                        half = [length / 2, 0.15, height / 2]
                        color = np.array([150, 120, 100])
                    x, y = (sx * a, sy * b) if along_x else (sx * b, sy * a)
                    if not along_x:
                        half = [half[1], half[0], half[2]]
                    centers.append([x, y, half[2]])
                    halves.append(half)
                    colors.append(np.clip(color, 0, 255))
                    s += length + rng.uniform(1.0, 8.0)
    return np.array(centers), np.array(halves), np.array(colors, np.uint8)


def build_world(rng, n_agents, n_frames, traffic_gap=(12.0, 40.0), parked_gap=(10.0, 40.0), infrastructure=0):
    """Generate one scenario.

    Args:
        rng: ``np.random.Generator`` (the whole scene is a function of its state).
        n_agents: connected vehicles (2..8).
        n_frames: saved frames (10 Hz).
        infrastructure: road-side units (0..4); placed without random draws, so the rest of the scene is the
            same for every value.
        traffic_gap: (min, max) metres between consecutive moving vehicles on a lane.
        parked_gap: (min, max) metres between parked cars at the curb.

    Returns:
        :class:`World`.
    """
    tracks = []
    agents = _place_agents(rng, n_agents, n_frames, tracks)
    starts, headings, speeds = [a[0] for a in agents], [a[1] for a in agents], [a[2] for a in agents]
    # Moving traffic, lane by lane; candidates that would collide with earlier vehicles are dropped.
    for road in ("x", "y"):
        for heading, lateral in _X_LANES:
            s = -EXTENT + rng.uniform(0.0, traffic_gap[1])
            while s < EXTENT:
                start, yaw = _lane_point(heading, lateral, s, road)
                speed = rng.uniform(4.0, 12.0)
                track = _trajectory(start, yaw, speed, n_frames)
                if _is_free(track, tracks):
                    tracks.append(track)
                    starts.append(start)
                    headings.append(yaw)
                    speeds.append(speed)
                s += rng.uniform(*traffic_gap)
    # Parked cars along the curbs, away from the intersection.
    for road in ("x", "y"):
        for side in (-1.0, 1.0):
            s = -EXTENT + rng.uniform(0.0, parked_gap[1])
            while s < EXTENT:
                if abs(s) > BUILD_START + 3.0:
                    heading = 0.0 if side > 0 else np.pi
                    start, yaw = _lane_point(heading, side * PARK_OFFSET, s, road)
                    track = _trajectory(start, yaw, 0.0, n_frames)
                    if _is_free(track, tracks):
                        tracks.append(track)
                        starts.append(start)
                        headings.append(yaw)
                        speeds.append(0.0)
                s += rng.uniform(*parked_gap)
    n = len(starts)
    cars = [_random_car(rng) for _ in range(n)]
    vehicles = Vehicles(
        ids=rng.choice(np.arange(100, 5000), size=n, replace=False).astype(np.int64),
        half=np.array([c[0] for c in cars]),
        center=np.array([c[1] for c in cars]),
        start=np.array(starts),
        heading=np.array(headings, np.float64),
        speed=np.array(speeds, np.float64),
        color=np.array([_vehicle_color(rng) for _ in range(n)], np.uint8))
    map_yaw = rng.uniform(-np.pi, np.pi)
    map_offset = rng.uniform(-300.0, 300.0, 2)
    b_center, b_half, b_color = _buildings(rng)
    c, s = np.cos(map_yaw), np.sin(map_yaw)
    world_xy = b_center[:, :2] @ np.array([[c, -s], [s, c]]).T + map_offset
    static = Boxes(center=np.concatenate([world_xy, b_center[:, 2:]], axis=1), half=b_half,
                   yaw=np.full(len(b_half), np.arctan2(s, c)), ids=np.full(len(b_half), -1, np.int64),
                   color=b_color)
    return World(static, vehicles, vehicles.ids[:n_agents].tolist(), map_yaw, map_offset, n_frames, infrastructure)
