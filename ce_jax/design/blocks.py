"""Closed forms for one ensemble member ("path") of the paper's blocks: beta(n) and S(n).

These are the quantities the search of Section 3 works with:

* ``beta(n)``: parameters of ONE member (dense network) or ONE path of a bottleneck block.
* ``S(n)``: the fan-in sum of Assumption 1, ``Var(K) ~ C (exp(alpha S) - 1)``.

Dense member (paper Eq. 3): ``depth`` weight matrices, hidden widths ``n_1..n_{depth-1}``,
input ``n_0``, ``k`` outputs, no biases::

    beta = n_0 n_1 + sum_{l=1}^{depth-2} n_l n_{l+1} + n_{depth-1} k
    S    = sum_{l=1}^{depth-1} 1 / n_l                     (hidden widths only)

Bottleneck path (ResNeXt block with ``m`` paths of width ``n``: 1x1 in->n, 3x3 n->n, 1x1 n->out)::

    beta = in * n + 9 n^2 + n * out                       (conv weights, no biases, no BN)
    S    = 1/in + 1/n + 1/n            fan_in_convention='channels' (default, reproduces paper)
    S    = 1/in + 1/(9 n) + 1/n        fan_in_convention='kernel'   (fan-in counts 3x3 taps)

The 'channels' convention counts input channels per group (the grouped 3x3 counted as n);
it reproduces the paper's designs (37x10d, 12x10d). 'kernel' gives n = 7 instead.
All functions accept numpy/jax arrays for ``n`` (vectorized over a width grid).
"""

from __future__ import annotations

from typing import Sequence

from ce_jax import _validate

FAN_IN_CONVENTIONS = ('channels', 'kernel')


def dense_member_params(input_dim: int, widths: Sequence[int], num_outputs: int = 1) -> int:
  """Parameters of one dense member with hidden ``widths`` (no biases). Returns an int."""
  input_dim = _validate.positive_int('input_dim', input_dim)
  widths = _validate.int_list('widths', widths)
  num_outputs = _validate.positive_int('num_outputs', num_outputs)
  dims = (input_dim,) + widths + (num_outputs,)
  return int(sum(a * b for a, b in zip(dims[:-1], dims[1:])))


def dense_fan_in_sum(widths: Sequence[int]) -> float:
  """S = sum of 1/n_l over the hidden widths of a dense member."""
  widths = _validate.int_list('widths', widths)
  return float(sum(1.0 / w for w in widths))


def dense_uniform_params(n, input_dim: int, depth: int, num_outputs: int = 1):
  """beta(n) of a depth-``depth`` member whose hidden layers all have width ``n`` (vectorized).

  ``n``: scalar or array of widths; returns the same shape (float if ``n`` is an array).
  """
  _validate.positive_int('depth', depth, minimum=2)
  _validate.positive_values('n', n)
  input_dim = _validate.positive_int('input_dim', input_dim)
  num_outputs = _validate.positive_int('num_outputs', num_outputs)
  hidden = depth - 1
  return input_dim * n + (hidden - 1) * n * n + n * num_outputs


def dense_uniform_fan_in_sum(n, depth: int):
  """S(n) = (depth - 1) / n for a member with equal hidden widths (vectorized)."""
  _validate.positive_int('depth', depth, minimum=2)
  _validate.positive_values('n', n)
  return (depth - 1) / n


def bottleneck_path_params(n, in_channels: int = 256, out_channels: int = 256):
  """beta(n) of one bottleneck path: ``in*n + 9 n^2 + n*out`` conv weights (vectorized)."""
  _validate.positive_values('n', n)
  in_channels = _validate.positive_int('in_channels', in_channels)
  out_channels = _validate.positive_int('out_channels', out_channels)
  return in_channels * n + 9 * n * n + n * out_channels


def bottleneck_fan_in_sum(n, in_channels: int = 256, fan_in_convention: str = 'channels'):
  """S(n) of one bottleneck path under ``fan_in_convention`` ('channels' or 'kernel')."""
  _validate.choice('fan_in_convention', fan_in_convention, FAN_IN_CONVENTIONS)
  _validate.positive_values('n', n)
  in_channels = _validate.positive_int('in_channels', in_channels)
  grouped = n if fan_in_convention == 'channels' else 9 * n
  return 1.0 / in_channels + 1.0 / grouped + 1.0 / n
