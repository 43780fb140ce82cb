"""DIRBench methods: the registration networks compared in Liu, Ruan & Sheng (MIDL 2025), and Greedy.

Use ``methods.available()`` and ``methods.build(name, **overrides)``; every model satisfies
:class:`methods.base.RegistrationModel`. This package never imports
``dirbench``.
"""

from methods.base import RegistrationModel
from methods.registry import DEFAULT_IMG_SIZE, RegistrationOutput, available, build, register

__all__ = ["DEFAULT_IMG_SIZE", "RegistrationModel", "RegistrationOutput", "available", "build", "register"]
