"""The post-processor and losses as they were before the anchor head (commit 8bbcb19), for bit-identity tests.

The sources are read with ``git show`` (read-only) and executed as private modules, so the reference runs in
the same environment as the code under test: the comparison is exact on any CPU/GPU and torch build. Without
a git checkout holding that commit the tests that need it are skipped.
"""
import os
import re
import subprocess
import types

import pytest

REF_COMMIT = "8bbcb19"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
_REGISTER = re.compile(r"^@\w+\.register\(.*\)$", re.M)


def load_reference(path, inject=None):
    """Module object of ``path`` at :data:`REF_COMMIT`.

    Registry decorators are dropped (the names stay registered to today's classes), and single-line
    ``from ... import NAME`` statements whose names are all in ``inject`` are replaced by those objects
    (so the reference's subclasses extend the reference's base classes).
    """
    try:
        out = subprocess.run(["git", "-C", REPO, "show", f"{REF_COMMIT}:{path}"], capture_output=True, text=True,
                             check=False)
    except OSError:
        pytest.skip("git is not available")
    if out.returncode != 0:
        pytest.skip(f"reference commit {REF_COMMIT} is not in this checkout")
    inject = dict(inject or {})
    lines = []
    for line in _REGISTER.sub("", out.stdout).splitlines():
        m = re.match(r"^from \S+ import (.+)$", line)
        if m and all(name.strip() in inject for name in m.group(1).split(",")):
            continue
        lines.append(line)
    module = types.ModuleType(f"reference_{os.path.basename(path)[:-3]}")
    module.__dict__.update(inject)
    exec(compile("\n".join(lines), f"{REF_COMMIT}:{path}", "exec"), module.__dict__)
    return module


def reference_modules():
    """``(voxel_postprocessor, {loss name: loss class})`` of the reference commit."""
    pp = load_reference("opencood/data_utils/post_processor/voxel_postprocessor.py")
    ppl = load_reference("opencood/loss/point_pillar_loss.py", {"direction_target": pp.direction_target})
    depth = load_reference("opencood/loss/point_pillar_depth_loss.py", {"PointPillarLoss": ppl.PointPillarLoss})
    gen = load_reference("opencood/loss/point_pillar_gencomm_loss.py",
                         {"PointPillarDepthLoss": depth.PointPillarDepthLoss})
    return pp, {"point_pillar_loss": ppl.PointPillarLoss, "point_pillar_depth_loss": depth.PointPillarDepthLoss,
                "point_pillar_gencomm_loss": gen.PointPillarGenCommLoss}
