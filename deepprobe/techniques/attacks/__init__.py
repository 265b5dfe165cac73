"""Robustness attacks (AutoAttack's ensemble, our own code on the engine) and the cascade that runs them.

    from deepprobe.techniques.attacks import expand_cascade, AttackSettings, robust_batch, ATTACKS
    cascade = expand_cascade(["autoattack"])          # ["apgd-ce", "apgd-t", "fab-t", "square"]
    out = robust_batch(bundle, x, labels, eps=[0.0, 4/255, 8/255], cascade=cascade,
                       settings=AttackSettings(norm="linf"), seeds=ids)
    out.records, out.stage_robust, out.adversarial

Each attack also runs alone: `apgd`, `apgd_targeted`, `fab_targeted`, `square` (keyword arguments), or
`ATTACKS[name](bundle, x, y, eps, settings, seeds)`; all return an `Adversarial` (images on the 8-bit grid,
success checked by a fresh forward pass, cost, predicted class).

Modules: apgd.py (APGD-CE/DLR/T), fab.py (FAB-T), square.py (Square), cascade.py (robust_batch, ATTACKS),
check.py (when an example counts), rng.py (per-image random streams), common.py, run.py.
"""
from ...options.attacks import (ATTACK_NAMES, CASCADES, DEFAULT_CASCADE, NORMS, AttackSettings, eps_key,
                                expand_cascade, stage_names)
from .apgd import apgd, apgd_targeted
from .cascade import ATTACKS, Attack, RobustBatch, StageProgress, robust_batch
from .check import Checker
from .common import Adversarial
from .fab import fab_targeted
from .square import square

__all__ = [
    "ATTACK_NAMES", "ATTACKS", "CASCADES", "DEFAULT_CASCADE", "NORMS", "Adversarial", "Attack", "AttackSettings",
    "Checker", "RobustBatch", "StageProgress", "apgd", "apgd_targeted", "eps_key", "expand_cascade",
    "fab_targeted", "robust_batch", "square", "stage_names",
]
