"""optuna-nas: A-DARTS, DARTS, PC-DARTS and RandGrow neural architecture search as Optuna studies."""

__version__ = "0.1.0"
