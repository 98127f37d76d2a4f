"""ResNet-29 1x128d, the baseline (Table 1a/1b, Table 3) on CIFAR-10 or CIFAR-100 (the paper's recipe).

    python experiments/train.py --config=experiments/configs/cifar_resnext29_1x128d.py:cifar10 \
        --workdir=runs/cifar10_resnext29_1x128d
    python experiments/train.py --config=experiments/configs/cifar_resnext29_1x128d.py:cifar100 \
        --workdir=runs/cifar100_resnext29_1x128d

Paper: 13.78M parameters (10 classes).
"""

from __future__ import annotations

from experiments.configs import common


def get_config(dataset: str = 'cifar10'):
  return common.cifar(1, 128, dataset or 'cifar10', paper_params_m=13.78)
