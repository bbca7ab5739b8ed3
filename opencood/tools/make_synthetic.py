"""Write the embedded synthetic cooperative-driving dataset in a real on-disk format (default OPV2V / OPV2V-H).

Examples::

    python opencood/tools/make_synthetic.py --root dataset --preset demo
    python opencood/tools/make_synthetic.py --root dataset --format opv2v --preset tiny
    python opencood/tools/make_synthetic.py --root dataset --preset tiny --scenarios 2 1 1 --agents 2 4 \\
        --frames 6 --h-res 0.4 --no-cameras --seed 0

Preset values are used for every option not given on the command line.
"""
import argparse
import os
import sys

from opencood.data_utils.augmentor.weather import parse_weather, write_weather_variants
from opencood.data_utils.synthetic import PRESETS
from opencood.data_utils.synthetic.formats import SYNTHETIC_FORMATS
from opencood.data_utils.synthetic.generator import REALISTIC
from opencood.utils.errors import OpencoodError, one_line


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="dataset", help="output folder (default: dataset)")
    p.add_argument("--format", default="opv2v", help="on-disk format: " + ", ".join(SYNTHETIC_FORMATS.names())
                   + " (default: opv2v)")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="base settings (default: demo)")
    p.add_argument("--scenarios", type=int, nargs=3, metavar=("TRAIN", "VALIDATE", "TEST"),
                   help="scenarios per split")
    p.add_argument("--agents", type=int, nargs="+", metavar="N", help="agents per scenario: N, or MIN MAX")
    p.add_argument("--frames", type=int, help="frames per scenario (10 Hz)")
    p.add_argument("--beams", type=int, help="LiDAR channels of the OPV2V clouds (_32/_16 subsample them)")
    p.add_argument("--h-res", type=float, help="LiDAR azimuth step in degrees (controls points per cloud)")
    p.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), help="camera image size")
    p.add_argument("--render-scale", type=int, help="trace images at 1/S resolution and upscale")
    p.add_argument("--no-cameras", action="store_true", help="skip RGB and depth images")
    p.add_argument("--pcd-encoding", choices=("ascii", "binary", "binary_compressed"), help="PCD DATA kind")
    p.add_argument("--infrastructure", type=int, metavar="K",
                   help="road-side units per scenario (agent ids -1..-K; 0..4; default: the format's)")
    p.add_argument("--realistic", action="store_true",
                   help="real-OPV2V traits: body roll/pitch, ~2%% self-hits, TYPE F rgb, agent-YAML variants "
                        "(dairv2x, v2xreal: the first two; their files have no rgb field or OPV2V agent keys)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weather", default=None, help="also write <ts>_fog.pcd / <ts>_snow.pcd beside every cloud: "
                                                   "comma list of fog, snow (augmentor/weather.py)")
    p.add_argument("--weather-severity", type=int, default=3, help="weather severity 1..5 (default 3)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="parallel processes")
    return p.parse_args(argv)


def main(argv=None):
    opt = parse_args(argv)
    if opt.agents is not None and len(opt.agents) > 2:
        print("error: --agents takes N or MIN MAX", file=sys.stderr)
        return 2
    try:
        generate = SYNTHETIC_FORMATS.get(opt.format, "make_synthetic.py --format")
        for kind in opt.weather.split(",") if opt.weather else []:  # bad weather fails before writing
            parse_weather({"type": kind, "severity": opt.weather_severity}, "make_synthetic.py --weather")
        summary = generate(opt.root, preset=opt.preset, seed=opt.seed, workers=opt.workers,
                           scenarios=opt.scenarios, agents=opt.agents, frames=opt.frames, beams=opt.beams,
                           h_res=opt.h_res, image_size=opt.image_size, render_scale=opt.render_scale,
                           cameras=False if opt.no_cameras else None, pcd_encoding=opt.pcd_encoding,
                           infrastructure=opt.infrastructure, **(REALISTIC if opt.realistic else {}))
        if opt.weather:
            n = write_weather_variants(opt.root, opt.weather.split(","), opt.weather_severity, opt.seed)
            print(f"wrote {n} {opt.weather} clouds (severity {opt.weather_severity})")
    except (OpencoodError, ValueError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    pts = summary["points_per_cloud"]
    counts = ", ".join(f"{len(v)} {k}" for k, v in summary["scenarios"].items())
    print(f"wrote {summary['files']} files under {summary['root']} in {summary['seconds']:.1f} s ({counts} scenarios)")
    print(f"points per cloud: mean {pts['mean']:.0f} (min {pts['min']}, max {pts['max']}); "
          f"objects per agent: {summary['mean_objects_per_agent']:.1f}; "
          f"objects seen only by non-ego agents: {100 * summary['frac_seen_only_by_others']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
