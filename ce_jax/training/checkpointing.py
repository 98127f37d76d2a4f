"""Orbax checkpoints for the trainer: keep the last k, resume from the newest readable one.

A checkpoint at step ``s`` holds two items: ``state`` (the unreplicated train state: step,
params, batch_stats, optimizer state) and ``meta`` (JSON: step, epoch, data position, batch size,
seed). Orbax writes each step into a temporary directory and renames it when complete, so a run
killed while saving leaves no half-written step behind; a step that is nevertheless unreadable
(truncated or corrupted files) is moved to ``<directory>/../checkpoints_corrupt/`` with a
warning and the previous step is restored instead. Temporary directories left by a run killed
while saving are removed when the next run opens the directory.

A save that fails for lack of space (``ENOSPC``; orbax raises tensorstore's
``RESOURCE_EXHAUSTED``), or another write error, raises :class:`ce_jax.tools.guards.DiskFullError` /
:class:`ce_jax.tools.guards.WriteFailedError` with one line naming the step directory and the last
complete checkpoint; asynchronous saves report it at the next save or at :meth:`close`. The
earlier checkpoints are left intact (orbax deletes old steps only after a save completes).

orbax is imported lazily.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from typing import Any

import jax
from absl import logging

from ce_jax.tools import guards


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
    self._pending: int | None = None  # the step of an asynchronous save still in flight
    self._failed = False
    self._closed = False
    with guards.writing(self.directory, 'the checkpoint directory'):
      self._manager = self._make_manager()

  def _make_manager(self):
    import orbax.checkpoint as ocp
    options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True,
                                           enable_async_checkpointing=self.asynchronous,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(self.directory, options=options, item_names=('state', 'meta'))

  def _last_complete(self, failed_step: int) -> str:
    try:
      kept = [s for s in self.steps() if s != failed_step]
    except Exception:  # pylint: disable=broad-except
      kept = []
    return (f'the last complete checkpoint is step {kept[-1]} in {self.directory}' if kept
            else 'no complete checkpoint yet')

  @contextlib.contextmanager
  def _writing(self, step: int):
    try:
      with guards.writing(os.path.join(self.directory, str(step)), f'checkpoint step {step}',
                          hint=lambda: self._last_complete(step)):
        yield
    except guards.RunFailedError:
      self._failed = True
      raise

  def _finish_pending(self) -> None:
    """Waits for the save in flight; its write error is reported here, with its step."""
    step, self._pending = self._pending, None
    if step is None:
      self._manager.wait_until_finished()
      return
    with self._writing(step):
      self._manager.wait_until_finished()

  def steps(self) -> list[int]:
    """Complete checkpoint steps, oldest first."""
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Saves ``state`` (a pytree of host or device arrays) and ``meta`` (JSON) at ``step``."""
    import orbax.checkpoint as ocp
    self._finish_pending()
    with self._writing(int(step)):
      self._manager.save(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(dict(meta))), force=True)
    if self.asynchronous:
      self._pending = int(step)
    else:
      with self._writing(int(step)):
        self._manager.wait_until_finished()

  def restore_latest(self, target: Any) -> tuple[Any, dict] | None:
    """Restores the newest readable checkpoint into the structure of ``target``.

    Returns ``(state, meta)``, or ``None`` when there is no checkpoint. Unreadable steps are
    moved aside with a warning and the next older one is tried.

    Raises:
      ValueError: the checkpoint is readable but holds another structure (another model or
        optimizer): the checkpoints are left alone.
    """
    import orbax.checkpoint as ocp
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    moved = False
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        if 'tree structures do not match' in str(e) or 'does not match' in str(e):
          raise ValueError(
              f'the checkpoint at step {step} in {self.directory} holds a different model or '
              f'optimizer than this config; rerun with --config.overwrite=True to start afresh, '
              f'use a fresh --workdir, or the original config'
          ) from None
        logging.warning('checkpoint step %d in %s is unreadable (%s: %s); falling back to the '
                        'previous one', step, self.directory, type(e).__name__,
                        str(e).splitlines()[0][:200] if str(e) else '')
        self._move_aside(step)
        moved = True
        continue
      mismatch = _shape_mismatch(abstract, restored['state'])
      if mismatch:
        raise ValueError(
            f'the checkpoint at step {step} in {self.directory} holds a different model than '
            f'this config ({mismatch}); rerun with --config.overwrite=True to start afresh, '
            f'use a fresh --workdir, or the original config')
      return restored['state'], dict(restored['meta'])
    if moved:
      logging.warning('no readable checkpoint left in %s; starting from scratch', self.directory)
    return None

  def _move_aside(self, step: int) -> None:
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
    """Blocks until pending asynchronous saves are on disk (write errors: see the module)."""
    self._finish_pending()

  def close(self, raise_errors: bool = True) -> None:
    """Waits for the save in flight and closes the manager.

    ``raise_errors=False`` (cleaning up after another error) swallows write errors. A second
    call does nothing.
    """
    if self._closed:
      return
    self._closed = True
    try:
      if raise_errors and not self._failed:
        self._finish_pending()
    finally:
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        if raise_errors and not self._failed:
          raise


def _shape_mismatch(abstract: Any, restored: Any) -> str:
  """The first leaf whose restored shape differs from the target's (``''`` if none)."""
  want = jax.tree_util.tree_leaves_with_path(abstract)
  got = jax.tree_util.tree_leaves(restored)
  for (path, a), b in zip(want, got):
    shape_a, shape_b = tuple(getattr(a, 'shape', ())), tuple(getattr(b, 'shape', ()))
    if shape_a != shape_b:
      return (f'{jax.tree_util.keystr(path)} has shape {shape_b} there, {shape_a} in this '
              f'model')
  return ''
