"""The README's library example runs as written and prints what its comments promise."""

import contextlib
import io
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _python_blocks(path):
  with open(path) as f:
    return re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)


def test_readme_example_runs_and_matches_its_comments():
  blocks = _python_blocks(os.path.join(REPO, 'README.md'))
  assert blocks, 'README has no python example'
  out = io.StringIO()
  namespace = {}
  with contextlib.redirect_stdout(out):
    exec(compile(blocks[0], 'README.md', 'exec'), namespace)  # noqa: S102
  assert namespace['K'].shape == (16, 16)
  lines = out.getvalue().splitlines()
  n, m_p, m_d = lines[0].split()
  assert int(n) == 48 and abs(float(m_p) - 30.4) < 0.1 and abs(float(m_d) - 12.4) < 0.1
  assert lines[1].strip() == '37x10d'


def test_one_version_in_package_metadata_code_and_changelog():
  """setup.cfg's version (what pip records), ce_jax.__version__ and the newest CHANGELOG entry."""
  import configparser
  import ce_jax
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(REPO, 'setup.cfg'))
  with open(os.path.join(REPO, 'CHANGELOG.md')) as f:
    newest = re.search(r'^## (\d+\.\d+\.\d+)', f.read(), flags=re.M).group(1)
  assert cfg['metadata']['version'] == ce_jax.__version__ == newest, (
      cfg['metadata']['version'], ce_jax.__version__, newest)
