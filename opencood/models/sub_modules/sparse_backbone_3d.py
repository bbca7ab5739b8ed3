"""VoxelBackBone8x: the sparse 3D convolution trunk of SECOND (spec baselines §A2), built on spconv 2.x.

Stages (all BatchNorm1d(eps 1e-3, momentum 0.01) + ReLU, ``indice_key`` shared inside a stage):
``conv_input`` SubM(C_in->16) | ``conv1`` SubM(16) | ``conv2`` SpConv s2 (16->32) + 2 SubM |
``conv3`` s2 (32->64) + 2 SubM | ``conv4`` s2 padding (0,1,1) (64->64) + 2 SubM |
``conv_out`` SparseConv k(3,1,1) s(2,1,1) (64->C_out). x/y are downsampled by 8, z by 16 (41 -> 2).
"""
import torch.nn as nn

from opencood.utils.errors import ConfigError
from opencood.utils.spconv_utils import import_spconv, spconv_has_cuda


def _bn(channels):
    return nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)


def _block(spconv, in_ch, out_ch, indice_key, stride=1, padding=1, conv_type="subm"):
    """conv (submanifold or strided sparse, kernel 3, no bias) + BN1d + ReLU."""
    if conv_type == "subm":
        conv = spconv.SubMConv3d(in_ch, out_ch, 3, bias=False, indice_key=indice_key)
    else:
        conv = spconv.SparseConv3d(in_ch, out_ch, 3, stride=stride, padding=padding, bias=False,
                                   indice_key=indice_key)
    return spconv.SparseSequential(conv, _bn(out_ch), nn.ReLU())


class VoxelBackBone8x(nn.Module):
    """Sparse 3D backbone on voxels of shape (z, y, x) = ``sparse_shape``.

    Args:
        input_channels: per-voxel feature size (4 after MeanVFE).
        num_features_out: channels of the output volume (64).
        sparse_shape: (3,) voxel grid (z, y, x) = grid_size[::-1] + [1, 0, 0].
    """

    def __init__(self, input_channels, num_features_out, sparse_shape):
        super().__init__()
        spconv = import_spconv("model.args.encoder_args.spconv")
        self.sparse_shape = [int(v) for v in sparse_shape]
        self.num_point_features = int(num_features_out)
        self.conv_input = spconv.SparseSequential(
            spconv.SubMConv3d(input_channels, 16, 3, padding=1, bias=False, indice_key="subm1"),
            _bn(16), nn.ReLU())
        self.conv1 = spconv.SparseSequential(_block(spconv, 16, 16, "subm1"))
        self.conv2 = spconv.SparseSequential(
            _block(spconv, 16, 32, "spconv2", stride=2, padding=1, conv_type="spconv"),
            _block(spconv, 32, 32, "subm2"), _block(spconv, 32, 32, "subm2"))
        self.conv3 = spconv.SparseSequential(
            _block(spconv, 32, 64, "spconv3", stride=2, padding=1, conv_type="spconv"),
            _block(spconv, 64, 64, "subm3"), _block(spconv, 64, 64, "subm3"))
        self.conv4 = spconv.SparseSequential(
            _block(spconv, 64, 64, "spconv4", stride=2, padding=(0, 1, 1), conv_type="spconv"),
            _block(spconv, 64, 64, "subm4"), _block(spconv, 64, 64, "subm4"))
        self.conv_out = spconv.SparseSequential(
            spconv.SparseConv3d(64, num_features_out, (3, 1, 1), stride=(2, 1, 1), padding=0, bias=False,
                                indice_key="spconv_down2"),
            _bn(num_features_out), nn.ReLU())

    @staticmethod
    def output_shape(sparse_shape):
        """(z, y, x) size of the output volume for an input ``sparse_shape`` (z, y, x)."""
        z, y, x = (int(v) for v in sparse_shape)

        def down(n, pad):  # kernel 3, stride 2
            return (n + 2 * pad - 3) // 2 + 1

        z, y, x = down(z, 1), down(y, 1), down(x, 1)  # conv2
        z, y, x = down(z, 1), down(y, 1), down(x, 1)  # conv3
        z, y, x = down(z, 0), down(y, 1), down(x, 1)  # conv4 (no z padding)
        return down(z, 0), y, x  # conv_out: kernel 3, stride 2 in z only

    def forward(self, voxel_features, voxel_coords, batch_size):
        """Args:
            voxel_features: (V, C_in) float.
            voxel_coords: (V, 4) int [batch_idx, z, y, x].
            batch_size: number of samples (agents) N.

        Returns:
            (N, C_out, Z', Y/8, X/8) dense volume.
        """
        spconv = import_spconv("model.args.encoder_args.spconv")
        if voxel_features.is_cuda and not spconv_has_cuda():
            raise ConfigError("model.args.encoder_args.spconv: the installed spconv is the CPU-only build; "
                              "install spconv-cu12x (matching your CUDA) to run SECOND on the GPU")
        x = spconv.SparseConvTensor(voxel_features, voxel_coords.int(), self.sparse_shape, batch_size)
        x = self.conv1(self.conv_input(x))  # stride 1
        x = self.conv4(self.conv3(self.conv2(x)))  # stride 8 in x/y
        return self.conv_out(x).dense()  # (N, C_out, Z', Y/8, X/8)
