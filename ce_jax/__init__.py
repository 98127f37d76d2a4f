"""ce_jax: Collegial Ensembles in JAX/Flax."""

__version__ = "0.1.0"
