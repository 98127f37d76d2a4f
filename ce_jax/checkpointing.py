"""Orbax checkpoints for the trainer: keep the last k, resume from the newest readable one.

A checkpoint at step ``s`` holds two items: ``state`` (the unreplicated train state: step,
params, batch_stats, optimizer state) and ``meta`` (JSON: step, epoch, data position, batch size,
seed). Orbax writes each step into a temporary directory and renames it when complete, so a run
killed while saving leaves no half-written step behind; a step that is nevertheless unreadable
(truncated or corrupted files) is moved to ``<directory>/../checkpoints_corrupt/`` with a
warning and the previous step is restored instead.

orbax is imported lazily.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from absl import logging

__all__ = ['Checkpointer']


class Checkpointer:
  """Saves every call to :meth:`save`; keeps the newest ``keep`` steps.

  Args:
    directory: where the numbered step directories live (created if missing).
    keep: how many checkpoints to keep (the oldest are deleted).
    asynchronous: write in a background thread (the default; :meth:`close` waits).
  """

  def __init__(self, directory: str, keep: int = 3, asynchronous: bool = True):
    self.directory = os.path.abspath(directory)
    self.keep = int(keep)
    self.asynchronous = asynchronous
    self._manager = self._make_manager()

  def _make_manager(self):
    import orbax.checkpoint as ocp
    options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True,
                                           enable_async_checkpointing=self.asynchronous)
    return ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'meta'))

  def steps(self) -> list[int]:
    """Complete checkpoint steps, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves ``state`` (a pytree of host or device arrays) and ``meta`` (JSON) at ``step``."""
    import orbax.checkpoint as ocp
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))), force=True)

  def restore_latest(self, target: Any) -> tuple[Any, dict] | None:
    """Restores the newest readable checkpoint into the structure of ``target``.

    Returns ``(state, meta)``, or ``None`` when there is no checkpoint. Unreadable steps are
    moved aside with a warning and the next older one is tried.

    Raises:
      ValueError: the checkpoint is readable but holds another structure (another model or
        optimizer): the checkpoints are left alone.
    """
    import jax
    import orbax.checkpoint as ocp
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    moved = False
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored['state'], dict(restored['meta'])
      except Exception as e:  # pylint: disable=broad-except
        if 'tree structures do not match' in str(e) or 'does not match' in str(e):
          raise ValueError(
              f'the checkpoint at step {step} in {self.directory} holds a different model or '
              f'optimizer than this config; use a fresh --workdir (or the original config)'
          ) from None
        logging.warning('checkpoint step %d in %s is unreadable (%s: %s); falling back to the '
                        'previous one', step, self.directory, type(e).__name__,
                        str(e).splitlines()[0][:200] if str(e) else '')
        self._move_aside(step)
        moved = True
    if moved:
      logging.warning('no readable checkpoint left in %s; starting from scratch', self.directory)
    return None

  def _move_aside(self, step: int) -> None:
    import jax
    if jax.process_index() == 0:
      src = os.path.join(self.directory, str(step))
      dst_dir = os.path.join(os.path.dirname(self.directory), 'checkpoints_corrupt')
      os.makedirs(dst_dir, exist_ok=True)
      dst = os.path.join(dst_dir, str(step))
      if os.path.exists(dst):
        shutil.rmtree(dst)
      if os.path.exists(src):
        shutil.move(src, dst)
    self._manager.close()
    self._manager = self._make_manager()

  def wait(self) -> None:
    """Blocks until pending asynchronous saves are on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
