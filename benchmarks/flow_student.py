"""The guidance-distilled student (``digits-flow-student``) against its CFG teacher (``digits-flow``).

(a) gate: the student's velocity vs the teacher's guided velocity ``v_u + w (v_c - v_u)`` on the 500
    held-out digits at seeded ``t`` and noise, ``w`` = 1, 3, 7.5: median relative error, and the paired
    ratio to the untrained baseline (the student's starting point: the teacher's conditional branch);
(b) gate: classifier accuracy of 100 digits the student generates at embedded ``w = 3`` (20 Euler steps;
    the RBF SVM of ``benchmarks/flow_gates.py``, fitted on the training side only);
(c) reversed Euler inversion + Euler regeneration of 100 held-out digits (10 steps) at ``w`` = 1, 3, 7.5:
    student at embedded ``w`` vs teacher at CFG ``w`` (paired ratio student / teacher, NFE per image);
    the student's negative-prompt analogue (invert at embedded 1, regenerate at embedded ``w``) vs
    inverting at ``w``; negative-prompt inversion on the teacher (Miyake et al. 2023);
(d) null-text inversion has nothing to optimise: the largest change of the student's guided velocity when
    the unconditional embedding is replaced by noise (must be exactly 0).

The outputs are replaced only if this script wrote them (``--force`` overrides), atomically.

    OMP_NUM_THREADS=1 python benchmarks/flow_student.py             # docs/flow_student.{json,md}
    python benchmarks/flow_student.py --quick --out-dir /tmp/fs      # smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from cfginv_lite import load_model
from cfginv_lite.data import split_digit_set, train_digit_classifier
from cfginv_lite.evidence import paired_ratio, spread
from cfginv_lite.flow_quality import flow_generation_accuracy
from cfginv_lite.flow_student import ignores_unconditional, student_round_trips, velocity_match
from cfginv_lite.outputs import OutputPathError, check_output_file, write_output

WRITTEN_BY = "benchmarks/flow_student.py"
HEADER = "# The guidance-distilled student vs its CFG teacher (digits-flow-student, held-out digits)"
SCALES = (1.0, 3.0, 7.5)


def _sd(s) -> dict[str, float]:
    return {"median": s.median, "q25": s.q25, "q75": s.q75, "ci_low": s.ci_low, "ci_high": s.ci_high, "n": s.n}


def _f(s: dict[str, float]) -> str:
    return f"{s['median']:.3g} [{s['ci_low']:.3g}-{s['ci_high']:.3g}]"


def markdown(r: dict[str, Any]) -> str:
    v, c = r["a_velocity_match"], r["c_round_trips"]
    lines = [HEADER, "", f"Written by `{WRITTEN_BY}` (do not edit by hand). Medians with bootstrap 95% intervals.", "",
             f"(a) velocity relative error on {v['n']} held-out digits (student vs teacher's guided velocity; "
             "baseline: the teacher's conditional branch alone, the untrained student):", "",
             "| w | student | baseline | paired ratio student / baseline |", "|---|---|---|---|"]
    for w, e in v["scales"].items():
        lines.append(f"| {w} | {_f(e['student'])} | {_f(e['baseline'])} | "
                     f"{_f(e['paired_ratio']) if e['paired_ratio'] else 'baseline exact at w = 1'} |")
    g = r["b_generation_accuracy"]
    lines += ["", f"(b) {g['n']} digits generated at embedded w = 3 ({g['steps']} Euler steps) recognised: "
              f"{g['accuracy']:.2f} [{g['ci_low']:.2f}-{g['ci_high']:.2f}]", "",
              f"(c) reversed Euler + Euler, {c['n']} held-out digits, {c['steps']} steps, image RMSE; inversion NFE "
              f"per image: teacher {c['nfe']['teacher']}, student {c['nfe']['student']}:", "",
              "| w | teacher CFG w | student embedded w | student / teacher | student: invert at 1, regenerate at w "
              "| (invert at 1) / (invert at w) | teacher negative-prompt inversion |", "|---|---|---|---|---|---|---|"]
    for w, e in c["scales"].items():
        lines.append(f"| {w} | {_f(e['teacher'])} | {_f(e['student'])} | {_f(e['student_over_teacher'])} | "
                     f"{_f(e['student_from1'])} | {_f(e['from1_over_atw'])} | {_f(e['teacher_npi'])} |")
    lines += ["", f"(d) largest change of the student's guided velocity when the unconditional embedding is noise: "
              f"{r['d_uncond_change']} (no unconditional branch: null-text inversion has nothing to optimise).", "",
              f"Run: `{r['command']}` ({r['env']}; {r['seconds']} s)"]
    return "\n".join(lines) + "\n"


def _ours_json(path: Path) -> bool:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):
        return False


def _ours_md(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.readline().rstrip("\r\n") == HEADER
    except OSError:
        return False


def measure(quick: bool) -> dict[str, Any]:
    """Every number of the report (``quick``: 1 image per digit, 3 steps)."""
    per_digit, held, steps, gen_steps = (1, 2, 3, 4) if quick else (10, 50, 10, 20)
    student, teacher = load_model("digits-flow-student"), load_model("digits-flow")
    images, labels = split_digit_set("heldout", held)
    match = velocity_match(student, teacher, images, labels, SCALES)
    a = {"n": len(labels), "scales": {}}
    for w, e in match.items():
        a["scales"][f"{w:g}"] = {"student": _sd(spread(e["student"])), "baseline": _sd(spread(e["baseline"])),
                                 "paired_ratio": None if w == 1.0 else _sd(paired_ratio(e["student"], e["baseline"]))}
    acc, _ = flow_generation_accuracy(student, train_digit_classifier(heldout_per_digit=50), per_digit=per_digit,
                                      scale=3.0, steps=gen_steps, seed=0)
    rt = student_round_trips(student, teacher, per_digit=per_digit, steps=steps, scales=SCALES)
    c = {"n": 10 * per_digit, "steps": steps, "nfe": rt.nfe, "scales": {}}
    for w in SCALES:
        c["scales"][f"{w:g}"] = {
            "teacher": _sd(spread(rt.teacher[w])), "student": _sd(spread(rt.student[w])),
            "student_over_teacher": _sd(paired_ratio(rt.student[w], rt.teacher[w])),
            "student_from1": _sd(spread(rt.student_from1[w])),
            "from1_over_atw": _sd(paired_ratio(rt.student_from1[w], rt.student[w])),
            "teacher_npi": _sd(spread(rt.teacher_npi[w]))}
    return {"a_velocity_match": a,
            "b_generation_accuracy": {"accuracy": acc.accuracy, "ci_low": acc.ci_low, "ci_high": acc.ci_high,
                                      "n": acc.n, "scale": 3.0, "steps": gen_steps},
            "c_round_trips": c, "d_uncond_change": ignores_unconditional(student, images[:20], labels[:20])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="docs", help="folder for flow_student.{json,md} (default docs)")
    p.add_argument("--force", action="store_true", help="replace output files this script did not write")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 image per digit, 3 steps")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    try:
        js = check_output_file(out / "flow_student.json", what="student JSON", force=args.force, owned=_ours_json)
        md = check_output_file(out / "flow_student.md", what="student Markdown", force=args.force, owned=_ours_md)
    except OutputPathError as err:
        raise SystemExit(f"error: {err}") from None
    existed = {js: js.exists(), md: md.exists()}
    command = shlex.join(["python", *(sys.argv if argv is None else [WRITTEN_BY, *argv])])
    if os.environ.get("OMP_NUM_THREADS"):
        command = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} {command}"
    start = time.perf_counter()
    result = {"written_by": WRITTEN_BY, "quick": args.quick, **measure(args.quick)}
    result.update(command=command, seconds=round(time.perf_counter() - start, 1),
                  env=f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()} CPU, "
                      f"nproc {os.cpu_count()}, torch threads {torch.get_num_threads()}")
    for path, text, owned in ((js, json.dumps(result, indent=1) + "\n", _ours_json), (md, markdown(result), _ours_md)):
        write_output(path, lambda tmp, t=text: tmp.write_text(t, encoding="utf-8"), existed=existed[path],
                     force=args.force, owned=owned)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
