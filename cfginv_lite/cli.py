"""Command line: ``python -m cfginv_lite compare ...``.

Generates a fixed, seeded set of images per prompt at each guidance scale, inverts them
with each requested method at the same scale, regenerates them, and prints a table of
reconstruction errors and costs. Progress bars go to stderr, the table to stdout.

Every argument and output path is checked before the first network call. A value given
twice to --cfg, --steps or --methods is run once (a note on stderr says so). A run that stops
early (an error, Ctrl-C, or SIGTERM) still prints, and writes, the rows it finished; if the
table cannot be printed (a closed pipe, a full disk) the files are still written. ``--plot``
and ``--markdown`` never replace a file cfginv-lite did not write itself, nor a symbolic
link, unless ``--force``; this is checked again when the files are written, so a file that
appeared during the run (or a second run's) is left alone and the results go to a new file.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

from tqdm.auto import tqdm

from .validation import check_int, check_seed
from .guidance import check_guidance_scale
from .devices import resolve_device
from .outputs import OutputPathError, check_output_file, write_output
from .ownership import MARKDOWN_MARKER, SOFTWARE, is_tool_image, is_tool_markdown
from .presentation import format_table, plot_rows
from .schedule import SD1_SCHEDULER_CONFIG, SPACINGS, timestep_grid

SAMPLERS = ("ddim", "lms", "own")  # own: the method's own sampler (EDICT, BDIA; DDIM otherwise)
MAX_IMAGES_PER_DIGIT = 1000
PLOT_FORMATS = ("png", "pdf", "svg")
#: Models whose prompts and real images compare makes itself (both draw digits 0..9).
COMPARE_MODELS = ("digits", "digits-split", "mini-sd")


def _real_images(model_name: str, labels: list[int], seed: int, model: Any) -> Any:
    """Real images from the model's own data: mini-sd's held-out MNIST split, digits-split's held-out
    digits, the digits model's dataset (its training images)."""
    if model_name == "mini-sd":
        from .mnist import heldout_digits

        return heldout_digits(labels, seed=seed)
    from .data import real_digits

    held = 50 if model_name == "digits-split" else 0   # the split the shipped digits-split model was trained with
    return real_digits(labels, size=model.latent_shape[-1], seed=seed, heldout_per_digit=held)


def _methods() -> dict[str, Any]:
    from .methods import METHODS

    return METHODS


def compare(model_name: str = "digits", cfgs: Sequence[float] = (1, 3, 5, 7.5), steps_list: Sequence[int] = (20, 50),
            methods: Sequence[str] = ("naive",), images_per_digit: int = 2, seed: int = 0,
            spacing: str = "linspace", sampler: str = "ddim", real: bool = False,
            progress: bool = True, device: str | None = None,
            into: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run the comparison and return one row (dict) per (set, cfg, steps, method).

    Rows are appended to ``into`` (when given) as they finish, so a caller keeps them if a
    later job fails. Every argument is validated (:func:`check_compare_args`) before any work.
    """
    from . import load_model
    from .experiment import digit_prompts, reconstruct
    from .sampling import generate

    check_compare_args(model_name, cfgs, steps_list, methods, images_per_digit, seed, spacing, sampler, device)

    unknown = [m for m in methods if m not in _methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(_methods())}")
    model = load_model(model_name, **({"device": device} if device else {}))
    prompts, labels = digit_prompts(images_per_digit)
    rows: list[dict[str, Any]] = [] if into is None else into
    jobs = [(s, w, m) for s in steps_list for w in cfgs for m in methods]
    bar = tqdm(total=len(jobs) * (2 if real else 1), desc="compare", disable=not progress, file=sys.stderr)
    for steps in steps_list:
        grid = timestep_grid(steps, spacing, model.scheduler_config)
        real_images = _real_images(model_name, labels, seed, model).to(model.device) if real else None
        for scale in cfgs:
            gen = generate(model, prompts, scale, grid, seed=seed)
            for method in methods:
                sets = [("generated", gen.images, gen.noise)] + ([("real", real_images, None)] if real else [])
                for name, images, noise in sets:
                    rec = reconstruct(model, images, prompts, scale, grid, method=method, true_noise=noise,
                                      sampler=sampler)
                    s = rec.summary()
                    rows.append({"set": name, "cfg": scale, "steps": steps, "method": method, "nfe": s["nfe"],
                                 "nfe_bwd": s["nfe_backward"], "latent_rmse": s["latent_rmse"],
                                 "image_rmse": s["image_rmse"], "psnr_db": s["psnr"], "seconds": s["seconds"]})
                    bar.update()
    bar.close()
    return rows


def check_compare_args(model_name: Any = "digits", cfgs: Any = (1, 3, 5, 7.5), steps_list: Any = (20, 50),
                       methods: Any = ("naive",), images_per_digit: Any = 2, seed: Any = 0,
                       spacing: Any = "linspace", sampler: Any = "ddim", device: Any = None) -> dict[str, Any]:
    """Validate every :func:`compare` argument (cheap: no model, no network call); return them normalised.

    Each steps value is checked against the spacing by building its grid, so ``--steps 2 0``
    or ``--steps 20 5000`` fails before the first job instead of after the earlier ones.
    """
    if model_name not in COMPARE_MODELS:
        raise ValueError(f"compare generates prompts for the digits models {COMPARE_MODELS}, got model "
                         f"{model_name!r}; use the Python API for Stable Diffusion")
    for what, values in (("cfg", cfgs), ("steps", steps_list), ("methods", methods)):
        if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__") or not list(values):
            raise ValueError(f"{what} must be a non-empty list, got {values!r}")
    cfgs = [check_guidance_scale(w) for w in cfgs]
    steps_list = [check_int("steps", n, minimum=1) for n in steps_list]
    if spacing not in SPACINGS:
        raise ValueError(f"unknown spacing {spacing!r}; choose one of {SPACINGS}")
    for n in steps_list:
        timestep_grid(n, spacing, SD1_SCHEDULER_CONFIG)  # the digits model's schedule
    methods = list(methods)
    unknown = [m for m in methods if not isinstance(m, str) or m not in _methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {sorted(_methods())}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    return dict(model_name=model_name, cfgs=cfgs, steps_list=steps_list, methods=methods,
                images_per_digit=check_int("images per digit", images_per_digit, minimum=1,
                                           maximum=MAX_IMAGES_PER_DIGIT),
                seed=check_seed(seed), spacing=spacing, sampler=sampler,
                device=None if device is None else str(resolve_device(device)))



def _check_plot_path(path: str, force: bool) -> Path:
    fmt = Path(path).suffix.lstrip(".").lower()
    if fmt not in PLOT_FORMATS:
        raise OutputPathError(f"--plot {path!r}: the file name must end in one of "
                              f"{', '.join('.' + f for f in PLOT_FORMATS)}")
    return check_output_file(path, what="--plot file", force=force, owned=is_tool_image)


class _Output:
    """An output file accepted before the run, and what was at its path then (for the write-time check)."""

    def __init__(self, path: Path, *, force: bool, owned: Any, what: str) -> None:
        self.path, self.force, self.owned, self.what = path, force, owned, what
        self.existed = os.path.lexists(path)

    def write(self, write: Any) -> None:
        write_output(self.path, write, existed=self.existed, force=self.force, owned=self.owned, what=self.what)


def _say(message: str) -> None:
    """A line on stderr that never raises (stderr may be a closed pipe too)."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


def _write_outputs(rows: list[dict[str, Any]], markdown: _Output | None, plot: _Output | None) -> list[str]:
    """Write each requested file independently (one failing never blocks the other); return the errors."""
    errors = []
    if markdown is not None:
        text = MARKDOWN_MARKER + "\n" + format_table(rows, markdown=True) + "\n"
        try:
            markdown.write(lambda tmp: tmp.write_text(text, encoding="utf-8"))
            _say(f"saved {markdown.path}")
        except OSError as err:
            errors.append(f"could not write --markdown {str(markdown.path)!r}: {err.strerror or err}")
    if plot is not None:
        try:
            plot.write(lambda tmp: plot_rows(rows, str(tmp), software=SOFTWARE))
            _say(f"saved {plot.path}")
        except (OSError, ValueError) as err:
            errors.append(f"could not write --plot {str(plot.path)!r}: {err.strerror or err}"
                          if isinstance(err, OSError) else f"could not write --plot {str(plot.path)!r}: {err}")
    return errors


def _dedupe(args: argparse.Namespace) -> None:
    """A value repeated in --cfg, --steps or --methods is run once (same rows, half the time); say so."""
    for option, attr in (("--cfg", "cfg"), ("--steps", "steps"), ("--methods", "methods")):
        values = getattr(args, attr)
        unique = list(dict.fromkeys(values))
        if len(unique) < len(values):
            repeated = sorted({f"{v:g}" if isinstance(v, float) else str(v) for v in values if values.count(v) > 1})
            _say(f"note: {option} {' '.join(repeated)} given more than once; running each value once")
            setattr(args, attr, unique)


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the finished rows are printed and written."""


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m cfginv_lite`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m cfginv_lite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare", help="invert and regenerate a seeded set; print a table",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="digits", choices=COMPARE_MODELS,
                   help="model name: digits (8x8 pixels; its real images are its training images), digits-split "
                        "(the same network trained without 50 digits per class: its real images are those) or "
                        "mini-sd (MNIST latent diffusion; its real images are the held-out split)")
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 5.0, 7.5],
                   help="guidance scales, finite and >= 0")
    p.add_argument("--steps", type=int, nargs="+", default=[20, 50],
                   help="numbers of DDIM steps, >= 1 (at most 999 with linspace/leading, 666 with trailing)")
    p.add_argument("--methods", nargs="+", default=["naive"], help=f"inversion methods: {', '.join(sorted(_methods()))}")
    p.add_argument("--images-per-digit", type=int, default=2, help=f"1..{MAX_IMAGES_PER_DIGIT} (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0..2**64-1 (default 0)")
    p.add_argument("--spacing", choices=SPACINGS, default="linspace", help="timestep grid")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="regeneration sampler (own: each method's own, e.g. EDICT's; DDIM for the others)")
    p.add_argument("--real", action="store_true",
                   help="also invert real dataset digits (mini-sd: held-out images it never saw in training)")
    p.add_argument("--plot", metavar="FILE.png", help="save the error-vs-CFG figure (.png, .pdf or .svg)")
    p.add_argument("--markdown", metavar="FILE.md", help="also write the table as Markdown")
    p.add_argument("--force", action="store_true",
                   help="let --plot/--markdown overwrite existing files that cfginv-lite did not write "
                        "(files it wrote itself are replaced without --force)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cpu for digits)")
    p.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit 0 on success, 2 with a one-line message for a bad argument or a failed run,
    130 after Ctrl-C and 143 after SIGTERM (the finished rows printed and written in both cases)."""
    parser = build_parser()
    try:
        return _main(parser, argv)
    except KeyboardInterrupt as stop:  # before or after the run (the run itself keeps its rows)
        _say(f"{parser.prog}: {'terminated' if isinstance(stop, _Terminated) else 'interrupted'}")
        return 143 if isinstance(stop, _Terminated) else 130


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    _dedupe(args)
    try:  # all checks before the first network call: a typo costs no computation
        settings = check_compare_args(args.model, args.cfg, args.steps, args.methods, args.images_per_digit,
                                      args.seed, args.spacing, args.sampler, args.device)
        markdown = None if args.markdown is None else _Output(check_output_file(
            args.markdown, what="--markdown file", force=args.force, owned=is_tool_markdown),
            force=args.force, owned=is_tool_markdown, what="--markdown file")
        plot = None if args.plot is None else _Output(_check_plot_path(args.plot, args.force),
                                                       force=args.force, owned=is_tool_image, what="--plot file")
        if markdown is not None and plot is not None and markdown.path == plot.path:
            raise OutputPathError("--markdown and --plot name the same file; give two different names")
    except ValueError as exc:
        parser.error(str(exc))
    rows: list[dict[str, Any]] = []
    failure: BaseException | None = None
    with _SigtermGuard() as sigterm:
        try:
            compare(**settings, real=args.real, progress=not args.no_progress, into=rows)
        except (ValueError, OSError, KeyboardInterrupt) as exc:  # user-facing: keep the rows, no traceback
            failure = exc
        except BaseException:
            sigterm.defer()
            _report(rows, markdown, plot, partial=True)  # an unexpected bug still keeps the finished rows
            raise
        sigterm.defer()  # a SIGTERM from now on waits until the rows are written
        errors = _report(rows, markdown, plot, partial=failure is not None)
    if sigterm.deferred and failure is None:
        failure = _Terminated()
    if isinstance(failure, KeyboardInterrupt):
        for message in errors:
            _say(f"{parser.prog}: error: {message}")
        raise failure
    if failure is not None:
        errors.insert(0, f"the run stopped after {len(rows)} row(s): {failure}")
    for message in errors:
        _say(f"{parser.prog}: error: {message}")
    return 2 if errors else 0


class _SigtermGuard:
    """SIGTERM raises :class:`_Terminated` while the run goes (so the finished rows are kept, as
    with Ctrl-C); after :meth:`defer` it is only noted, so it cannot cut the writing of the
    files short. Main thread only (elsewhere Python allows no handler: a no-op)."""

    def __init__(self) -> None:
        self.previous: Any = None
        self.installed = False
        self.deferred = False

    def _raise(self, signum: int, frame: Any) -> None:
        raise _Terminated()

    def _note(self, signum: int, frame: Any) -> None:
        self.deferred = True

    def __enter__(self) -> "_SigtermGuard":
        try:
            self.previous = signal.signal(signal.SIGTERM, self._raise)
            self.installed = True
        except (ValueError, AttributeError, OSError):  # not the main thread, or no SIGTERM here
            pass
        return self

    def defer(self) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, self._note)

    def __exit__(self, *exc: Any) -> None:
        if self.installed:
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signal.SIGTERM, self.previous)


def _report(rows: list[dict[str, Any]], markdown: _Output | None, plot: _Output | None,
            partial: bool) -> list[str]:
    """Print the table and write the files for the rows there are (all of them, or the finished ones).

    The files are written even when the table cannot be printed (stdout a closed pipe, or a
    file on a full disk); that failure is one of the returned errors.
    """
    if not rows:
        return []
    errors: list[str] = []
    if partial:
        _say(f"(partial results: the {len(rows)} row(s) finished before the run stopped)")
    try:
        print(format_table(rows), flush=True)
    except (OSError, ValueError) as err:  # BrokenPipeError, ENOSPC, a closed sys.stdout
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err) or type(err).__name__
        errors.append(f"could not print the table to stdout ({reason})"
                      + ("; the --markdown/--plot files are written all the same" if markdown or plot else ""))
        _silence_stdout()
    return errors + _write_outputs(rows, markdown, plot)


def _silence_stdout() -> None:
    """After a failed print, point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
