"""Convolutional GRU (Shi et al. 2015 / Ballas et al. 2016): GRU gates computed by 2-D convolutions."""
import torch
import torch.nn as nn


class ConvGRUCell(nn.Module):
    """One ConvGRU step.

    r, z = sigmoid(conv_gates([x; h])); h~ = tanh(conv_can([x; r * h])); h' = (1 - z) * h + z * h~.

    Args:
        input_dim: channels of x.
        hidden_dim: channels of h.
        kernel_size: (kh, kw), odd.
        bias: convolution bias.
    """

    def __init__(self, input_dim, hidden_dim, kernel_size, bias=True):
        super().__init__()
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
        self.hidden_dim = hidden_dim
        self.conv_gates = nn.Conv2d(input_dim + hidden_dim, 2 * hidden_dim, kernel_size, padding=padding, bias=bias)
        self.conv_can = nn.Conv2d(input_dim + hidden_dim, hidden_dim, kernel_size, padding=padding, bias=bias)

    def forward(self, x, h):
        """Args: x (B, C_in, H, W); h (B, C_h, H, W). Returns h' (B, C_h, H, W)."""
        reset, update = torch.sigmoid(self.conv_gates(torch.cat([x, h], dim=1))).split(self.hidden_dim, dim=1)
        candidate = torch.tanh(self.conv_can(torch.cat([x, reset * h], dim=1)))
        return (1 - update) * h + update * candidate


class ConvGRU(nn.Module):
    """Stacked ConvGRU over a sequence, hidden states starting at zero.

    Args:
        input_dim: channels of the input sequence.
        hidden_dims: channels of each layer's hidden state.
        kernel_sizes: (kh, kw) of each layer.
        bias: convolution bias.
    """

    def __init__(self, input_dim, hidden_dims, kernel_sizes, bias=True):
        super().__init__()
        dims = [input_dim] + list(hidden_dims)
        self.cell_list = nn.ModuleList(ConvGRUCell(dims[i], dims[i + 1], tuple(kernel_sizes[i]), bias)
                                       for i in range(len(hidden_dims)))

    def forward(self, x, h0=None):
        """Args: x (B, T, C_in, H, W); h0 (B, C_h, H, W) initial hidden state of every layer (None: zeros).
        Returns the last layer's states (B, T, C_h, H, W)."""
        for cell in self.cell_list:
            h = x.new_zeros(x.shape[0], cell.hidden_dim, *x.shape[3:]) if h0 is None else h0
            states = []
            for t in range(x.shape[1]):
                h = cell(x[:, t], h)
                states.append(h)
            x = torch.stack(states, dim=1)
        return x
