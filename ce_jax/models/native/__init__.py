"""Native code: the oneDNN convolutions for XLA:CPU (:mod:`ce_jax.models.native.onednn`).

``csrc/onednn_conv.cc`` holds three XLA FFI handlers (forward, backward data, backward weights);
``python -m ce_jax.models.native.onednn build`` compiles them (``make install`` does), and
:class:`ce_jax.models.layers.GroupedConv` calls them where they apply.
"""
