"""Native code: the oneDNN convolutions for XLA:CPU (:mod:`ce_jax.models.native.onednn`).

``csrc/onednn_conv.cc`` holds the XLA FFI handlers (forward, backward data, backward weights,
both backward passes in one call); ``python -m ce_jax.models.native.onednn build`` compiles them
(``make install`` does; nothing else compiles), and :class:`ce_jax.models.layers.GroupedConv`
calls them where :func:`ce_jax.models.layers.choose_impl` says so.
"""
