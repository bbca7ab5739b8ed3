"""BEV pictures of point clouds, GT and predictions (see vis_utils)."""
