"""DIRBench harness library: data, metrics, training, inference, tables, figures, LUMIR packaging, CLI.

Reproduces Liu, Ruan & Sheng, "Unsupervised Deformable Image Registration Revisited" (MIDL 2025).
"""

__version__ = "0.1.0"
