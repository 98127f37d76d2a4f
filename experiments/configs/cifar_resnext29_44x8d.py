"""ResNeXt-29 44x8d, the FLOPs-primal optimum (appendix Table 3) on CIFAR-10 or CIFAR-100 (the paper's recipe).

    python experiments/train.py --config=experiments/configs/cifar_resnext29_44x8d.py:cifar10 \
        --workdir=runs/cifar10_resnext29_44x8d
    python experiments/train.py --config=experiments/configs/cifar_resnext29_44x8d.py:cifar100 \
        --workdir=runs/cifar100_resnext29_44x8d

Paper: 12.71M parameters (10 classes).
"""

from __future__ import annotations

from experiments.configs import common


def get_config(dataset: str = 'cifar10'):
  return common.cifar(44, 8, dataset or 'cifar10', paper_params_m=12.71)
