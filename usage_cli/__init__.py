"""usage: a staged toolkit for USAGE weakly supervised semantic segmentation (Peng et al., ICCV 2023)."""

__version__ = "0.1.0"
