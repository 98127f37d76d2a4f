"""ResNeXt-29 10x10d, the dual optimum (Table 1b) on CIFAR-10 or CIFAR-100 (the paper's recipe).

    python experiments/train.py --config=experiments/configs/cifar_resnext29_10x10d.py:cifar10 \
        --workdir=runs/cifar10_resnext29_10x10d
    python experiments/train.py --config=experiments/configs/cifar_resnext29_10x10d.py:cifar100 \
        --workdir=runs/cifar100_resnext29_10x10d

Paper: 4.22M parameters (10 classes).
"""

from __future__ import annotations

from experiments.configs import common


def get_config(dataset: str = 'cifar10'):
  return common.cifar(10, 10, dataset or 'cifar10', paper_params_m=4.22)
