"""Input pipelines for training: tfds image datasets and the embedded scikit-learn digits.

Every dataset goes through ONE tf.data code path::

    source (tfds split, or the digits arrays) -> enumerate (a stable example index)
      -> shuffle(seed, epoch) -> global batches -> this process's slice -> decode/augment
      -> local batches reshaped to (local_devices, per_device, ...) -> prefetch

* **Determinism.** The order of epoch ``e`` is a function of ``(seed, e)`` only, and augmentation
  uses stateless random ops seeded by ``(seed, e, example index)``, so the global batch at step
  ``s`` is the same for any number of devices (and, with ``sharding='global'``, any number of
  processes). Resuming at step ``s`` rebuilds epoch ``s // steps_per_epoch`` and skips
  ``s % steps_per_epoch`` batches: the data position needs nothing but the step.
* **Multi-host.** ``sharding='global'`` (default): every process reads the stream and keeps its
  slice of each global batch (exact, process-count independent; the raw bytes are read once per
  process, decoding happens once). ``sharding='split'``: each process reads only its part of the
  split (``tfds.split_for_jax_process``), for ImageNet scale; the order then depends on the
  process count.
* **Evaluation** counts every example exactly once: examples are split evenly over processes,
  each process pads to the same number of batches with ``mask = 0`` examples.
* **Digits.** scikit-learn's 1,797 8x8 handwritten digits (real data, bundled, offline), split
  once with a fixed permutation into 1,347 train and 450 test images, pixels ``/16``
  standardized with the train mean and std.

Normalization and augmentation (see ``docs/TRAINING.md``): CIFAR and
downsampled ImageNet use random horizontal flips and a random crop after zero padding (4 pixels
at 32x32, 8 at 64x64); ImageNet uses an Inception-style random resized crop to 224 plus flips
(no lighting), evaluation resizes to 256 and center-crops 224. All images are normalized per
channel with the dataset's mean and std.

* **Arrays.** :func:`load_arrays` returns a whole data set in memory, flattened and standardized
  (digits, or an already prepared MNIST), for the experiments that train without tf.data.

TensorFlow and tensorflow-datasets are imported lazily (``ce_jax`` stays importable without them).
"""

from __future__ import annotations

import functools
import math
from typing import Any, Iterator, NamedTuple

import jax
import numpy as np

from ce_jax import _optional, _validate
from ce_jax.tools import cli


__all__ = ['DatasetInfo', 'DATASETS', 'get_info', 'steps_per_epoch', 'train_iterator',
           'eval_iterator', 'eval_steps', 'digits_arrays']

_CIFAR10_MEAN, _CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
_CIFAR100_MEAN, _CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_MNIST_MEAN, _MNIST_STD = (0.1307,), (0.3081,)

DIGITS_NUM_TRAIN = 1347  # of 1797; the rest (450) is the test split
DIGITS_SPLIT_SEED = 0


class DatasetInfo(NamedTuple):
  """What the trainer needs to know about a dataset.

  ``image_shape`` is the shape of one preprocessed example ``(height, width, channels)``.
  """
  name: str
  num_classes: int
  image_shape: tuple[int, int, int]
  num_train: int
  num_test: int
  train_split: str
  test_split: str


# name -> (num_classes, processed image shape, train split, test split, preprocessing kind,
#          mean, std, crop padding)
_SPECS: dict[str, dict[str, Any]] = {
    'digits': dict(num_classes=10, shape=(8, 8, 1), train='train', test='test', kind='digits'),
    'mnist': dict(num_classes=10, shape=(28, 28, 1), train='train', test='test', kind='plain',
                  mean=_MNIST_MEAN, std=_MNIST_STD),
    'cifar10': dict(num_classes=10, shape=(32, 32, 3), train='train', test='test', kind='crop',
                    mean=_CIFAR10_MEAN, std=_CIFAR10_STD, pad=4),
    'cifar100': dict(num_classes=100, shape=(32, 32, 3), train='train', test='test', kind='crop',
                     mean=_CIFAR100_MEAN, std=_CIFAR100_STD, pad=4),
    'imagenet_resized/32x32': dict(num_classes=1000, shape=(32, 32, 3), train='train',
                                   test='validation', kind='crop', mean=_IMAGENET_MEAN,
                                   std=_IMAGENET_STD, pad=4),
    'imagenet_resized/64x64': dict(num_classes=1000, shape=(64, 64, 3), train='train',
                                   test='validation', kind='crop', mean=_IMAGENET_MEAN,
                                   std=_IMAGENET_STD, pad=8),
    'imagenet2012': dict(num_classes=1000, shape=(224, 224, 3), train='train',
                         test='validation', kind='imagenet', mean=_IMAGENET_MEAN,
                         std=_IMAGENET_STD),
}
DATASETS = tuple(_SPECS)


def _check_name(name: str) -> str:
  return _validate.choice('dataset', name, DATASETS)


def _process_split(global_batch_size, process_count, process_index, local_device_count):
  """``(process_count, process_index, local_devices, per-process batch)``; defaults from jax.

  Raises if the global batch does not split evenly over all devices of all processes.
  """
  pc = jax.process_count() if process_count is None else process_count
  pi = jax.process_index() if process_index is None else process_index
  nd = jax.local_device_count() if local_device_count is None else local_device_count
  if global_batch_size % (pc * nd):
    raise ValueError(f'batch_size must be divisible by the {pc * nd} devices, got '
                     f'{global_batch_size}')
  return pc, pi, nd, global_batch_size // pc

def _prepare_hint(name: str, data_dir: str | None) -> str:
  where = data_dir or '~/tensorflow_datasets'
  if name == 'imagenet2012':
    return (f'dataset imagenet2012 is not prepared in {where}: download ILSVRC2012_img_train.tar '
            f'and ILSVRC2012_img_val.tar into {where}/downloads/manual and run '
            f'`tfds build imagenet2012 --data_dir={where}`')
  return (f'dataset {name} is not prepared in {where}: on a machine with internet run '
          f'`tfds build {name} --data_dir={where}` (or copy a prepared {where}/{name} here)')


def _tfds():
  return _optional.require('tensorflow_datasets', 'data', package='tensorflow-datasets',
                           what='ce_jax.training.input_pipeline')


def _builder(name: str, data_dir: str | None):
  tfds = _tfds()
  try:
    return tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{_prepare_hint(name, data_dir)} ({type(e).__name__})') from None


# ---------------------------------------------------------------------------------------------
# Digits (embedded, offline)


@functools.lru_cache(maxsize=1)
def digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """The fixed digits split: ``{'train': (images, labels), 'test': (images, labels)}``.

  Images are float32 ``(N, 8, 8, 1)`` standardized with the train split's pixel mean and std
  (after ``/16``); labels int32 ``(N,)``. 1,347 train and 450 test examples. Cached and
  read-only.
  """
  datasets = _optional.require('sklearn.datasets', 'experiments', package='scikit-learn',
                               what='the digits data set')
  d = datasets.load_digits()
  images = d.images.astype(np.float32)[..., None] / 16.0
  labels = d.target.astype(np.int32)
  perm = np.random.RandomState(DIGITS_SPLIT_SEED).permutation(len(labels))
  tr, te = perm[:DIGITS_NUM_TRAIN], perm[DIGITS_NUM_TRAIN:]
  mean, std = images[tr].mean(), images[tr].std()
  images = (images - mean) / std
  out = {'train': (images[tr], labels[tr]), 'test': (images[te], labels[te])}
  for arrays in out.values():
    for a in arrays:
      a.setflags(write=False)
  return out


def get_info(name: str, data_dir: str | None = None, *, num_train: int | None = None,
             num_test: int | None = None) -> DatasetInfo:
  """Dataset facts; raises a one-line ``ValueError`` if the dataset is unknown or not prepared.

  ``num_train`` / ``num_test`` override the split sizes read from the prepared dataset's
  metadata (tests under ``tfds.testing.mock_data``, where there is none).
  """
  spec = _SPECS[_check_name(name)]
  if name == 'digits':
    n_train, n_test = DIGITS_NUM_TRAIN, 1797 - DIGITS_NUM_TRAIN
  elif num_train and num_test:
    n_train, n_test = num_train, num_test
  else:
    builder = _builder(name, data_dir)
    try:
      splits = builder.info.splits
      n_train = splits[spec['train']].num_examples
      n_test = splits[spec['test']].num_examples
    except Exception:  # pylint: disable=broad-except
      n_train = n_test = 0
    if not n_train or not n_test:
      raise ValueError(_prepare_hint(name, data_dir))
  return DatasetInfo(name, spec['num_classes'], tuple(spec['shape']), int(n_train), int(n_test),
                     spec['train'], spec['test'])


def steps_per_epoch(info: DatasetInfo, global_batch_size: int) -> int:
  """Training steps per epoch (the last partial batch is dropped)."""
  steps = info.num_train // global_batch_size
  if steps < 1:
    raise ValueError(f'batch_size must be <= the {info.num_train} training examples of '
                     f'{info.name}, got {global_batch_size}')
  return steps


def eval_steps(info: DatasetInfo, global_batch_size: int, process_count: int = 1) -> int:
  """Evaluation batches per process so that every test example is seen once (padded)."""
  per_process = math.ceil(info.num_test / process_count)
  return max(1, math.ceil(per_process / (global_batch_size // process_count)))


def _tf():
  """Imports TensorFlow, hiding accelerators from it (they belong to JAX)."""
  # In a binary's quiet default log, TensorFlow's device probing ('failed call to cuInit',
  # 'Could not find cuda drivers') is dropped from stderr.
  with cli.native_noise_filtered():
    tf = _optional.require('tensorflow', 'data', what='ce_jax.training.input_pipeline (tf.data)')
    try:
      tf.config.set_visible_devices([], 'GPU')
      tf.config.set_visible_devices([], 'TPU')
    except (RuntimeError, ValueError):  # already initialized, or no such device type
      pass
  return tf


def _source(name: str, split: str, data_dir: str | None, *, sharded_split: bool = False):
  """A tf.data.Dataset of ``{'image', 'label'}`` (raw: uint8 or encoded bytes for ImageNet)."""
  tf = _tf()
  if name == 'digits':
    images, labels = digits_arrays()[split]
    ds = tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels})
    if sharded_split:
      ds = ds.shard(jax.process_count(), jax.process_index())
    return ds
  tfds = _tfds()
  builder = _builder(name, data_dir)
  if sharded_split:
    split = tfds.split_for_jax_process(split, drop_remainder=True)
  decoders = {'image': tfds.decode.SkipDecoding()} if name == 'imagenet2012' else None
  try:
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders,
                            read_config=tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'{_prepare_hint(name, data_dir)} ({type(e).__name__})') from None
  return ds.map(lambda x: {'image': x['image'], 'label': x['label']})


# ---------------------------------------------------------------------------------------------
# Preprocessing


def _normalize(image, spec):
  import tensorflow as tf
  image = tf.cast(image, tf.float32) / 255.0
  mean = tf.constant(spec['mean'], tf.float32)
  std = tf.constant(spec['std'], tf.float32)
  return (image - mean) / std


def _random_pad_crop(image, seed, pad):
  import tensorflow as tf
  seeds = tf.random.experimental.stateless_split(seed, 2)
  h, w, c = image.shape
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(image, [h, w, c], seed=seeds[0])
  return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def _imagenet_train(image_bytes, seed, size=224):
  """Inception-style crop (area 8%-100%, aspect 3/4-4/3) resized to ``size``, random flip."""
  import tensorflow as tf
  seeds = tf.random.experimental.stateless_split(seed, 2)
  shape = tf.io.extract_jpeg_shape(image_bytes)
  begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=seeds[0], min_object_covered=0.1,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  oy, ox, _ = tf.unstack(begin)
  ch, cw, _ = tf.unstack(crop)
  image = tf.image.decode_and_crop_jpeg(image_bytes, tf.stack([oy, ox, ch, cw]), channels=3)
  image = tf.image.resize(image, [size, size], method='bicubic')
  image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
  return tf.clip_by_value(image, 0, 255)


def _imagenet_eval(image_bytes, size=224, resize=256):
  """Resize the shorter side to ``resize`` and center-crop ``size``."""
  import tensorflow as tf
  image = tf.io.decode_jpeg(image_bytes, channels=3)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = resize / tf.reduce_min(shape)
  new = tf.cast(tf.round(shape * scale), tf.int32)
  image = tf.image.resize(image, new, method='bicubic')
  oy, ox = (new[0] - size) // 2, (new[1] - size) // 2
  image = tf.image.crop_to_bounding_box(image, oy, ox, size, size)
  return tf.clip_by_value(image, 0, 255)


def _preprocess_fn(name: str, train: bool, seed: int, epoch: int):
  """``(index, example) -> {'image': float32, 'label': int32}``."""
  import tensorflow as tf
  spec = _SPECS[name]
  kind = spec['kind']
  base = np.int64((seed * 1_000_003 + epoch) % (2**62))

  def fn(index, ex):
    ex_seed = tf.stack([tf.constant(base, tf.int64), tf.cast(index, tf.int64)])
    image = ex['image']
    if kind == 'digits':
      image = tf.cast(image, tf.float32)
    elif kind == 'imagenet':
      image = _imagenet_train(image, ex_seed) if train else _imagenet_eval(image)
      image = _normalize(image, spec)
    else:
      image = _normalize(image, spec)
      if train and kind == 'crop':
        image = _random_pad_crop(image, ex_seed, spec['pad'])
    image = tf.ensure_shape(image, spec['shape'])
    return {'image': image, 'label': tf.cast(ex['label'], tf.int32)}

  return fn


def _shard_for_devices(batch, num_devices: int):
  import tensorflow as tf
  return {k: tf.reshape(v, tf.concat([[num_devices, -1], tf.shape(v)[1:]], 0))
          for k, v in batch.items()}


def _options():
  import tensorflow as tf
  options = tf.data.Options()
  options.deterministic = True
  options.threading.private_threadpool_size = 2
  return options


def train_iterator(name: str, *, global_batch_size: int, seed: int, epoch: int,
                   start_step: int = 0, num_steps: int | None = None,
                   data_dir: str | None = None, sharding: str = 'global',
                   shuffle_buffer: int = 50_000, local_device_count: int | None = None,
                   process_index: int | None = None, process_count: int | None = None,
                   prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Batches of training epoch ``epoch`` from step ``start_step`` of that epoch on.

  Yields ``{'image': (local_devices, per_device, H, W, C) float32, 'label': (local_devices,
  per_device) int32}`` numpy arrays; ``per_device = global_batch_size / device_count``. The
  epoch's order is ``shuffle(seed, epoch)`` of the whole split (``shuffle_buffer`` examples
  for tfds; the digits are fully shuffled); the last partial batch is dropped. ``num_steps``
  (the epoch's length, :func:`steps_per_epoch`) caps the epoch so that every process runs the
  same number of steps even when ``sharding='split'`` gives processes unequal shares.
  """
  import tensorflow as tf
  _check_name(name)
  _validate.choice('sharding', sharding, ('global', 'split'))
  pc, pi, nd, local_batch = _process_split(global_batch_size, process_count, process_index,
                                         local_device_count)
  shuffle_seed = int((seed * 1_000_003 + epoch) % (2**31 - 1))
  ds = _source(name, _SPECS[name]['train'], data_dir, sharded_split=(sharding == 'split'))
  ds = ds.enumerate()
  buffer = 1_797 if name == 'digits' else shuffle_buffer
  ds = ds.shuffle(buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
  if sharding == 'global':
    ds = ds.batch(global_batch_size, drop_remainder=True)
    if pc > 1:
      ds = ds.map(lambda i, x: (i[pi * local_batch:(pi + 1) * local_batch],
                                {k: v[pi * local_batch:(pi + 1) * local_batch]
                                 for k, v in x.items()}))
    ds = ds.skip(start_step).unbatch()
  else:
    ds = ds.skip(start_step * local_batch)
  ds = ds.map(_preprocess_fn(name, True, seed, epoch), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(local_batch, drop_remainder=True)
  if num_steps is not None:
    ds = ds.take(max(0, num_steps - start_step))
  ds = ds.map(lambda b: _shard_for_devices(b, nd))
  ds = ds.prefetch(prefetch).with_options(_options())
  return ds.as_numpy_iterator()


def eval_iterator(name: str, *, global_batch_size: int, data_dir: str | None = None,
                  num_steps: int | None = None, num_test: int | None = None,
                  local_device_count: int | None = None,
                  process_index: int | None = None, process_count: int | None = None,
                  prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
  """Test batches covering every example exactly once, padded with ``mask = 0`` examples.

  Yields ``{'image', 'label', 'mask'}`` shaped like :func:`train_iterator` (``mask`` float32
  ``(local_devices, per_device)``); every process yields ``num_steps`` batches (default
  :func:`eval_steps`), so pmapped collectives line up across processes.
  """
  import tensorflow as tf
  _check_name(name)
  pc, pi, nd, local_batch = _process_split(global_batch_size, process_count, process_index,
                                         local_device_count)
  if num_steps is None:
    num_steps = eval_steps(get_info(name, data_dir, num_train=num_test, num_test=num_test),
                           global_batch_size, pc)
  ds = _source(name, _SPECS[name]['test'], data_dir).enumerate()
  if pc > 1:
    ds = ds.shard(pc, pi)
  ds = ds.map(_preprocess_fn(name, False, 0, 0), num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.map(lambda x: {**x, 'mask': tf.constant(1.0, tf.float32)})
  pad = tf.data.Dataset.from_tensors({
      'image': tf.zeros(_SPECS[name]['shape'], tf.float32),
      'label': tf.constant(0, tf.int32), 'mask': tf.constant(0.0, tf.float32)}).repeat()
  ds = ds.concatenate(pad).take(num_steps * local_batch)
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.map(lambda b: _shard_for_devices(b, nd))
  ds = ds.prefetch(prefetch).with_options(_options())
  return ds.as_numpy_iterator()


# ---------------------------------------------------------------------------------------------
# In-memory arrays (the ablation, the dynamics study, the family demos: no tf.data).

ARRAY_DATASETS = ('digits', 'mnist')


class ArrayDataset(NamedTuple):
  """A data set in memory (no tf.data): standardized features ``(N, d)`` float32, labels ``(N,)``."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str


def _standardize(x_train, x_test):
  mean = x_train.mean(axis=0)
  std = x_train.std(axis=0)
  std = np.where(std > 1e-8, std, 1.0)
  return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def load_arrays(name: str = 'digits', max_train: int | None = None,
                max_test: int | None = None) -> ArrayDataset:
  """Loads ``name`` (``'digits'`` or ``'mnist'``) flattened, standardized with train statistics.

  ``digits``: scikit-learn's 1,797 8x8 images (d = 64), the project's fixed split of
  :func:`digits_arrays` (1,347 train / 450 test), then per-pixel
  standardization (constant pixels left centered). ``mnist``: 60,000 / 10,000 (d = 784) from
  ``tensorflow_datasets`` without downloading; raises a one-line ``ValueError`` if not prepared.
  ``max_train`` / ``max_test`` keep the first examples only (subsets for quick runs).
  """
  _validate.choice('dataset', name, ARRAY_DATASETS)
  if max_train is not None:
    max_train = _validate.positive_int('max_train', max_train)
  if max_test is not None:
    max_test = _validate.positive_int('max_test', max_test)
  if name == 'digits':
    arrays = digits_arrays()  # the project's fixed digits split (1,347 / 450)
    (x_train, y_train), (x_test, y_test) = arrays['train'], arrays['test']
    x_train = x_train.reshape(x_train.shape[0], -1).astype(np.float64)
    x_test = x_test.reshape(x_test.shape[0], -1).astype(np.float64)
  else:
    x_train, y_train, x_test, y_test = _load_mnist()
  x_train, x_test = _standardize(x_train, x_test)
  if max_train is not None:
    x_train, y_train = x_train[:max_train], y_train[:max_train]
  if max_test is not None:
    x_test, y_test = x_test[:max_test], y_test[:max_test]
  return ArrayDataset(x_train, np.asarray(y_train, np.int32), x_test, np.asarray(y_test, np.int32),
                 10, name)


def _load_mnist():
  try:
    import tensorflow_datasets as tfds  # lazy: optional dependency
  except ImportError as e:  # pragma: no cover - depends on the installed stack
    raise ValueError(f"dataset 'mnist' needs tensorflow-datasets ({e}): "
                     f"{_optional.hint('data')}, or use --dataset=digits") from None
  try:
    splits = tfds.load('mnist', split=['train', 'test'], batch_size=-1, as_supervised=True,
                       download=False)
    (xtr, ytr), (xte, yte) = tfds.as_numpy(splits)
  except Exception as e:  # noqa: BLE001 - any tfds failure means "not prepared here"
    msg = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    raise ValueError(f"dataset 'mnist' is not prepared for tensorflow_datasets here ({msg}); "
                     'run `tfds build mnist` where online, or use --dataset=digits') from None
  xtr = xtr.reshape(xtr.shape[0], -1).astype(np.float64) / 255.0
  xte = xte.reshape(xte.shape[0], -1).astype(np.float64) / 255.0
  return xtr, ytr, xte, yte
