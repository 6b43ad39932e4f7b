"""The optuna-nas command: run, search, retrain, report, export, info.

Runs are Optuna trials in a study (``--storage``, ``--study-name``, the same flags as the ``optuna`` CLI),
so ``optuna trials --storage URL --study-name NAME`` and optuna-dashboard show them. Bad input prints one
line and exits with status 2; a run already in progress in another process exits 3; an interrupted run exits
130 and resumes when rerun. Every default shown
here is read from the settings dataclass that owns it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import torch

from . import __version__
from .artifacts import DEFAULT_ARTIFACT_STORE, check_artifact_store, dashboard_command, open_artifact_store
from .cost import count_multiply_adds, count_parameters
from .darts.genotypes import load_genotype
from .darts.model import IMAGENET_CHANNELS, IMAGENET_LAYERS, build_network
from .darts.objective import DartsSearchObjective, SearchJob
from .darts.search import SearchSettings
from .darts.space import load_search_space
from .data import DataSource
from .distributed import Replicas
from .errors import NasError, redact
from .heartbeat import Heartbeat
from .randgrow.runner import GrowthSettings, RandGrowSearch, hull_trials, run_randgrow
from .report import format_table, save_plots
from .retrain import (
    RetrainJob,
    RetrainObjective,
    architecture_of_trial,
    architecture_to_dict,
    best_trial_number,
    load_architecture,
    paper_training,
    trained_weights,
)
from .storage import (
    DEFAULT_STORAGE,
    for_optuna_tools,
    load_or_create_study,
    load_study_by_name,
    open_storage,
    storage_kind,
)
from .study.runner import RunOptions, grid_status, run_study, study_name_of, validate_run
from .study.spec import load_study_file
from .train import AMP_MODES, TrainSettings
from .trials import RunInProgress, TrialContext, run_one_trial
from .workers import worker_devices

SEARCH, SEARCH_SETTINGS, GROWTH, RETRAIN, HEARTBEAT = SearchJob(), SearchSettings(), GrowthSettings(), RetrainJob(), \
    Heartbeat()


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


def _add_storage(p: argparse.ArgumentParser, study_default: str | None, required: bool = False) -> None:
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"Optuna storage: an RDB URL, a journal file, redis:// or grpc:// (default {DEFAULT_STORAGE})")
    if required:
        p.add_argument("--study-name", required=True, help="the study to read")
    else:
        p.add_argument("--study-name", default=study_default, help=f"study to add the trial to (default "
                       f"{study_default})")


def _add_artifact_store(p: Any, what: str) -> None:
    p.add_argument("--artifact-store", "--artifact-dir", dest="artifact_store", default=DEFAULT_ARTIFACT_STORE,
                   metavar="URL", help=f"Optuna artifact store for {what}: a directory (or file://DIR), "
                   f"s3://BUCKET/PREFIX or gs://BUCKET/PREFIX, shared by every worker (default "
                   f"{DEFAULT_ARTIFACT_STORE}; --artifact-dir is the same flag)")


def _add_heartbeat(p: Any) -> None:
    p.add_argument("--heartbeat-interval", type=_positive(int), default=HEARTBEAT.interval,
                   help=f"seconds between a running trial's heartbeats (default {HEARTBEAT.interval})")
    p.add_argument("--grace-period", type=_positive(int), default=HEARTBEAT.grace,
                   help="seconds of silence after which a trial's process counts as dead and the trial is retried "
                        f"(default {HEARTBEAT.grace})")


def _add_common(p: argparse.ArgumentParser, study_default: str, force: bool = True) -> None:
    g = p.add_argument_group("study")
    _add_storage(g, study_default)  # type: ignore[arg-type]
    _add_artifact_store(g, "epoch checkpoints, trained weights, architectures and drawings")
    _add_heartbeat(g)
    if force:
        g.add_argument("--force", action="store_true",
                       help="run again even when a completed trial of the study already holds this run's result")
    d = p.add_argument_group("data and device")
    d.add_argument("--dataset", default=DataSource().spec,
                   help="digits (embedded, default), cifar10, cifar100, npz:PATH, imagefolder:PATH, synthetic")
    d.add_argument("--data-root", default=None, help="where torchvision datasets live")
    d.add_argument("--download", action="store_true", help="download cifar10/cifar100 if missing")
    d.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    d.add_argument("--amp", choices=list(AMP_MODES), default="bf16",
                   help="mixed precision on CUDA: bf16 (Ampere and later), fp16 (with a loss scaler: V100, T4, ...) "
                        "or off (default bf16)")
    d.add_argument("--workers", type=int, default=DataSource().workers,
                   help=f"DataLoader processes for image folders (default {DataSource().workers})")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def _add_search_darts(engines: Any) -> None:
    darts = engines.add_parser("darts", help="DARTS / A-DARTS / PC-DARTS search (Algorithm 1)")
    _add_common(darts, "darts-search")
    s = darts.add_argument_group("search (defaults: A-DARTS's CIFAR-10 search)")
    s.add_argument("--space", default=SEARCH.space, help=f"search-space YAML file or shipped name ({SEARCH.space})")
    s.add_argument("--activation-mode", default=None,
                   help="fixed:<act>, factorized, non_factorized or config_a (default: the space's)")
    s.add_argument("--config-a", default=None, help="genotype JSON whose edge activations config_a freezes")
    s.add_argument("--partial-channels", type=_positive(int), default=None,
                   help="PC-DARTS K (1 = off; default: the space's, 4 for pc_darts)")
    s.add_argument("--epochs", type=_positive(int), default=SEARCH_SETTINGS.epochs)
    s.add_argument("--batch-size", type=_positive(int), default=SEARCH_SETTINGS.batch_size)
    s.add_argument("--channels", type=_positive(int), default=SEARCH.channels)
    s.add_argument("--layers", type=_positive(int), default=SEARCH.layers)
    s.add_argument("--lr", type=_positive(float), default=SEARCH_SETTINGS.lr)
    s.add_argument("--arch-lr", type=_positive(float), default=SEARCH_SETTINGS.arch_lr)
    s.add_argument("--lr-min", type=float, default=SEARCH_SETTINGS.lr_min, help="end of ω's cosine schedule")
    s.add_argument("--weight-decay", type=float, default=SEARCH_SETTINGS.weight_decay)
    s.add_argument("--train-portion", type=float, default=SEARCH_SETTINGS.train_portion,
                   help="share of the training set for ω")
    s.add_argument("--val-portion", type=float, default=None, help="share for α, β (default: the rest)")
    s.add_argument("--warmup-epochs", type=int, default=SEARCH_SETTINGS.warmup_epochs,
                   help="epochs that train ω only (PC-DARTS: 15)")
    s.add_argument("--recompute-cells", action="store_true",
                   help="save most activation memory for about one extra forward pass per step")
    s.add_argument("--compile-mixture", action="store_true",
                   help="torch.compile the activation mixture of factorized searches into one kernel each way (a "
                        "few seconds to compile, a C++ compiler needed; on CPU about 5%% faster steps than the "
                        "default hand-written mixture)")
    s.add_argument("--unrolled", action="store_true", help="DARTS second-order architecture gradient")
    s.add_argument("--beta-pass", choices=["shared", "separate"], default=SEARCH_SETTINGS.beta_pass,
                   help="separate: a second validation pass for β, exactly as Algorithm 1")
    s.add_argument("--output", type=Path, default=None, help="also write the derived genotype JSON here")


def _add_search_randgrow(engines: Any) -> None:
    grow = engines.add_parser("randgrow", help="RandGrow: grow networks from the (cost, error) hull, many trials")
    _add_common(grow, "randgrow", force=False)
    g = grow.add_argument_group("search (defaults: the paper's CIFAR-10 search)")
    g.add_argument("--space", default=GROWTH.space,
                   help="RandGrow space file or shipped name (randgrow_macro, randgrow_cell): mode, N, F and the "
                        "increment operations; --mode, --cells-per-block and --channels override it")
    g.add_argument("--mode", choices=["macro", "cell"], default=None,
                   help="macro: 3N+2 increments anywhere; cell: one per cell type, replicated (default: the "
                        "space's)")
    g.add_argument("--n-trials", type=_positive(int), default=GROWTH.n_models,
                   help="completed models the study should have")
    g.add_argument("--n-workers", type=_positive(int), default=None,
                   help="local worker processes (joblib; default: one per visible GPU, else 1)")
    g.add_argument("--devices", default="auto", help="auto (one worker per visible GPU, each on its own) or a "
                   "comma-separated list the workers take in turn (cuda:0,cuda:1; cpu)")
    g.add_argument("--cells-per-block", type=_positive(int), default=None, help="N of the initial network "
                   "(default: the space's, 6)")
    g.add_argument("--channels", type=_positive(int), default=None, help="F, initial channels, even (default: the "
                   "space's, 32)")
    g.add_argument("--cost", choices=["params", "flops"], default=GROWTH.cost, help="second objective")
    g.add_argument("--epochs", type=_positive(int), default=GROWTH.epochs, help="training epochs of each child")
    g.add_argument("--cycles", type=_positive(int), default=GROWTH.cycles, help="SGDR cycles within --epochs")
    g.add_argument("--initial-epochs", type=_positive(int), default=GROWTH.initial_epochs,
                   help="the initial model is trained as a final model: one cosine cycle this long")
    g.add_argument("--batch-size", type=_positive(int), default=GROWTH.batch_size)
    g.add_argument("--lr", type=_positive(float), default=GROWTH.lr)
    g.add_argument("--val-portion", type=float, default=GROWTH.val_portion,
                   help="share of the training set held out")
    g.add_argument("--function-preserving", action="store_true",
                   help="new increments start as no-ops, so a child starts as its parent's function")
    g.add_argument("--no-cutout", action="store_true")


def _add_retrain(sub: Any) -> None:
    retrain = sub.add_parser("retrain", help="train an architecture from scratch, one Optuna trial per run")
    retrain.add_argument("arch", nargs="?",
                         help="built-in genotype (DARTS_V1, DARTS_V2, PC_DARTS), a genotype JSON or a RandGrow JSON")
    _add_common(retrain, "retrain")
    retrain.add_argument("--trial", type=int, default=None,
                         help="retrain this trial's architecture, read from --study-name (instead of ARCH)")
    retrain.add_argument("--retrain-study", default=None,
                         help="study for the retraining trials (default: --study-name, or NAME-retrain with --trial)")
    r = retrain.add_argument_group("training (defaults: A-DARTS's for genotypes, RandGrow's final training for "
                                   "RandGrow architectures)")
    r.add_argument("--runs", type=_positive(int), default=1,
                   help="independent runs (seeds SEED, SEED+1, ...); prints mean ± std of the test error")
    r.add_argument("--epochs", type=_positive(int), default=None, help="600 (CIFAR-10) or 250 (ImageNet)")
    r.add_argument("--batch-size", type=_positive(int), default=None, help="128 (A-DARTS) or 32 (RandGrow)")
    r.add_argument("--channels", type=_positive(int), default=None,
                   help=f"DARTS networks only (default {RETRAIN.channels}, {IMAGENET_CHANNELS} with --imagenet)")
    r.add_argument("--layers", type=_positive(int), default=None,
                   help=f"DARTS networks only (default {RETRAIN.layers}, {IMAGENET_LAYERS} with --imagenet)")
    r.add_argument("--lr", type=_positive(float), default=None, help="0.03 (A-DARTS) or 0.025 (RandGrow)")
    r.add_argument("--activation", default=None, help="replace every edge's activation (e.g. relu, selu)")
    r.add_argument("--drop-path", type=float, default=None,
                   help="final drop-path rate, 0 turns it off: 0.4 (A-DARTS) or 0.2 (RandGrow)")
    r.add_argument("--auxiliary-weight", type=float, default=None, help="0.4 (A-DARTS CIFAR), 0.2 (ImageNet)")
    r.add_argument("--no-auxiliary", action="store_true")
    r.add_argument("--no-cutout", action="store_true")
    r.add_argument("--val-portion", type=float, default=None,
                   help="score on this share of the training set, held out (e.g. 0.1; default: the test error, "
                        "as the papers report it)")
    r.add_argument("--imagenet", action="store_true",
                   help="the ImageNet mobile-setting network and A-DARTS's ImageNet training (use imagefolder:PATH)")
    r.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_run(sub: Any) -> None:
    run = sub.add_parser("run", help="run a study file (a paper table, an ablation, a sweep): resumable, many workers")
    run.add_argument("study_file", help="a study YAML file, or a shipped study's name (a_darts_table2, ...)")
    run.add_argument("--preset", default=None, help="a preset of the file, e.g. tiny (CPU, minutes)")
    run.add_argument("--storage", default=DEFAULT_STORAGE,
                     help=f"Optuna storage shared by all workers: an RDB URL, a journal file, redis:// or grpc:// "
                          f"(default {DEFAULT_STORAGE})")
    run.add_argument("--study-name", default=None, help="default: the file's name (+ -PRESET)")
    _add_artifact_store(run, "checkpoints, weights, genotypes and drawings")
    run.add_argument("--n-workers", type=_positive(int), default=None,
                     help="local worker processes (joblib; default: one per visible GPU, else 1)")
    run.add_argument("--n-trials", type=_positive(int), default=None,
                     help="run at most this many new trials (default: until the grid is done)")
    run.add_argument("--devices", default="auto", help="auto (one worker per visible GPU, each on its own) or a "
                     "comma-separated list the workers take in turn (cuda:0,cuda:1; cpu)")
    _add_heartbeat(run)
    run.add_argument("--dry-run", action="store_true", help="list the grid's trials and their state; run nothing")
    run.add_argument("--json", action="store_true", help="with --dry-run: a JSON list, one object per trial")
    run.add_argument("--workers", type=int, default=DataSource().workers,
                     help=f"DataLoader processes for image folders (default {DataSource().workers})")
    run.add_argument("--quiet", action="store_true", help="no per-epoch lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="optuna-nas", description="Neural architecture search (A-DARTS, DARTS, "
                                     "PC-DARTS, RandGrow) as Optuna studies: run, search, retrain, report, export, "
                                     "info.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    search = sub.add_parser("search", help="run one architecture search as one Optuna trial")
    engines = search.add_subparsers(dest="engine", required=True)
    _add_search_darts(engines)
    _add_search_randgrow(engines)
    _add_retrain(sub)
    _add_run(sub)

    report = sub.add_parser("report", help="the paper-style table of a study (mean ± std per configuration)")
    _add_storage(report, None, required=True)
    report.add_argument("--format", choices=["markdown", "csv"], default="markdown",
                        help="markdown (paper style, mean ± std) or csv (one number per cell)")
    report.add_argument("--plots", type=Path, default=None, help="also save PNG plots into this directory")

    export = sub.add_parser("export", help="write a trial's architecture as JSON (retrain and the API read it)")
    _add_storage(export, None, required=True)
    export.add_argument("--trial", type=int, default=None, help="trial number (default: the best completed trial)")
    export.add_argument("-o", "--output", type=Path, required=True, help="the JSON file to write")
    export.add_argument("--weights", action="store_true",
                        help="also write the trial's trained weights beside it (OUTPUT with .pt), read from the "
                             "artifact store")
    _add_artifact_store(export, "the trained weights (with --weights)")

    dashboard = sub.add_parser("dashboard", help="optuna-dashboard for any storage and artifact store (S3, GCS and "
                               "grpc:// included, which optuna-dashboard's own command does not take)")
    dashboard.add_argument("--storage", default=DEFAULT_STORAGE,
                           help=f"the studies' storage (default {DEFAULT_STORAGE})")
    _add_artifact_store(dashboard, "the figures, drawings and weights the trials show")
    dashboard.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=_positive(int), default=8080, help="port (default 8080)")

    proxy = sub.add_parser("storage-proxy", help="serve one storage to many workers over gRPC: they use "
                           "--storage grpc://HOST:PORT (for hundreds of workers on one database)")
    proxy.add_argument("--storage", required=True, help="the storage to serve: an RDB URL, a journal file or redis://")
    proxy.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1; 0.0.0.0 to serve other machines)")
    proxy.add_argument("--port", type=_positive(int), default=13000, help="port (default 13000)")

    info = sub.add_parser("info", help="parameters and multiply-adds of a genotype, or a space's size")
    info.add_argument("arch", nargs="?", help="built-in genotype name or JSON file")
    info.add_argument("--space", default=None, help="search-space YAML file or shipped name: print its size")
    info.add_argument("--channels", type=_positive(int), default=RETRAIN.channels)
    info.add_argument("--layers", type=_positive(int), default=RETRAIN.layers)
    info.add_argument("--num-classes", type=_positive(int), default=10)
    info.add_argument("--in-channels", type=_positive(int), default=3)
    info.add_argument("--image-size", type=_positive(int), default=None, help="32 (CIFAR) or 224 (ImageNet)")
    info.add_argument("--imagenet", action="store_true", help="the ImageNet mobile-setting network")
    info.add_argument("--activation", default=None, help="override every edge's activation")
    info.add_argument("--json", action="store_true")
    return parser


def _data(args: argparse.Namespace) -> DataSource:
    return DataSource(args.dataset, args.data_root, args.download, args.workers)


def _context(args: argparse.Namespace) -> TrialContext:
    return TrialContext(device=args.device, artifact_store=args.artifact_store, verbose=not args.quiet)


def _heartbeat(args: argparse.Namespace) -> Heartbeat:
    return Heartbeat(args.heartbeat_interval, args.grace_period)


def _cli_study(args: argparse.Namespace, name: str, direction: str, metric: str) -> optuna.Study:
    """A study for single runs: never pruned (its trials are not a sweep; Optuna's default would prune them), and
    beating, so a run whose process died is retried from its checkpoint by the next command."""
    study = load_or_create_study(args.storage, name, [direction], [metric], heartbeat=_heartbeat(args))
    study.pruner = optuna.pruners.NopPruner()
    return study


def _held(trial: optuna.trial.FrozenTrial, ran: bool, study: optuna.Study) -> None:
    if not ran:
        print(f"trial {trial.number} of {study.study_name!r} already holds this result; nothing to run "
              "(--force runs it again)", file=sys.stderr)


def cmd_search_darts(args: argparse.Namespace) -> int:
    settings = SearchSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_min=args.lr_min,
                              weight_decay=args.weight_decay, arch_lr=args.arch_lr, unrolled=args.unrolled,
                              beta_pass=args.beta_pass, train_portion=args.train_portion,
                              val_portion=args.val_portion, warmup_epochs=args.warmup_epochs, seed=args.seed,
                              amp=args.amp)
    job = SearchJob(space=args.space, activation_mode=args.activation_mode, config_a_genotype=args.config_a,
                    partial_channels=args.partial_channels, recompute_cells=args.recompute_cells,
                    compile_mixture=args.compile_mixture, channels=args.channels, layers=args.layers, settings=settings)
    # space, mode and data are validated before storage is touched
    context = _context(args)
    objective = DartsSearchObjective(job, _data(args).load(), context)
    check_artifact_store(args.artifact_store)
    study = _cli_study(args, args.study_name, "maximize", "val_acc")
    trial, ran = run_one_trial(study, objective, objective.run_key(study.study_name), context, args.force)
    _held(trial, ran, study)
    genotype = trial.user_attrs["genotype"]
    if args.output:
        args.output.write_text(json.dumps({"genotype": genotype}, indent=2))
    print(f"trial {trial.number}: search val_acc {trial.value:.2f}%  retrain cost {trial.user_attrs['params']:,} "
          f"params, {trial.user_attrs['flops']:,} multiply-adds  ({trial.user_attrs['search_seconds']:.0f} s)")
    print(json.dumps(genotype))
    print(redact(f"see it: optuna trials --storage {for_optuna_tools(args.storage)} --study-name {args.study_name}"))
    print(f"        {dashboard_command(args.storage, args.artifact_store)}   (weights and figures in "
          f"{args.artifact_store})")
    return 0


def cmd_search_randgrow(args: argparse.Namespace) -> int:
    settings = GrowthSettings(space=args.space, mode=args.mode, cells_per_block=args.cells_per_block,
                              channels=args.channels, n_models=args.n_trials, cost=args.cost,
                              val_portion=args.val_portion, seed=args.seed, epochs=args.epochs, cycles=args.cycles,
                              initial_epochs=args.initial_epochs, batch_size=args.batch_size, lr=args.lr,
                              function_preserving=args.function_preserving, cutout=not args.no_cutout,
                              amp=args.amp)
    search = RandGrowSearch.from_settings(args.storage, args.study_name, settings, _data(args), _context(args),
                                          _heartbeat(args))
    study = run_randgrow(search, devices=worker_devices(args.devices, args.n_workers))
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    print(f"{len(complete)} models trained; the lower convex hull of ({args.cost}, validation error):")
    print(f"{'trial':>6} {'parent':>6} {'gen':>4} {args.cost:>12} {'val error %':>12}")
    for t in hull_trials(study):
        parent = "-" if t.user_attrs.get("parent") is None else t.user_attrs["parent"]
        print(f"{t.number:>6} {parent:>6} {t.user_attrs.get('generation', 0):>4} {int(t.values[1]):>12,} "
              f"{t.values[0]:>12.2f}")
    print(redact(f"export the best: optuna-nas retrain --storage {args.storage} --study-name {args.study_name} "
                 f"--trial N --dataset {args.dataset}"))
    print(f"see it: {dashboard_command(args.storage, args.artifact_store)}")
    return 0


def _retrain_settings(args: argparse.Namespace, base: TrainSettings) -> TrainSettings:
    """The published training of the architecture, with what the command line sets."""
    chosen = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "drop_path_prob": args.drop_path,
              "auxiliary_weight": args.auxiliary_weight, "amp": args.amp}
    if args.no_cutout:
        chosen["cutout"] = False
    settings = replace(base, **{k: v for k, v in chosen.items() if v is not None})
    if settings.warmup_epochs >= settings.epochs:  # a short run keeps no warm-up (ImageNet's is 5 epochs)
        settings = replace(settings, warmup_epochs=0)
    return settings


def cmd_retrain(args: argparse.Namespace) -> int:
    if (args.arch is None) == (args.trial is None):
        raise NasError("retrain needs an architecture: ARCH (name or JSON file) or --trial N of --study-name")
    if args.trial is not None:
        architecture = architecture_of_trial(load_study_by_name(args.storage, args.study_name), args.trial)
        study_name = args.retrain_study or f"{args.study_name}-retrain"
    else:
        architecture = load_architecture(args.arch)
        study_name = args.retrain_study or args.study_name
    network = {"channels": IMAGENET_CHANNELS, "layers": IMAGENET_LAYERS} if args.imagenet else {}
    chosen = {"channels": args.channels, "layers": args.layers}
    job = RetrainJob(architecture=architecture, imagenet=args.imagenet, auxiliary=not args.no_auxiliary,
                     activation=args.activation, val_portion=args.val_portion, seed=args.seed,
                     settings=_retrain_settings(args, paper_training(architecture, args.imagenet)),
                     **{**network, **{k: v for k, v in chosen.items() if v is not None}})
    replicas = Replicas.from_environment()  # started by torchrun: one trial, trained by every process
    if replicas is not None:
        args.device = replicas.device
    # architecture and data are validated before the study is touched
    context = _context(args)
    objective = RetrainObjective(job, _data(args).load(), context, replicas)
    if replicas is not None and not replicas.lead:  # only the lead touches the study
        objective.follow()
        replicas.close()
        return 0
    try:
        return _retrain_runs(args, objective, job, study_name, context)
    finally:
        if replicas is not None:
            replicas.share(None)  # done: the other processes stop
            replicas.close()


def _retrain_runs(args: argparse.Namespace, objective: RetrainObjective, job: RetrainJob, study_name: str,
                  context: TrialContext) -> int:
    check_artifact_store(args.artifact_store)
    metric = job.metric
    study = _cli_study(args, study_name, "minimize", metric)
    errors = []
    for run in range(args.runs):
        job = objective.job = replace(job, seed=args.seed + run)  # one data load for every run
        trial, ran = run_one_trial(study, objective, objective.run_key(study.study_name), context, args.force)
        _held(trial, ran, study)
        errors.append(float(trial.value))
        result = {"trial": trial.number, "seed": job.seed, metric: trial.value,
                  "test_error": trial.user_attrs["test_error"], "params": trial.user_attrs["params"],
                  "flops": trial.user_attrs["flops"]}
        if args.json:
            print(json.dumps(result))
        else:
            held_out = f"validation error {trial.value:.2f}%, " if metric == "val_error" else ""
            print(f"trial {trial.number} (seed {job.seed}): {held_out}test error {result['test_error']:.2f}%  "
                  f"{result['params']:,} params  {result['flops']:,} multiply-adds")
    if args.runs > 1:
        mean, std = statistics.fmean(errors), statistics.stdev(errors)
        print(json.dumps({"runs": args.runs, f"{metric}_mean": mean, f"{metric}_std": std}) if args.json
              else f"{metric.replace('_', ' ')} over {args.runs} runs: {mean:.2f} ± {std:.2f}%")
    print(f"see it: {dashboard_command(args.storage, args.artifact_store)}   (weights: the artifact weights.pt of "
          "each trial)", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    spec = load_study_file(args.study_file, args.preset)
    spec = replace(spec, data=replace(spec.data, workers=args.workers),
                   search_data=replace(spec.search_data, workers=args.workers))
    devices = tuple(worker_devices(args.devices, args.n_workers))  # a missing GPU is one line now
    options = RunOptions(storage=args.storage, artifact_store=args.artifact_store, study_name=args.study_name,
                         n_workers=len(devices), n_trials=args.n_trials, devices=devices,
                         heartbeat=_heartbeat(args), verbose=not args.quiet)
    if args.dry_run:
        if spec.sampler != "grid":
            raise NasError(f"--dry-run lists a grid; {spec.source} uses the {spec.sampler} sampler")
        for note in validate_run(spec, options, dry_run=True):  # what the run would refuse, refused now
            print(f"note: {note}", file=sys.stderr)
        points = grid_status(spec, options)
        if args.json:
            print(json.dumps(points))
        else:
            done = sum(p["state"] in ("complete", "pruned") for p in points)
            print(f"{study_name_of(spec, options)}: {len(points)} trials ({len(spec.configurations)} configurations "
                  f"x {len(spec.seeds)} seeds{' x sweep' if spec.sweep else ''}), {done} done")
            for p in points:
                swept = "  ".join(f"{k}={v}" for k, v in p.items() if k not in ("configuration", "seed", "state",
                                                                                  "trials"))
                print(f"  {p['configuration']:<20} seed {p['seed']:<3} {p['state']:<9} {swept}")
        return 0
    study = run_study(spec, options)
    print(format_table(study), end="")
    print(f"see it: {dashboard_command(args.storage, args.artifact_store)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    study = load_study_by_name(args.storage, args.study_name)
    print(format_table(study, args.format), end="")
    if args.plots:
        for path in save_plots(study, args.plots):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    study = load_study_by_name(args.storage, args.study_name)
    number = args.trial if args.trial is not None else best_trial_number(study)
    architecture = architecture_of_trial(study, number)
    weights = trained_weights(study, number, args.artifact_store) if args.weights else None
    text = json.dumps(architecture_to_dict(architecture), indent=2) + "\n"
    _write_atomically(args.output, lambda path: path.write_text(text, encoding="utf-8"))
    print(f"trial {number} of {args.study_name!r} -> {args.output}")
    if weights is not None:
        weights_path = args.output.with_suffix(".pt")
        _write_atomically(weights_path, lambda path: torch.save(weights, path))
        print(f"trial {number}'s trained weights -> {weights_path} (torch.load(..., weights_only=True))")
    return 0


def _write_atomically(target: Path, write: Any) -> None:
    """Never a half-written file where the user expects one: write beside it, then rename."""
    tmp = target.with_name(target.name + ".tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        tmp.replace(target)
    except OSError as exc:
        raise NasError(f"cannot write {target}: {exc.strerror}") from None


def cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    storage = open_storage(args.storage, create=False)
    print(f"optuna-dashboard on http://{args.host}:{args.port}/ for {redact(args.storage)} with artifacts in "
          f"{args.artifact_store}", file=sys.stderr)
    run_server(storage, host=args.host, port=args.port, artifact_store=open_artifact_store(args.artifact_store))
    return 0


def cmd_storage_proxy(args: argparse.Namespace) -> int:
    if storage_kind(args.storage)[0] == "grpc":
        raise NasError("storage-proxy serves a storage itself: give it the database, journal file or redis:// URL")
    open_storage(f"grpc://{args.host}:{args.port}")  # grpcio and protobuf are there, or one line says so
    storage = open_storage(args.storage)  # the workers beat through the proxy (see heartbeat.py)
    print(redact(f"serving {args.storage} on grpc://{args.host}:{args.port}; start workers with --storage "
                 f"grpc://{args.host}:{args.port}"), file=sys.stderr)
    from optuna.storages import run_grpc_proxy_server

    with warnings.catch_warnings():  # "experimental" in Optuna, and what very many workers need
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        run_grpc_proxy_server(storage, host=args.host, port=args.port)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if args.space:
        space = load_search_space(args.space)
        out: dict[str, Any] = {"space": space.name, "architectures": space.architecture_count(),
                               "per_cell": space.cell_count(), "choices_per_edge": space.choices_per_edge(),
                               "operators": list(space.all_operators), "activations": list(space.activations),
                               "arch_params_per_edge": space.architecture_parameters_per_edge()}
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
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our own lines say what happens (no tracebacks)
    try:
        if args.command == "search":
            return cmd_search_randgrow(args) if args.engine == "randgrow" else cmd_search_darts(args)
        commands = {"retrain": cmd_retrain, "run": cmd_run, "report": cmd_report, "export": cmd_export,
                    "dashboard": cmd_dashboard, "storage-proxy": cmd_storage_proxy}
        return commands.get(args.command, cmd_info)(args)
    except RunInProgress as exc:
        print(redact(f"optuna-nas: {exc}"), file=sys.stderr)
        return 3
    except NasError as exc:
        print(redact(f"optuna-nas: error: {exc}"), file=sys.stderr)
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
