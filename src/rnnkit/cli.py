"""The `rnnkit` command: thin adapters over the Python API.

User mistakes (bad paths, flags, file contents) print one line, `rnnkit: error: ...`, and exit
with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Any

from rnnkit import __version__
from rnnkit.config import (CHOICES, DEFAULT_PRESET, HELP, PRESETS, DataConfig, ModelConfig,
                           TrainConfig, preset)
from rnnkit.errors import UsageError
from rnnkit.service_cli import add_generation_flags

_GROUPS = (("data", DataConfig), ("model", ModelConfig), ("training", TrainConfig))
# The tokenizers `data stats` and `embeddings train` offer: no extra package, no trained model.
PLAIN_TOKENIZERS = ("basic", "tutorial", "whitespace", "spaced", "char")


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional_str(text: str) -> str | None:
    return None if text.lower() in ("", "none") else text


def _optional_float(text: str) -> float | None:
    """`float | None` settings: "none" (or nothing) is None, anything else a number."""
    if text.lower() in ("", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def _converter(annotation: Any) -> Any:
    hint = annotation
    if isinstance(hint, str):
        hint = eval(hint, {"__builtins__": {}}, {"str": str, "int": int, "float": float,
                                                 "bool": bool, "None": None})
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return _optional_float if float in typing.get_args(hint) else _optional_str
    return {bool: _parse_bool, int: int, float: float, str: str}[hint]


def _field_help(f: dataclasses.Field, base: Any) -> str:
    """'units per recurrent layer (default 128)': the setting's line, its choices and its
    value in `base` (the config of a run without --preset)."""
    text = HELP[f.name]
    default = getattr(base, f.name)
    if f.name in CHOICES:
        text += f" ({'|'.join(CHOICES[f.name])}; default {default})"
    elif isinstance(default, bool):
        text += f" (true|false; default {str(default).lower()})"
    elif default is None:
        text += " (default none)" if "default" not in text else ""
    else:
        text += f" (default {default:,})" if isinstance(default, int) else f" (default {default})"
    return text.replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field (`hidden_size` -> `--hidden-size`); default: the preset's.
    A flag not given leaves no attribute (argparse.SUPPRESS), so that one given as `none`
    clears the preset's value (`--preset imdb-lm --extra-train none`)."""
    base = preset(DEFAULT_PRESET)
    for (title, klass), part in zip(_GROUPS, (base.data, base.model, base.train)):
        group = parser.add_argument_group(
            f"{title} settings (a flag overrides the preset; the defaults shown are those "
            f"without --preset, {DEFAULT_PRESET}'s)")
        for f in dataclasses.fields(klass):
            group.add_argument("--" + f.name.replace("_", "-"), dest=f.name,
                               type=_converter(f.type), default=argparse.SUPPRESS,
                               metavar=f.name.upper(),
                               help=_field_help(f, part))


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = [f.name for _, k in _GROUPS for f in dataclasses.fields(k)]
    return {n: getattr(args, n) for n in names if hasattr(args, n)}


# --- commands -------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from rnnkit import api
    from rnnkit.rundir import RunDir

    from rnnkit import distributed

    overrides = config_overrides(args)
    if not args.resume and args.out and distributed.restarted() \
            and (Path(args.out) / "trainer.pt").is_file():
        # torchrun restarted the group after a failure (--max-restarts): continue the run
        # this same command created, from its last checkpoint.
        args.resume = args.out  # the same settings: check_resume finds nothing changed
    if args.resume:
        out = args.resume if isinstance(args.resume, str) else args.out
        if not out:
            raise UsageError("--resume needs the run directory: rnnkit train --resume DIR")
        cfg = RunDir(out).config().override(**overrides)
    else:
        if not args.out:
            raise UsageError("give --out DIR for the run directory")
        out = args.out
        base = preset(args.preset or DEFAULT_PRESET)
        cfg = base.override(**overrides)
    report = () if args.report == "none" else tuple(args.report.split(","))
    if any(split not in ("valid", "test") for split in report):
        raise UsageError(f"--report takes valid, test, valid,test or none; got {args.report!r}")
    distributed.init_from_environment(cfg.train.device)  # under torchrun: join the group
    # Progress and log lines go to standard error, so that standard output carries only the
    # result: the JSON object with --json, else the run's path.
    try:
        results = api.train_run(cfg, out, resume=bool(args.resume), max_steps=args.max_steps,
                                log=_stderr, log_every=args.log_every, report=report,
                                explicit=frozenset(overrides))
    finally:
        main_process = distributed.is_main()
        distributed.shutdown()
    if not main_process:
        return 0
    if args.json:
        print(json.dumps(results))
    else:
        print(f"run saved in {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rnnkit import api

    overrides = {k: v for k, v in (("train", args.train_file), ("valid", args.valid),
                                   ("test", args.test)) if v}
    metrics = api.evaluate_run(args.run, args.split, overrides, log=_stderr, device=args.device)
    if args.json:
        print(json.dumps(metrics))
    elif "perplexity" in metrics:
        words = (f"  per word {metrics['word_perplexity']:.2f} over {metrics['words']:,} words"
                 if "word_perplexity" in metrics else "")  # a subword vocabulary
        print(f"{args.split}: perplexity {metrics['perplexity']:.2f}  loss {metrics['loss']:.4f}"
              f"  tokens {metrics['tokens']:,}{words}")
    else:
        from rnnkit.classification import branch_note

        alone = branch_note(metrics)  # a run with the n-gram branch: each branch alone
        print(f"{args.split}: accuracy {metrics['accuracy']:.4f}  macro F1 "
              f"{metrics['macro_f1']:.4f}  ({metrics['examples']:,} examples)"
              + (f"; {alone}" if alone else ""))
        for name, row in metrics["per_class"].items():
            print(f"  {name:>12}: precision {row['precision']:.4f}  recall {row['recall']:.4f}"
                  f"  F1 {row['f1']:.4f}  support {row['support']}")
        print("confusion matrix (rows: true, columns: predicted):")
        for name, row in zip(metrics["labels"], metrics["confusion_matrix"]):
            print(f"  {name:>12}: " + " ".join(f"{v:>7}" for v in row))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from rnnkit.predict import Predictor
    from rnnkit.data.readers import read_lines

    predictor = Predictor.load(args.run)
    encoding = args.encoding or predictor.cfg.data.encoding
    texts = list(args.texts)
    if args.file:
        texts += [line for line in read_lines(args.file, encoding) if line.strip()]
    if not texts:
        if sys.stdin.isatty():
            raise UsageError("give texts as arguments, --file FILE, or lines on standard input")
        texts = [line for line in read_lines("-", encoding) if line.strip()]
    if not texts:
        raise UsageError("no text to predict: the input is empty")
    for text, pred in zip(texts, predictor.predict(texts)):
        if args.json:
            print(json.dumps({"text": text, **pred.to_dict()}))
        else:
            print(f"{pred.label}\t{pred.probability:.4f}\t{text}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from rnnkit.generate import GenerationSettings, LanguageModelRunner

    settings = GenerationSettings.from_args(args)
    lm = LanguageModelRunner.load(args.run)
    tokens = lm.sample(args.prompt, settings)
    text = lm.detokenize(tokens)
    if args.json:
        print(json.dumps({"prompt": args.prompt, "tokens": tokens, "text": text}))
    else:
        print(args.prompt + " " + text)
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from rnnkit.generate import LanguageModelRunner
    from rnnkit.data.readers import read_lines

    lm = LanguageModelRunner.load(args.run)
    result = lm.score(read_lines(args.file, args.encoding or lm.cfg.data.encoding))
    if args.json:
        print(json.dumps(result))
    else:
        print(f"perplexity {result['perplexity']:.2f}  loss {result['loss']:.4f}  tokens "
              f"{result['tokens']:,}  unknown {result['unknown_tokens']:,}")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from rnnkit.data.stats import length_stats

    stats = length_stats(args.dataset, args.split, args.text_field, args.label_field,
                         args.tokenizer, args.out, args.coverage, args.valid, args.min_freq,
                         args.encoding)
    if args.json:
        print(json.dumps(stats))
        return 0
    print(f"{stats['source']}: {stats['texts']:,} texts, {stats['tokens']:,} tokens")
    print("tokens per text: " + "  ".join(f"{k} {stats[k]:,.0f}" for k in
                                          ("min", "mean", "median", "p90", "p95", "max")))
    print(f"suggested max_len {stats['suggested_max_len']} (covers "
          f"{stats['coverage']:.0%} of texts whole)")
    print(f"vocabulary {stats['vocabulary']:,} (tokens seen {stats['min_freq']}+ times, of "
          f"{stats['distinct_tokens']:,} distinct; {stats['singleton_share']:.0%} seen once); "
          f"unknown tokens {stats['unknown_share']:.1%} of {stats['valid_tokens']:,} in "
          f"{stats['valid_source']}")
    for warning in stats["warnings"]:
        print(warning)
    print(f"histogram written to {stats['histogram']}")
    return 0


def cmd_embeddings_train(args: argparse.Namespace) -> int:
    from rnnkit.data.stats import corpus_for_word2vec
    from rnnkit.data.embeddings import train_word2vec

    corpus = corpus_for_word2vec(args.corpus, args.text_field, args.tokenizer)
    words = train_word2vec(corpus, Path(args.out), args.dim, args.window, args.min_count,
                           args.epochs, args.workers, args.seed, args.skipgram)
    print(f"{words:,} word vectors of dimension {args.dim} written to {args.out}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for name in PRESETS:
        cfg = preset(name)
        m = cfg.model
        print(f"{name:16} {m.task:8} {m.cell} {m.num_layers}x{m.hidden_size}"
              f"{' bi' if m.bidirectional else ''}  data={cfg.data.dataset or 'your files'}")
    return 0


def _stderr(*parts: Any, flush: bool = True, **_: Any) -> None:
    print(*parts, file=sys.stderr, flush=flush)


# --- parser ---------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with our one-line errors: `rnnkit: error: train: argument --lr: ...`, exit 2
    (argparse's own print the usage text first). Sub-command parsers inherit the class."""

    def error(self, message: str) -> typing.NoReturn:
        where = self.prog.removeprefix("rnnkit").strip()
        sys.stderr.write(f"rnnkit: error: {where + ': ' if where else ''}{message}\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rnnkit", description="Recurrent text models: train, "
                                     "evaluate, predict, generate.")
    parser.add_argument("--version", action="version", version=f"rnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (from a preset, overridable field by field)",
                       usage="rnnkit train [--preset NAME] [--out DIR] [--SETTING VALUE ...]")
    p.add_argument("--preset", metavar="NAME",
                   help=f"start from a named preset ({', '.join(PRESETS)}); default "
                        f"{DEFAULT_PRESET}")
    p.add_argument("--out", metavar="DIR",
                   help="the run directory to create (required for a new run)")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="DIR",
                   help="continue the interrupted run in DIR (or --out) exactly where it stopped")
    p.add_argument("--json", action="store_true",
                   help="print the final results as one JSON object on stdout")
    p.add_argument("--max-steps", type=int, default=0, metavar="N",
                   help="stop (resumably) after this many optimizer steps (default 0: no limit)")
    p.add_argument("--log-every", type=int, default=0, metavar="N",
                   help="print a progress line every N batches (default 0: about ten an "
                        "epoch)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="train in N processes on this machine through torch's launcher "
                        "(torch.distributed.run); --batch-size is per process (default 1)")
    p.add_argument("--report", default="valid,test", metavar="SPLITS",
                   help="splits evaluated with the best weights after training: valid,test "
                        "(default), valid, test or none (then `rnnkit evaluate` later)")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a trained run on a split")
    p.add_argument("run", help="the run directory")
    p.add_argument("--split", default="test", choices=("train", "valid", "test"),
                   help="the split to evaluate (default test)")
    p.add_argument("--json", action="store_true", help="print one JSON object of metrics")
    p.add_argument("--test", help="evaluate on this file instead of the run's test split")
    p.add_argument("--valid", help="evaluate on this file instead of the run's valid split")
    p.add_argument("--train", dest="train_file", help=argparse.SUPPRESS)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: where the run trained, if "
                   "that device is here, else the CPU)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="label texts with a trained classifier")
    p.add_argument("run", help="the run directory of a classifier")
    p.add_argument("texts", nargs="*", help="texts to label (else --file or standard input)")
    p.add_argument("--file", help="a file with one text per line ('-' for standard input)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--encoding", metavar="NAME",
                   help="encoding of --file or standard input (default: the run's, utf-8)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("generate", help="continue a prompt with a trained language model")
    p.add_argument("run", help="the run directory of a language model")
    p.add_argument("--prompt", required=True, help="the text to continue")
    add_generation_flags(p)
    p.add_argument("--json", action="store_true",
                   help="print the prompt, the tokens and the text as JSON")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("score", help="perplexity of a text file under a language model")
    p.add_argument("run", help="the run directory of a language model")
    p.add_argument("file", help="text file, one sentence per line ('-' for standard input)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--encoding", metavar="NAME",
                   help="encoding of the file (default: the run's, utf-8)")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("data", help="look at data").add_subparsers(dest="data_command",
                                                                     required=True)
    s = p.add_parser("stats", help="tokens per text, unknown tokens, histogram, suggested "
                                   "max_len")
    s.add_argument("dataset", help="a registered dataset name or a file/folder")
    s.add_argument("--split", default="train",
                   help="the dataset's split to describe (default train)")
    s.add_argument("--valid", metavar="FILE",
                   help="validation file for the unknown-token share (default: the dataset's "
                        "valid split, else 10%% carved from the described texts)")
    s.add_argument("--text-field", default="text",
                   help="column or JSON field of the text (default text)")
    s.add_argument("--label-field", default="label",
                   help="column or JSON field of the label, for folders (default label)")
    s.add_argument("--encoding", default="utf-8", help="encoding of the files (default utf-8)")
    s.add_argument("--tokenizer", default="basic", choices=PLAIN_TOKENIZERS,
                   help="tokenizer (default basic)")
    s.add_argument("--min-freq", type=int, default=2,
                   help="vocabulary cut-off for the unknown-token share (default 2, as "
                        "lstm-classifier)")
    s.add_argument("--coverage", type=float, default=0.9,
                   help="suggest the length that keeps this share of texts whole (default 0.9)")
    s.add_argument("--out", default="lengths.png",
                   help="histogram PNG path (default lengths.png)")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    s.set_defaults(func=cmd_data_stats)

    p = sub.add_parser("embeddings", help="word vectors").add_subparsers(dest="emb_command",
                                                                         required=True)
    s = p.add_parser("train", help="train word2vec vectors with gensim")
    s.add_argument("--corpus", required=True, nargs="+",
                   help="text files or registered datasets (imdb:unsup, ptb:train)")
    s.add_argument("--out", required=True, help="vectors file (.txt or .txt.gz)")
    s.add_argument("--text-field", default="text",
                   help="column or JSON field of the text in table files (default text)")
    s.add_argument("--tokenizer", default="basic", choices=PLAIN_TOKENIZERS,
                   help="tokenizer; use the one of the runs the vectors are for (default basic)")
    s.add_argument("--dim", type=int, default=100, help="vector size (default 100)")
    s.add_argument("--window", type=int, default=5, help="context window (default 5)")
    s.add_argument("--min-count", type=int, default=5,
                   help="ignore words seen fewer times (default 5)")
    s.add_argument("--epochs", type=int, default=5, help="passes over the corpus (default 5)")
    s.add_argument("--workers", type=int, default=2, help="worker threads (default 2)")
    s.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    s.add_argument("--skipgram", action="store_true",
                   help="skip-gram instead of CBOW (default CBOW)")
    s.set_defaults(func=cmd_embeddings_train)

    p = sub.add_parser("presets", help="list the named presets")
    p.set_defaults(func=cmd_presets)

    from rnnkit.service_cli import add_commands

    add_commands(sub)
    return parser


TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def _reexec_with_tcmalloc() -> None:
    """Training allocates and frees many same-sized tensors per step; glibc's malloc handles
    that poorly on CPU. Where Debian's tcmalloc is installed, restart the process with it
    preloaded (measured: +25-30% LM training speed). RNNKIT_NO_TCMALLOC=1 turns this off."""
    if os.environ.get("RNNKIT_NO_TCMALLOC") or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    if not os.path.exists(TCMALLOC):
        return
    env = dict(os.environ, LD_PRELOAD=":".join(filter(None, [TCMALLOC,
                                                             os.environ.get("LD_PRELOAD")])))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "rnnkit", *sys.argv[1:]], env)


def _launch(nproc: int, argv: list[str]) -> int:
    """`rnnkit train --nproc N ...`: the same command in N processes on this machine,
    started by torch's own launcher (what `torchrun --standalone --nproc-per-node N -m
    rnnkit train ...` does), one torch thread each unless OMP_NUM_THREADS says otherwise."""
    if nproc < 1 or nproc > 1024:
        raise SystemExit(f"rnnkit: error: --nproc must be in [1, 1024], got {nproc}")
    # distributed.launched(), without importing torch here: the launcher and each process
    # import it themselves, and on 2 cores a third import costs the start ~2 s.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit("rnnkit: error: --nproc under torchrun: give the number of "
                         "processes to torchrun only")
    rest, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            rest.append(arg)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", "-m", "rnnkit", *rest]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: the processes talk on loopback
    import subprocess

    # The processes' log lines pass through. A user mistake stops every process with the same
    # one-line error: it is said once, exit code 2, without the launcher's failure report.
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    assert proc.stderr is not None
    error = None
    try:
        for line in proc.stderr:
            if line.startswith("rnnkit: error:"):
                if error is None:
                    sys.stderr.write(line)
                error = error or line
            elif error is None:
                sys.stderr.write(line)
        code = proc.wait()
    except KeyboardInterrupt:  # the launcher stops the processes on the same Ctrl-C
        code = proc.wait()
    return 2 if error else code


def _with_extra_train_args(argv: list[str]) -> list[str]:
    """RNNKIT_TRAIN_ARGS adds flags to every `rnnkit train` (smoke tests of scripts and docs:
    RNNKIT_TRAIN_ARGS="--epochs 1 --limit-train 1000")."""
    extra = os.environ.get("RNNKIT_TRAIN_ARGS", "").strip()
    if not extra or not argv or argv[0] != "train":
        return argv
    return [*argv, *shlex.split(extra)]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(
        _with_extra_train_args(sys.argv[1:] if argv is None else argv))
    if extra and getattr(args, "texts", None) is not None \
            and not any(a.startswith("-") for a in extra):
        # `predict RUN --json t1 t2`: argparse fills the texts before it sees the flag and
        # leaves the rest over; they are texts, in order.
        args.texts = [*args.texts, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "train" and args.nproc != 1:
        return _launch(args.nproc, sys.argv[1:] if argv is None else argv)
    if argv is None and args.command == "train":
        _reexec_with_tcmalloc()
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"rnnkit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
