"""Fig. 4 ablation: curve designs, vmapped repetitions, the binary."""

import math
import os

import jax
import numpy as np
import pytest

from ce_jax.studies import ablation
from ce_jax.design import blocks, solver
from ce_jax.training import input_pipeline

from conftest import load_json
from forked_binary import binary  # noqa: F401  (module-scoped: each run forked, see there)

pytestmark = pytest.mark.slow

KW = dict(baseline_width=200, depth=6, input_dim=64, num_outputs=10, alpha=3.65)


def test_primal_designs_keep_parameters_within_one_member():
  widths = ablation.default_primal_widths(200, 4, 8)
  designs = ablation.primal_designs(widths, **KW)
  beta_s = blocks.dense_uniform_params(200, 64, 6, 10)
  assert [d.n for d in designs] == sorted(widths) and designs[-1].n == 200
  for d in designs:
    beta = blocks.dense_uniform_params(d.n, 64, 6, 10)
    assert d.params == d.m_int * beta and d.m == pytest.approx(beta_s / beta)
    assert abs(d.params - beta_s) <= beta / 2 + 1e-9, d
  base = designs[-1]
  assert (base.m_int, base.params, base.variance_ratio) == (1, beta_s, 1.0)
  # Var(K) actually varies along the primal curve (its minimum is well below the baseline's).
  assert min(d.variance_ratio for d in designs) < 0.5 < 1.5 < max(d.variance_ratio for d in designs)


def test_dual_designs_keep_variance_and_vary_parameters():
  designs = ablation.dual_designs(ablation.default_dual_multiplicities(200, 4, 6, 3.65, 8), **KW)
  assert len(designs) >= 5 and designs[0].m_int == 1 and designs[0].n == 200
  for d in designs:
    assert abs(math.log(d.variance_ratio)) < math.log(1.05), d
    # independent: the ratio from the variance law directly.
    v = math.expm1(3.65 * 5 / d.n) / d.m_int / math.expm1(3.65 * 5 / 200)
    assert d.variance_ratio == pytest.approx(v, rel=1e-12)
  params = [d.params for d in designs]
  assert max(params) / min(params) > 3  # parameters vary a lot at fixed variance


def test_designs_are_the_solvers_designs():
  problem = solver.dense_problem(depth=6, width=200, input_dim=64, num_outputs=10, max_width=200)
  for d in (ablation.primal_designs([6, 30, 120], **KW) + ablation.dual_designs([3, 40], **KW)):
    assert isinstance(d, solver.Design)
    ref = solver.evaluate(problem, 3.65, d.m_int, d.n)
    assert ref._replace(m=d.m) == d
  for d in ablation.dual_designs([3, 40], **KW):
    v = solver.relative_variance(5 / d.n, alpha=3.65) / solver.relative_variance(5 / 200, alpha=3.65)
    assert d.m == pytest.approx(v, rel=1e-12)


def test_bad_inputs_raise_one_line_errors():
  with pytest.raises(ValueError, match='primal widths must be <='):
    ablation.primal_designs([300], **KW)
  with pytest.raises(ValueError, match='alpha'):
    ablation.dual_designs([2], **dict(KW, alpha=-1.0))
  with pytest.raises(ValueError, match='dataset must be one of'):
    input_pipeline.load_arrays('cifar10')


def test_vmapped_repetitions_equal_separate_trainings():
  from ce_jax.models.dense import DenseEnsemble
  data = input_pipeline.load_arrays('digits', max_train=96, max_test=64)
  model = DenseEnsemble(3, (8, 8), 10)
  train_one = ablation.make_train_fn(model, data, epochs=2, batch_size=32, learning_rate=1e-2)
  keys = ablation.repetition_keys(7, 4)
  # 2 seeds in one program, and all 4 as two chunks of 2 seeds: the same vmapped program (one
  # compilation; the chunks reuse it from the compilation cache), each against separate runs
  batched = ablation.train_repetitions(train_one, keys[:2])
  chunked = ablation.train_repetitions(train_one, keys, chunk=2)
  single = jax.jit(train_one)
  refs = [single(k) for k in keys]
  for out in (batched, chunked):
    for r in range(out.epoch_loss.shape[0]):
      ref = refs[r]
      for a, b in zip(jax.tree_util.tree_leaves(ref.params), jax.tree_util.tree_leaves(out.params)):
        np.testing.assert_allclose(b[r], a, rtol=1e-4, atol=1e-5)
      np.testing.assert_allclose(out.epoch_loss[r], ref.epoch_loss, rtol=1e-4)
      assert float(out.test_error[r]) == pytest.approx(float(ref.test_error), abs=1 / 64 + 1e-6)
  assert chunked.epoch_loss.shape[0] == 4
  # repetitions are genuinely different (init and data order from the key) and training works.
  first = jax.tree_util.tree_leaves(chunked.params)[0]
  assert not np.allclose(first[0], first[1])
  assert np.all(chunked.epoch_loss[:, -1] < chunked.epoch_loss[:, 0])


def test_spearman():
  assert ablation.spearman([1, 2, 3, 4], [10, 20, 25, 40])[0] == pytest.approx(1.0)
  assert ablation.spearman([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
  assert math.isnan(ablation.spearman([1, 2], [1, 2])[0])


def test_binary(binary, tmp_path):
  out = tmp_path / 'ablation.json'
  png = tmp_path / 'ablation.png'
  # One epoch of four steps does not get below chance: a warning, not a failure, here.
  # --depth=2 (the minimum, one hidden layer): the smallest training programs, one per design
  proc = binary('ablation', '--repetitions=2', '--epochs=1', '--baseline_width=8', '--depth=2',
                '--min_width=4', '--num_primal=2', '--num_dual=2', '--batch_size=64',
                '--max_train=256', f'--json_out={out}', f'--plot_out={png}',
                '--nofail_on_no_progress')
  assert 'spearman' in proc.stdout
  assert 'repetitions made no progress' in proc.stderr
  res = load_json(out)
  assert {'primal', 'dual', 'spearman_primal'} <= set(res)
  assert res['spearman_primal'] is None  # only 2 primal designs: undefined, written as null
  keys = {'n', 'm', 'params', 'variance_ratio', 'test_error_mean', 'test_error_stderr'}
  assert len(res['primal']) == 2 and len(res['dual']) == 2
  for row in res['primal'] + res['dual']:
    assert keys <= set(row)
    assert 0.0 <= row['test_error_mean'] <= 1.0
  assert os.path.getsize(png) > 0


def test_binary_bad_input(binary):
  proc = binary('ablation', '--repetitions=0', check=False)
  assert proc.returncode == 2
  err = proc.stderr.strip().splitlines()
  assert err[-1].startswith('ablation.py: error: --repetitions must be an integer >= 1')
  assert 'Traceback' not in proc.stderr
