"""The shipped GenComm YAML sets are exactly what the generator writes (no hand-edited drift)."""
import filecmp
import os

from opencood.tools import make_gencomm_yamls as gen


def test_shipped_yamls_match_generator(tmp_path):
    for params, shipped, small in ((dict(gen.FULL, prefix=""), gen.FULL_DIR, False), (gen.DEMO, gen.DEMO_DIR, True)):
        out = tmp_path / os.path.basename(os.path.dirname(shipped)) / "gencomm"
        files = gen.write_set(str(out), params, small=small)
        assert len(files) == 8
        for rel in files:
            assert filecmp.cmp(out / rel, os.path.join(shipped, rel), shallow=False), rel
