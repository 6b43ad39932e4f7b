"""``python -m optuna_nas``: the optuna-nas command (also how ``torchrun -m optuna_nas`` starts it)."""

import sys

from .cli import main

sys.exit(main())
