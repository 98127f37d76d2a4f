"""ResNeXt-29 3x64d, the ResNeXt-paper baseline (Table 1a, Table 3) on CIFAR-10 or CIFAR-100 (the paper's recipe).

    python experiments/train.py --config=experiments/configs/cifar_resnext29_3x64d.py:cifar10 \
        --workdir=runs/cifar10_resnext29_3x64d
    python experiments/train.py --config=experiments/configs/cifar_resnext29_3x64d.py:cifar100 \
        --workdir=runs/cifar100_resnext29_3x64d

Paper: 13.35M parameters (10 classes).
"""

from __future__ import annotations

from experiments.configs import common


def get_config(dataset: str = 'cifar10'):
  return common.cifar(3, 64, dataset or 'cifar10', paper_params_m=13.35)
