"""ResNeXt-29 37x10d, the primal optimum (Table 1a) on CIFAR-10 or CIFAR-100 (the paper's recipe).

    python experiments/train.py --config=experiments/configs/cifar_resnext29_37x10d.py:cifar10 \
        --workdir=runs/cifar10_resnext29_37x10d
    python experiments/train.py --config=experiments/configs/cifar_resnext29_37x10d.py:cifar100 \
        --workdir=runs/cifar100_resnext29_37x10d

Paper: 13.74M parameters (10 classes).
"""

from __future__ import annotations

from experiments.configs import common


def get_config(dataset: str = 'cifar10'):
  return common.cifar(37, 10, dataset or 'cifar10', paper_params_m=13.74)
