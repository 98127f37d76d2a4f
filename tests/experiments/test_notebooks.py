"""Every notebook in notebooks/ executes without error (a broken notebook fails CI)."""

import glob
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, 'notebooks', '*.ipynb')))


def test_every_notebook_is_listed():
  names = [os.path.basename(p)[:-len('.ipynb')] for p in NOTEBOOKS]
  assert names == ['01_ensemble_ntk', '02_alpha_and_search', '03_ablation', '04_ntk_dynamics',
                   '05_your_own_block']


def test_notebooks_are_in_sync_with_their_generator():
  import sys
  sys.path.insert(0, os.path.join(REPO, 'notebooks'))
  import make_notebooks  # noqa: E402
  import nbformat
  for name, cells in make_notebooks.NOTEBOOKS.items():
    nb = nbformat.read(os.path.join(REPO, 'notebooks', f'{name}.ipynb'), as_version=4)
    assert [c.source for c in nb.cells] == [src for _, src in cells], name
    assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code'), name


@pytest.mark.slow
@pytest.mark.parametrize('path', NOTEBOOKS, ids=os.path.basename)
def test_notebook_executes(path, tmp_path):
  import nbformat
  from nbclient import NotebookClient
  nb = nbformat.read(path, as_version=4)
  env_before = os.environ.get('PYTHONPATH', '')
  os.environ['PYTHONPATH'] = REPO + os.pathsep + env_before
  try:
    NotebookClient(nb, timeout=600, kernel_name='python3',
                   resources={'metadata': {'path': str(tmp_path)}}).execute()
  finally:
    os.environ['PYTHONPATH'] = env_before
  errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
            if o.get('output_type') == 'error']
  assert not errors
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
            if 'image/png' in o.get('data', {})]
  assert images, 'the notebook shows no figure'
