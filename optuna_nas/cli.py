"""The ``optuna-nas`` command: search, retrain, info.

Runs are Optuna trials in a study (``--storage``, ``--study-name``, the same flags as the ``optuna``
CLI), so ``optuna trials --storage URL --study-name NAME`` and optuna-dashboard show them. Bad input
prints one line and exits with status 2; an interrupted run exits 130 and resumes when rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from .darts.search import SearchSettings
from .errors import NasError
from .genotypes import count_multiply_adds, count_parameters, load_genotype
from .objectives import DartsSearchJob, DartsSearchObjective, RetrainJob, RetrainObjective, build_network
from .search_space import load_search_space
from .storage import DEFAULT_RUN_DIR, DEFAULT_STORAGE, load_or_create_study
from .train import TrainSettings


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _add_common(p: argparse.ArgumentParser, study_default: str) -> None:
    g = p.add_argument_group("study")
    g.add_argument("--storage", default=DEFAULT_STORAGE, help=f"Optuna storage URL or journal:PATH ({DEFAULT_STORAGE})")
    g.add_argument("--study-name", default=study_default, help=f"study to add the trial to ({study_default})")
    g.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="where epoch checkpoints go")
    d = p.add_argument_group("data and device")
    d.add_argument("--dataset", default="digits",
                   help="digits (embedded), cifar10, cifar100, npz:PATH, imagefolder:PATH, synthetic")
    d.add_argument("--data-root", default=None, help="where torchvision datasets live")
    d.add_argument("--download", action="store_true", help="download cifar10/cifar100 if missing")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optuna-nas", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    search = sub.add_parser("search", help="run one architecture search as one Optuna trial")
    engines = search.add_subparsers(dest="engine", required=True)
    darts = engines.add_parser("darts", help="DARTS / A-DARTS / PC-DARTS search (Algorithm 1)")
    _add_common(darts, "darts-search")
    s = darts.add_argument_group("search")
    s.add_argument("--space", default="a_darts", help="search-space YAML file or shipped name (a_darts)")
    s.add_argument("--activation-mode", default=None,
                   help="fixed:<act>, factorized, non_factorized or config_a (default: the space's)")
    s.add_argument("--config-a", default=None, help="genotype JSON whose edge activations config_a freezes")
    s.add_argument("--partial-channels", type=_positive(int), default=1, help="PC-DARTS K (1 = off)")
    s.add_argument("--epochs", type=_positive(int), default=25)
    s.add_argument("--batch-size", type=_positive(int), default=64)
    s.add_argument("--channels", type=_positive(int), default=16)
    s.add_argument("--layers", type=_positive(int), default=8)
    s.add_argument("--lr", type=_positive(float), default=0.05)
    s.add_argument("--arch-lr", type=_positive(float), default=6e-4)
    s.add_argument("--lr-min", type=float, default=0.001, help="end of ω's cosine schedule")
    s.add_argument("--weight-decay", type=float, default=3e-4)
    s.add_argument("--train-portion", type=float, default=0.5, help="share of the training set for ω")
    s.add_argument("--val-portion", type=float, default=None, help="share for α, β (default: the rest)")
    s.add_argument("--warmup-epochs", type=int, default=0, help="epochs that train ω only (PC-DARTS: 15)")
    s.add_argument("--recompute-cells", action="store_true",
                   help="save most activation memory for about one extra forward pass per step")
    s.add_argument("--unrolled", action="store_true", help="DARTS second-order architecture gradient")
    s.add_argument("--beta-pass", choices=["shared", "separate"], default="shared",
                   help="separate: a second validation pass for β, exactly as Algorithm 1")
    s.add_argument("--output", type=Path, default=None, help="also write the derived genotype JSON here")

    retrain = sub.add_parser("retrain", help="train a genotype from scratch as one Optuna trial")
    retrain.add_argument("arch", help="built-in genotype (DARTS_V1, DARTS_V2, PC_DARTS) or a JSON file")
    _add_common(retrain, "retrain")
    r = retrain.add_argument_group("training (defaults: A-DARTS CIFAR-10 retraining)")
    r.add_argument("--epochs", type=_positive(int), default=600)
    r.add_argument("--batch-size", type=_positive(int), default=128)
    r.add_argument("--channels", type=_positive(int), default=36)
    r.add_argument("--layers", type=_positive(int), default=20)
    r.add_argument("--lr", type=_positive(float), default=0.03)
    r.add_argument("--activation", default=None, help="replace every edge's activation (e.g. relu, selu)")
    r.add_argument("--drop-path", type=float, default=0.4)
    r.add_argument("--auxiliary-weight", type=float, default=0.4)
    r.add_argument("--no-auxiliary", action="store_true")
    r.add_argument("--no-cutout", action="store_true")
    r.add_argument("--imagenet", action="store_true",
                   help="mobile-setting network, label smoothing 0.1, 5 warm-up epochs (use imagefolder:PATH)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")

    info = sub.add_parser("info", help="parameters and multiply-adds of a genotype, or a space's size")
    info.add_argument("arch", nargs="?", help="built-in genotype name or JSON file")
    info.add_argument("--space", default=None, help="search-space YAML file: print its size")
    info.add_argument("--channels", type=_positive(int), default=36)
    info.add_argument("--layers", type=_positive(int), default=20)
    info.add_argument("--num-classes", type=_positive(int), default=10)
    info.add_argument("--in-channels", type=_positive(int), default=3)
    info.add_argument("--image-size", type=_positive(int), default=None, help="32 (CIFAR) or 224 (ImageNet)")
    info.add_argument("--imagenet", action="store_true", help="the ImageNet mobile-setting network")
    info.add_argument("--activation", default=None, help="override every edge's activation")
    info.add_argument("--json", action="store_true")
    return parser


def cmd_search_darts(args: argparse.Namespace) -> int:
    settings = SearchSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_min=args.lr_min,
                              weight_decay=args.weight_decay, arch_lr=args.arch_lr, unrolled=args.unrolled,
                              beta_pass=args.beta_pass, train_portion=args.train_portion,
                              val_portion=args.val_portion, warmup_epochs=args.warmup_epochs, seed=args.seed)
    job = DartsSearchJob(dataset=args.dataset, data_root=args.data_root, download=args.download, space=args.space,
                         activation_mode=args.activation_mode, config_a_genotype=args.config_a,
                         partial_channels=args.partial_channels, recompute_cells=args.recompute_cells,
                         channels=args.channels, layers=args.layers,
                         settings=settings, device=args.device, run_dir=args.run_dir, verbose=not args.quiet)
    objective = DartsSearchObjective(job)  # validates space, mode and data before touching storage
    study = load_or_create_study(args.storage, args.study_name, ["maximize"], ["val_acc"])
    trial = _run_one(study, objective)
    genotype = trial.user_attrs["genotype"]
    if args.output:
        args.output.write_text(json.dumps({"genotype": genotype}, indent=2))
    print(f"trial {trial.number}: search val_acc {trial.value:.2f}%  retrain cost {trial.user_attrs['params']:,} "
          f"params, {trial.user_attrs['flops']:,} multiply-adds  ({trial.user_attrs['search_seconds']:.0f} s)")
    print(json.dumps(genotype))
    print(f"see it: optuna trials --storage {args.storage} --study-name {args.study_name}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    imagenet = args.imagenet
    settings = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             drop_path_prob=args.drop_path, auxiliary_weight=args.auxiliary_weight,
                             cutout=not args.no_cutout, label_smoothing=0.1 if imagenet else 0.0,
                             warmup_epochs=5 if imagenet and args.epochs > 5 else 0,
                             weight_decay=3e-5 if imagenet else 3e-4)
    job = RetrainJob(genotype=args.arch, dataset=args.dataset, data_root=args.data_root, download=args.download,
                     channels=args.channels, layers=args.layers, imagenet=imagenet, auxiliary=not args.no_auxiliary,
                     activation=args.activation, seed=args.seed, settings=settings, device=args.device,
                     run_dir=args.run_dir, verbose=not args.quiet)
    objective = RetrainObjective(job)
    study = load_or_create_study(args.storage, args.study_name, ["minimize"], ["test_error"])
    trial = _run_one(study, objective)
    result = {"trial": trial.number, "test_error": trial.value, "params": trial.user_attrs["params"],
              "flops": trial.user_attrs["flops"]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"trial {trial.number}: test error {trial.value:.2f}%  {result['params']:,} params  "
              f"{result['flops']:,} multiply-adds")
    return 0


def _run_one(study: optuna.Study, objective: Any) -> optuna.trial.FrozenTrial:
    """Run one trial; a failure inside it is re-raised (the trial is stored as FAIL, never COMPLETE)."""
    study.optimize(objective, n_trials=1, catch=())
    trial = study.trials[-1]
    if trial.state != optuna.trial.TrialState.COMPLETE:
        raise NasError(f"trial {trial.number} ended {trial.state.name}")
    return trial


def cmd_info(args: argparse.Namespace) -> int:
    if args.space:
        space = load_search_space(args.space)
        out: dict[str, Any] = {"space": space.name, "architectures": space.architecture_count(),
                               "per_cell": space.cell_count(), "choices_per_edge": space.choices_per_edge(),
                               "operators": list(space.operators), "activations": list(space.activations)}
        text = f"{space.name}: {float(out['architectures']):.2g} architectures " \
               f"({out['choices_per_edge']} choices per kept edge, {float(out['per_cell']):.3g} per cell type)"
    elif args.arch:
        genotype = load_genotype(args.arch)
        if args.activation:
            genotype = genotype.with_activation(args.activation)
        size = args.image_size or (224 if args.imagenet else 32)
        net = build_network(genotype, args.num_classes, args.in_channels, args.channels, args.layers,
                            args.imagenet, auxiliary=False)
        out = {"arch": args.arch, "params": count_parameters(net),
               "flops": count_multiply_adds(net, (args.in_channels, size, size)),
               "channels": args.channels, "layers": args.layers, "image_size": size,
               "num_classes": args.num_classes, "flops_unit": "multiply-adds"}
        text = f"{args.arch}: {out['params']:,} parameters ({out['params'] / 1e6:.2f} M), " \
               f"{out['flops']:,} multiply-adds at {size}x{size}, C={args.channels}, {args.layers} cells"
    else:
        raise NasError("info needs a genotype (name or JSON file) or --space FILE")
    print(json.dumps(out) if args.json else text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own lines say what happens
    try:
        if args.command == "search":
            return cmd_search_darts(args)
        if args.command == "retrain":
            return cmd_retrain(args)
        return cmd_info(args)
    except NasError as exc:
        print(f"optuna-nas: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like: not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("optuna-nas: interrupted; rerun the same command to resume from the last epoch checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
