"""The one allow-list of config keys that the reference repositories' YAMLs carry without effect here.

A key that no component declares is an error ("unknown key ...; did you mean ...?"), except when it matches
one of these dotted ``fnmatch`` patterns (``*`` matches any part of a path, dots included). Each entry says
why the key has no effect. A run prints one info line listing the ignored keys it met.
"""

LEGACY_KEYS = {
    # --- top level / trainer -------------------------------------------------------------------------
    "label_type": "evaluation GT is always the LiDAR labels (HEAL's camera-label switch is not used)",
    "wild_setting": "OpenCOOD's wild-setting block: async/loc noise live in noise_setting here",
    "train_params.max_cav_num": "HEAL alias never read; train_params.max_cav is",
    "kd_flag": "knowledge distillation is not built yet",
    "box_align": "CoAlign's box alignment is not built yet",
    "only_vis_ego": "visualisation flag of OpenCOOD's inference script",
    "train_params.single_weight": "weight of HEAL's single-agent supervision; no model here has single heads",

    # --- datasets / pre-processing ---------------------------------------------------------------------

    # --- models ----------------------------------------------------------------------------------------

    # --- post-processing / loss ------------------------------------------------------------------------
}
