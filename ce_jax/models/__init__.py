"""Flax models of ce_jax, by name: ``ce_jax.models.get('resnext29', cardinality=37, base_width=10)``.

* :mod:`ce_jax.models.dense`       NTK-parameterized dense member and block-diagonal ensemble.
* :mod:`ce_jax.models.bottleneck`  NTK-parameterized ResNet bottleneck block (for alpha).
* :mod:`ce_jax.models.resnext`     ResNeXt-29/38/50/101 (cardinality 1, width 64 = ResNet).
* :mod:`ce_jax.models.wrn`         Wide ResNets.
* :mod:`ce_jax.models.layers`      fast grouped convolution and BatchNorm (drop-in for nn.*).
"""

from ce_jax.models.registry import get, names

__all__ = ['get', 'names']
