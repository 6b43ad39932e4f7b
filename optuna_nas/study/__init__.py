"""Study files run as Optuna studies: ``spec`` (the file format), ``sections`` (its typed stage settings),
``grid`` (points and their trials), ``stages`` (search, retrain, grow), ``runner`` (workers, dry run)."""
