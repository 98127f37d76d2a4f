"""Input pipelines: the digits split, deterministic device-count-independent order, process
sharding, evaluation coverage (pad + mask), tfds datasets under mock data, missing datasets."""

import collections

import numpy as np
import pytest

from ce_jax.training import input_pipeline as ip

tfds = pytest.importorskip('tensorflow_datasets')


def _global(batch):
  """(devices, per_device, ...) -> (devices * per_device, ...)."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items()}


def _epoch(**kw):
  return [_global(b) for b in ip.train_iterator('digits', **kw)]


def test_digits_split_is_fixed_real_and_standardized():
  a, b = ip.digits_arrays(), ip.digits_arrays()
  (xtr, ytr), (xte, yte) = a['train'], a['test']
  assert xtr.shape == (1347, 8, 8, 1) and xte.shape == (450, 8, 8, 1)
  np.testing.assert_array_equal(ytr, b['train'][1])
  assert abs(xtr.mean()) < 1e-5 and abs(xtr.std() - 1) < 1e-4
  assert set(np.unique(ytr)) == set(range(10)) == set(np.unique(yte))
  # The split is a partition of sklearn's 1,797 images.
  from sklearn.datasets import load_digits
  flat = load_digits().images.reshape(1797, -1)
  keys = lambda x: {tuple(np.round(r, 4)) for r in x}  # noqa: E731
  assert len(keys(flat)) > 1700  # almost all images are distinct
  info = ip.get_info('digits')
  assert (info.num_train, info.num_test, info.num_classes) == (1347, 450, 10)


def test_train_order_depends_on_seed_and_epoch_not_on_devices():
  one = _epoch(global_batch_size=64, seed=3, epoch=1, local_device_count=1)
  two = _epoch(global_batch_size=64, seed=3, epoch=1, local_device_count=2)
  assert len(one) == len(two) == 1347 // 64
  first = next(ip.train_iterator('digits', global_batch_size=64, seed=3, epoch=1,
                                 local_device_count=2))
  assert first['image'].shape == (2, 32, 8, 8, 1) and first['label'].shape == (2, 32)
  for a, b in zip(one, two):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  other_epoch = _epoch(global_batch_size=64, seed=3, epoch=2, local_device_count=1)
  other_seed = _epoch(global_batch_size=64, seed=4, epoch=1, local_device_count=1)
  assert not np.array_equal(one[0]['label'], other_epoch[0]['label'])
  assert not np.array_equal(one[0]['label'], other_seed[0]['label'])
  # An epoch is a permutation: no example twice (images are almost all distinct).
  seen = np.concatenate([b['image'].reshape(64, -1) for b in one])
  assert len({r.tobytes() for r in seen}) >= len(seen) - 5
  assert collections.Counter(np.concatenate([b['label'] for b in one])) != {}


def test_resume_position_skips_exactly():
  full = _epoch(global_batch_size=128, seed=0, epoch=5, local_device_count=1)
  rest = _epoch(global_batch_size=128, seed=0, epoch=5, start_step=4, local_device_count=1)
  assert len(rest) == len(full) - 4
  for a, b in zip(full[4:], rest):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_processes_read_their_slice_of_the_global_batch():
  whole = _epoch(global_batch_size=64, seed=1, epoch=0, local_device_count=1)
  parts = [_epoch(global_batch_size=64, seed=1, epoch=0, local_device_count=1,
                  process_index=i, process_count=2) for i in range(2)]
  for k, batch in enumerate(whole):
    np.testing.assert_array_equal(
        batch['label'], np.concatenate([parts[0][k]['label'], parts[1][k]['label']]))


@pytest.mark.parametrize('processes,batch', [(1, 64), (2, 64), (2, 100), (1, 450)])
def test_eval_counts_every_example_once(processes, batch):
  labels, counts = [], []
  for i in range(processes):
    batches = [_global(b) for b in ip.eval_iterator(
        'digits', global_batch_size=batch, local_device_count=2 if batch % 4 == 0 else 1,
        process_index=i, process_count=processes)]
    counts.append(len(batches))
    for b in batches:
      assert b['mask'].dtype == np.float32
      labels.append(b['label'][b['mask'] > 0])
      assert np.all(b['label'][b['mask'] == 0] == 0)
  assert len(set(counts)) == 1  # every process runs the same number of eval steps
  assert counts[0] == ip.eval_steps(ip.get_info('digits'), batch, processes)
  got = np.concatenate(labels)
  assert len(got) == 450
  assert collections.Counter(got.tolist()) == collections.Counter(
      ip.digits_arrays()['test'][1].tolist())


def test_batch_not_divisible_by_devices_is_one_line():
  with pytest.raises(ValueError, match='divisible by the 3 devices'):
    ip.train_iterator('digits', global_batch_size=64, seed=0, epoch=0, local_device_count=3)
  with pytest.raises(ValueError, match='dataset must be one of'):
    ip.get_info('svhn')


def test_missing_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(ValueError) as e:
    ip.get_info('cifar10', data_dir=str(tmp_path))
  msg = str(e.value)
  assert '\n' not in msg and f'tfds build cifar10 --data_dir={tmp_path}' in msg
  with pytest.raises(ValueError, match='downloads/manual'):
    ip.get_info('imagenet2012', data_dir=str(tmp_path))


@pytest.mark.parametrize('name,shape,classes', [
    ('mnist', (28, 28, 1), 10), ('cifar10', (32, 32, 3), 10), ('cifar100', (32, 32, 3), 100),
    ('imagenet_resized/32x32', (32, 32, 3), 1000), ('imagenet_resized/64x64', (64, 64, 3), 1000),
    ('imagenet2012', (224, 224, 3), 1000)])
def test_tfds_datasets_under_mock_data(tmp_path, name, shape, classes):
  with tfds.testing.mock_data(num_examples=8, data_dir=str(tmp_path)):
    info = ip.get_info(name, str(tmp_path), num_train=8, num_test=8)
    assert (info.image_shape, info.num_classes) == (shape, classes)
    kw = dict(global_batch_size=4, seed=0, epoch=0, data_dir=str(tmp_path), local_device_count=2)
    a = list(ip.train_iterator(name, **kw))
    b = list(ip.train_iterator(name, **kw))
    assert len(a) == 2 and a[0]['image'].shape == (2, 2) + shape
    assert a[0]['image'].dtype == np.float32 and a[0]['label'].dtype == np.int32
    np.testing.assert_array_equal(a[1]['image'], b[1]['image'])  # augmentation is seeded
    # Per-channel normalization: pixels in [0, 1] map to [-mean/std, (1 - mean)/std].
    spec = ip._SPECS[name]  # pylint: disable=protected-access
    mean, std = np.array(spec['mean']), np.array(spec['std'])
    img = np.concatenate([x['image'].reshape((-1,) + shape) for x in a])
    assert np.all(img >= -mean / std - 1e-4) and np.all(img <= (1 - mean) / std + 1e-4)
    assert img.std() > 0.1
    ev = list(ip.eval_iterator(name, global_batch_size=6, data_dir=str(tmp_path), num_test=8,
                               local_device_count=2))
    assert len(ev) == 2 and ev[0]['image'].shape == (2, 3) + shape
    assert sum(float(e['mask'].sum()) for e in ev) == 8  # 8 examples + 4 padded


def test_cifar_augmentation_flips_and_crops(tmp_path):
  with tfds.testing.mock_data(num_examples=4, data_dir=str(tmp_path)):
    kw = dict(global_batch_size=4, data_dir=str(tmp_path), local_device_count=1)
    aug = [next(ip.train_iterator('cifar10', seed=s, epoch=0, **kw)) for s in (0, 1)]
    plain = next(ip.eval_iterator('cifar10', num_test=4, **kw))
  # Different seeds reorder/augment differently; augmented images differ from the plain ones.
  assert not np.array_equal(aug[0]['image'], aug[1]['image'])
  a = np.sort(aug[0]['image'].reshape(4, -1).sum(1))
  p = np.sort(plain['image'].reshape(4, -1).sum(1))
  assert not np.allclose(a, p)
