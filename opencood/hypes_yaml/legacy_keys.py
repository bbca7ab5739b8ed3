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
    "only_vis_ego": "visualisation flag of OpenCOOD's inference script",
    "model.args.supervise_single": "HEAL's single-agent supervision; only heter_pyramid_collab declares it "
                                   "(its occupancy loss), other models have no single-agent heads",
    "model.args.where2comm.voxel_size": "Where2comm's warp scale; the model normalises the affines over lidar_range",
    "model.args.where2comm.downsample_rate": "Where2comm's warp scale; the model normalises the affines over "
                                             "lidar_range",
    "model.args.where2comm.only_attention": "Where2comm's EncodeLayer switch; the Transformer aggregator is always "
                                            "attention + FFN",
    "model.args.fusion_backbone.anchor_number": "HEAL's copy in the pyramid section; the heads read "
                                                "model.args.anchor_number",
    "train_params.single_weight": "weight of HEAL's single-agent supervision; no model here has single heads",

    # --- datasets / pre-processing ---------------------------------------------------------------------
    "data_dir": "read by HEAL's DAIR-V2X / V2X-Sim loaders only; OPV2V-format splits are root_dir / validate_dir",
    "heter.modality_setting.*.core_method": "HEAL's copy of the encoder name; the encoder is "
                                            "model.args.mX.core_method",
    "heter.modality_setting.*.data_aug_conf.Ncams": "the cameras used are data_aug_conf.cams (their count)",
    "data_aug_conf.Ncams": "the cameras used are data_aug_conf.cams (their count)",
    "fusion.args.grid_conf": "HEAL camera-only configs; camera settings are read from heter.modality_setting",
    "fusion.args.data_aug_conf": "HEAL camera-only configs; camera settings are read from heter.modality_setting",

    # --- models ----------------------------------------------------------------------------------------
    "model.args.ego_modality": "only GenComm stage 2 reads it (its frozen ego types); the other models take "
                               "the ego agent type from heter.ego_modality",
    "model.args.max_cav": "OpenCOOD model copy of train_params.max_cav; models take L from the batch",
    "model.args.*encoder_args.anchor_number": "HEAL's copy in camera encoder sections (its LSS builds no head); "
                                              "the heads read model.args.anchor_number",
    "model.args.*encoder_args.data_aug_conf.*": "camera augmentation is read from heter.modality_setting.mX."
                                                "data_aug_conf; the encoder reads only final_dim",
    "model.args.*.camera_mask_args.cav_lidar_range": "camera maps are cropped onto model.args.lidar_range",
    "model.args.*.camera_mask_args.grid_conf.zbound": "only the x/y bounds of a camera grid set the crop",
    "model.args.*.camera_mask_args.grid_conf.ddiscr": "only the x/y bounds of a camera grid set the crop",
    "model.args.*.camera_mask_args.grid_conf.mode": "only the x/y bounds of a camera grid set the crop",
    "model.args.v2xvit.transformer.encoder.sttf.*": "V2X-ViT's STTF warps with the metric pairwise transforms; "
                                                    "its voxel_size / downsample_rate are not needed",
    "model.args.v2xvit.transformer.encoder.use_RTE": "the reference reads cav_att_config.use_RTE (this copy "
                                                     "is unused there too)",
    "model.args.v2xvit.transformer.encoder.RTE_ratio": "the reference reads cav_att_config.RTE_ratio (this "
                                                       "copy is unused there too)",
    "model.args.v2vnet.conv_gru.H": "the ConvGRU runs on the input map's size",
    "model.args.v2vnet.conv_gru.W": "the ConvGRU runs on the input map's size",
    "model.args.gencomm.model.embed_dim": "never read by the reference's UNet either (it takes in_channels + "
                                          "the message channels)",
    "model.args.diffcomm.model.embed_dim": "never read by the reference's UNet either (it takes in_channels + "
                                           "the message channels)",

    # --- post-processing / loss ------------------------------------------------------------------------
    "*dir_args.anchor_yaw": "direction targets use the anchors' own yaws (postprocess.anchor_args.r)",
    "loss.args.dir.args.anchor_yaw": "direction targets use the anchors' own yaws (postprocess.anchor_args.r)",
    "loss.args.cls.type": "the classification term is always the sigmoid focal loss",
    "loss.args.reg.type": "the regression term is always the weighted smooth-L1 loss",
    "loss.args.reg.codewise": "smooth-L1 is always summed per box code (codewise)",
    "loss.args.dir.type": "the direction term is always the softmax cross-entropy over the bins",
}

# Legacy keys that name what is always used here: any other value is an error, not silently ignored.
LEGACY_VALUES = {
    "loss.args.cls.type": ("SigmoidFocalLoss",),
    "loss.args.reg.type": ("WeightedSmoothL1Loss",),
    "loss.args.dir.type": ("WeightedSoftmaxClassificationLoss",),
}
