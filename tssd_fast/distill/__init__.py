"""Training objectives: TSSD (and its ablations), TKS, TSER, KD; see docs/NETWORKS.md."""
from .losses import (ce_of_mean, ce_per_timestep, kl_to_teacher, mean_entropy, ssd_loss, tks_soft_loss,
                     tks_teacher, tks_weight, tsd_loss)
from .methods import KD, METHODS, TKS, TSER, TSSD, Method, make_method

__all__ = [
    "ce_of_mean", "ce_per_timestep", "kl_to_teacher", "mean_entropy", "ssd_loss", "tks_soft_loss",
    "tks_teacher", "tks_weight", "tsd_loss", "KD", "METHODS", "TKS", "TSER", "TSSD", "Method", "make_method",
]
