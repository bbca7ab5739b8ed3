"""benchmark_zoo.py on the tiny world: one method, one epoch; the results table holds the run's real numbers."""
import os
import re

import yaml

from opencood.tools import benchmark_zoo

FCOOPER = "opencood/hypes_yaml/demo/zoo/lidar_fcooper.yaml"


def test_one_method_table_is_written_with_measured_numbers(tiny_world, tmp_path):
    out = tmp_path / "results.md"
    broken = tmp_path / "lidar_broken.yaml"  # a method whose config is wrong: its row says so, the others run
    broken.write_text(f"_base_: {os.path.abspath(FCOOPER)}\nname: zoo_lidar_broken\nmodel:\n  args:\n    fusion_methd: max\n")
    argv = ["--configs", FCOOPER, str(broken), "--epochs", "1", "--world", tiny_world, "--log_root", str(tmp_path / "logs"),
            "--out", str(out)]
    row, failed = benchmark_zoo.main(argv)
    assert "fusion_methd" in failed["error"]
    text = out.read_text()
    assert row["mode"] == "intermediate" and row["epochs"] == 1 and row["params"] > 0
    # the table repeats what the eval files of the run say
    gs = yaml.safe_load(open(sorted((tmp_path / "logs").glob("zoo_lidar_fcooper_*/eval_global_sort_intermediate_*.yaml"))[0]))
    line = next(ln for ln in text.splitlines() if ln.startswith("| lidar_fcooper | intermediate"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert [float(c) for c in cells[2:5]] == [round(gs[k], 3) for k in ("ap30", "ap_50", "ap_70")]
    assert cells[8] == f"{row['params']:,}"
    # 64 channels x 32 x 64 cells x float32, every collaborator, every frame
    assert cells[9].startswith("524,288 (2^19.0)") and gs["comm_bytes_per_agent"] == 524288
    assert float(cells[10]) > 0
    ego = next(ln for ln in text.splitlines() if ln.startswith("| lidar_fcooper | ego only (-f no)"))
    assert "| 0 |" in ego
    assert re.search(r"lidar_fcooper: intermediate fusion (beats|ties with|does NOT beat) ego-only", text)
    assert "| lidar_broken | failed: " in text and "- lidar_broken: did not run to the end" in text
    assert "Reproduce: `python opencood/tools/benchmark_zoo.py --configs" in text and "torch " in text
