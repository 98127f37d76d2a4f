"""Flax models of ce_jax."""
