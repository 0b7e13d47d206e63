"""
minilatent: minimal, readable latent-dynamics models of neural data (LFADS, SPARKS) and the E/I
circuit models behind them. The model files (lfads.py, sparks.py, circuits.py) and the fixed-point finder
(fixed_points.py) import only torch, numpy and the standard library: copy one into your project and it works.
"""

__version__ = "0.1.0"

from .lfads import LFADS, LFADSConfig
from .sparks import SPARKS, SPARKSConfig
from .circuits import Circuit, CircuitConfig, STPConfig
from .fixed_points import find_fixed_points
from .trainer import Trainer, TrainerConfig, History
from . import synthetic, datafiles, metrics, circuits

__all__ = ["LFADS", "LFADSConfig", "SPARKS", "SPARKSConfig", "Circuit", "CircuitConfig", "STPConfig",
           "find_fixed_points", "Trainer", "TrainerConfig", "History", "synthetic", "datafiles", "metrics", "circuits"]
