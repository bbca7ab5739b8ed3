"""On-disk formats the synthetic world can be written in (``make_synthetic.py --format NAME``).

A format is a function registered in :data:`SYNTHETIC_FORMATS`::

    @SYNTHETIC_FORMATS.register("opv2v")
    def write(root, preset="tiny", seed=0, workers=1, **options) -> summary dict

``options`` are the ``make_synthetic.py`` overrides (``scenarios``, ``agents``, ``frames``, ``beams``,
``h_res``, ``image_size``, ``render_scale``, ``cameras``, ``pcd_encoding``, ``infrastructure``; None = the
preset's or the format's value); a format ignores the ones it has no use for. The summary has at least
``files``, ``root``, ``seconds``, ``scenarios`` ({split: [names]}), ``points_per_cloud`` ({mean, min, max}),
``mean_objects_per_agent`` and ``frac_seen_only_by_others``. Each module of this package registers its format on import.
"""
from opencood.utils.registry import Registry

SYNTHETIC_FORMATS = Registry("make_synthetic --format", "opencood.data_utils.synthetic.formats")
