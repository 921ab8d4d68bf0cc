"""Time inversion methods on the Stable Diffusion 1.5 architecture (random weights) on a GPU.

Nothing can be downloaded where this project is built, and timing does not depend on the
weights, so the SD 1.5 UNet and VAE are built from their published configs (embedded below)
with random weights, and the text encoder is replaced by random embeddings ``(1, 77, 768)``.

Reported per image, at ``--size`` px, ``--steps`` steps, ``--dtype``: seconds, network
evaluations (NFE; one batched guided call = 2 NFE), the ratio ``total / (NFE/2 * t_call)``
with ``t_call`` the median time of one batched UNet call (batch 2): 1.0 means the method
costs exactly its UNet calls, more means overhead), and peak GPU memory
(``torch.cuda.max_memory_allocated``), and the host synchronisations per step, counted with
``torch.cuda.set_sync_debug_mode("warn")`` in a separate, untimed run (CUDA only). The first
row is repeated with the UNet under ``torch.compile(mode="reduce-overhead")`` (CUDA graphs;
``compile_unet=True`` of the loader) unless ``--no-compile``.

Caveat: methods with early stopping (the original's ``min_err < 5``, Anderson's ``tol``)
may stop at a different iteration with random weights than with real ones; the NFE column
says what was actually run, and the per-call ratio transfers.

Usage (CUDA)::

    python benchmarks/sd_gpu.py --steps 50 --size 512 --dtype fp16 --out docs/benchmarks.md

Smoke test on a CPU (tiny random SD, 4 steps, a few seconds; no file written unless --out)::

    python benchmarks/sd_gpu.py --allow-cpu --tiny
"""
from __future__ import annotations

import argparse
import datetime as _dt
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from cfginv_lite.benchmark import OutputFile, add_output_arguments, exit_on_output_error
from cfginv_lite.compensate import invert_original
from cfginv_lite.fixed_point import invert_fixed_point
from cfginv_lite.ddim import invert_naive, sample_ddim
from cfginv_lite.guidance import Guidance, guided_noise
from cfginv_lite.validation import NonFiniteLatentError
from cfginv_lite.models.stable_diffusion import StableDiffusionModel
from cfginv_lite.models.tiny import build_tiny_stable_diffusion
from cfginv_lite.ownership import first_line_is
from cfginv_lite.schedule import SD1_SCHEDULER_CONFIG, timestep_grid
from cfginv_lite.trace import TraceRecorder

# stable-diffusion-v1-5/stable-diffusion-v1-5, unet/config.json (859,520,964 parameters).
SD15_UNET_CONFIG: dict[str, Any] = {
    "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
# stable-diffusion-v1-5/stable-diffusion-v1-5, vae/config.json (83,653,863 parameters).
SD15_VAE_CONFIG: dict[str, Any] = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "scaling_factor": 0.18215,
}
WRITTEN_BY = "benchmarks/sd_gpu.py"
HEADER = "# Stable Diffusion timings"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class Row:
    name: str
    seconds: float
    nfe: float | None = None
    peak_gib: float | None = None
    note: str = ""
    syncs_per_step: float | None = None


# --------------------------------------------------------------------------- setup
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=None, help="inversion/sampling steps (default 50; 4 with --tiny)")
    p.add_argument("--size", type=int, default=None, help="image size in pixels (default 512; 64 with --tiny)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="UNet precision (VAE stays fp32)")
    p.add_argument("--guidance", type=float, default=4.0, help="CFG scale (the original's showcase: 4.0)")
    p.add_argument("--repeats", type=int, default=None, help="timed batched UNet calls (median; 10, 3 with --tiny)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per method (median; 2, 1 with --tiny)")
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="also time the UNet call under torch.compile (default on CUDA)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile row")
    p.add_argument("--out", type=Path, default=None,
                   help="Markdown file to write (default docs/benchmarks.md on CUDA; nothing on CPU)")
    add_output_arguments(p, resume=False)
    p.add_argument("--allow-cpu", action="store_true", help="run on the CPU (only with --tiny or --size 64)")
    p.add_argument("--tiny", action="store_true", help="tiny random SD instead of SD 1.5 (smoke test)")
    args = p.parse_args(argv)
    if args.size is None:
        args.size = 64 if args.tiny else 512
    for name, full, tiny in (("steps", 50, 4), ("repeats", 10, 3), ("runs", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if args.tiny else full)
    if args.steps < 1 or args.repeats < 1 or args.runs < 1:
        p.error("--steps, --repeats and --runs must be >= 1")
    return args


def choose_device(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), DTYPES[args.dtype]
    if not args.allow_cpu:
        sys.exit("No CUDA GPU found. This benchmark times SD 1.5 at 512x512 on a GPU (e.g. a Colab T4). "
                 "To smoke-test it on a CPU use: python benchmarks/sd_gpu.py --allow-cpu --tiny --steps 4")
    if not args.tiny and args.size > 64:
        sys.exit("On the CPU the full SD 1.5 architecture is only allowed at --size 64 (or use --tiny).")
    if args.dtype != "fp32":
        print(f"note: --dtype {args.dtype} ignored on the CPU; using fp32")
    return torch.device("cpu"), torch.float32


def build_model(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> StableDiffusionModel:
    """SD 1.5 UNet + VAE with random weights (or the tiny SD), no text encoder."""
    if args.tiny:
        tiny = build_tiny_stable_diffusion(seed=0, image_size=args.size)
        return StableDiffusionModel(tiny.unet, tiny.vae, None, None, tiny.scheduler_config, device, dtype, args.size)
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device directly: 860M parameters
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG)
    return StableDiffusionModel(unet, vae, None, None, dict(SD1_SCHEDULER_CONFIG), device, dtype, args.size)


def compiled_copy(model: StableDiffusionModel) -> StableDiffusionModel:
    """The same weights with the UNet under ``torch.compile`` (``compile_unet=True``)."""
    unet = getattr(model.unet, "_orig_mod", model.unet)
    return StableDiffusionModel(unet, model.vae, None, None, model.scheduler_config, model.device, model.dtype,
                                model.image_size, compile_unet=True)


def random_guidance(model: StableDiffusionModel, scale: float) -> Guidance:
    dim = int(model.unet.config.cross_attention_dim)
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 77, dim, generator=g).to(model.device, model.dtype)
    return Guidance(cond=emb[:1], uncond=emb[1:], scale=scale)


# --------------------------------------------------------------------------- timing
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


class CallCounter:
    """Counts network evaluations per image by wrapping ``model.predict_noise`` (our instance only)."""

    def __init__(self, model: StableDiffusionModel, images: int) -> None:
        self.model, self.images, self.evaluations = model, images, 0
        self.inner = model.predict_noise

    def __enter__(self) -> "CallCounter":
        def counted(latents: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
            self.evaluations += latents.shape[0]
            return self.inner(latents, labels, embeddings)

        self.model.predict_noise = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.model.predict_noise  # back to the class method

    @property
    def nfe(self) -> float:
        return self.evaluations / self.images


def count_syncs(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Host synchronisations ``fn`` forces, counted as ``set_sync_debug_mode("warn")`` warnings (CUDA only)."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        except NonFiniteLatentError:
            pass
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def time_batched_call(model: StableDiffusionModel, z: torch.Tensor, guidance: Guidance, repeats: int,
                      name: str = "one batched UNet call (batch 2)") -> Row:
    """Median time of one guided call = one UNet call on a batch of 2 (warm-up excluded)."""
    for _ in range(3):
        guided_noise(model, z, 500.0, 500.0, guidance)
    sync(model.device)
    reset_peak(model.device)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            sync(model.device)
            start = time.perf_counter()
            guided_noise(model, z, 500.0, 500.0, guidance)
            sync(model.device)
            times.append(time.perf_counter() - start)
    return Row(name, statistics.median(times), 2, peak_gib(model.device), f"median of {repeats}")


def time_method(name: str, fn: Callable[[], Any], model: StableDiffusionModel, runs: int, note: str = "", *,
                count_nfe: bool = True, steps: int | None = None) -> Row:
    """Median wall time of ``fn`` over ``runs`` runs after one warm-up; NFE from the last run;
    host syncs per step (``steps`` given, CUDA) from one more, untimed run."""
    notes = [note] if note else []
    try:
        with torch.inference_mode():
            fn()  # warm-up (allocator, kernels)
    except NonFiniteLatentError:
        notes.append("latents went non-finite with random weights (timing still valid)")
    times, nfe, peak = [], 0.0, None
    for _ in range(runs):
        reset_peak(model.device)
        with CallCounter(model, images=1) as counter, torch.inference_mode():
            sync(model.device)
            start = time.perf_counter()
            try:
                fn()
            except NonFiniteLatentError:
                pass  # raised after the loop ran to the end: the time is complete
            sync(model.device)
            times.append(time.perf_counter() - start)
        nfe, peak = counter.nfe, peak_gib(model.device)
    syncs = count_syncs(fn, model.device) if steps else None
    return Row(name, statistics.median(times), nfe if count_nfe else None, peak, "; ".join(dict.fromkeys(notes)),
               None if syncs is None else syncs / steps)


def run_all(args: argparse.Namespace, model: StableDiffusionModel) -> list[Row]:
    guidance = random_guidance(model, args.guidance)
    grid = timestep_grid(args.steps)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        z0 = model.encode(image)
    rows = [time_batched_call(model, z0, guidance, args.repeats)]
    if args.compile is None:
        args.compile = model.device.type == "cuda"
    if args.compile:
        rows.append(time_batched_call(compiled_copy(model), z0, guidance, args.repeats,
                                      "one batched UNet call (batch 2), torch.compile"))
    rows.append(time_method("VAE encode (fp32)", lambda: model.encode(image), model, args.runs, count_nfe=False))
    rows.append(time_method("VAE decode (fp32)", lambda: model.decode(z0), model, args.runs, count_nfe=False))
    common = dict(progress=False)
    steps = dict(steps=args.steps)

    def traced() -> None:
        recorder = TraceRecorder("naive", keep=("latent", "noise"))
        invert_naive(model, z0, grid, guidance, callback=recorder, **common)
        recorder.finish()

    rows += [
        time_method("naive DDIM inversion (invert_naive)",
                    lambda: invert_naive(model, z0, grid, guidance, **common), model, args.runs, **steps),
        time_method("naive + TraceRecorder(latent, noise) + finish()", traced, model, args.runs, **steps),
        time_method("DDIM sampling (sample_ddim)",
                    lambda: sample_ddim(model, z0, grid, guidance, **common), model, args.runs, **steps),
        time_method("original (invert_original, refine_iterations=5, refine_skip=0.7)",
                    lambda: invert_original(model, z0, grid, guidance, refine_iterations=5, refine_skip=0.7,
                                            **common), model, args.runs, **steps),
        time_method("Anderson (invert_fixed_point, budget 5, window 3)",
                    lambda: invert_fixed_point(model, z0, grid, guidance, budget=5, window=3, **common), model, args.runs, **steps),
    ]
    return rows


# --------------------------------------------------------------------------- report
def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def markdown(args: argparse.Namespace, model: StableDiffusionModel, rows: list[Row], argv: list[str]) -> str:
    import diffusers

    call = rows[0].seconds
    arch = ("tiny random SD (build_tiny_stable_diffusion)" if args.tiny
            else "SD 1.5 UNet + VAE architecture, random weights")
    unet_dtype, vae_dtype = (str(d).replace("torch.", "") for d in (model.dtype, model.vae_dtype))
    lines = [
        HEADER,
        "",
        f"- Measured: {_dt.datetime.now().strftime('%Y-%m-%d %H:%M')} on **{device_name(model.device)}**",
        f"- torch {torch.__version__}, diffusers {diffusers.__version__}, Python {platform.python_version()}",
        f"- Model: {arch}; random text embeddings (1, 77, {model.unet.config.cross_attention_dim})",
        f"- {args.size}x{args.size} px, {args.steps} steps (linspace grid), UNet {unet_dtype}, VAE {vae_dtype}, "
        f"CFG {args.guidance}, batch 1",
        f"- Command: `python benchmarks/sd_gpu.py {' '.join(argv)}`",
        "",
        "| what | seconds / image | NFE / image | total / (NFE/2 x one call) | host syncs per step "
        "| peak GPU memory (GiB) | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "" if row.nfe in (None, 0) else f"{row.seconds / (row.nfe / 2 * call):.2f}"
        nfe = "" if row.nfe is None else f"{row.nfe:g}"
        syncs = "n/a (CPU)" if model.device.type != "cuda" else ("" if row.syncs_per_step is None
                                                                 else f"{row.syncs_per_step:.2f}")
        mem = "n/a (CPU)" if row.peak_gib is None else f"{row.peak_gib:.2f}"
        lines.append(f"| {row.name} | {row.seconds:.4f} | {nfe} | {ratio} | {syncs} | {mem} | {row.note} |")
    lines += [
        "",
        "One batched call evaluates the unconditional and conditional branch together (2 NFE). The ratio",
        "divides by the eager call time (the first row); 1.0 means the method costs exactly its UNet calls.",
        "Host syncs per step: `torch.cuda.set_sync_debug_mode(\"warn\")` warnings of one run / steps.",
        "Inversion rows start from a VAE latent (encoding excluded). Methods that stop early may run a",
        "different number of iterations with random weights than with real ones: compare the NFE column.",
        "Peak memory is everything allocated by torch at the peak, weights included "
        "(SD 1.5: UNet ~1.6 GiB in fp16, VAE ~0.3 GiB in fp32).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    device, dtype = choose_device(args)
    out = args.out if args.out is not None else (Path("docs/benchmarks.md") if device.type == "cuda" else None)
    with exit_on_output_error():                      # the report's path is checked before the (long) run
        report_file = None if out is None else OutputFile(out, script=WRITTEN_BY, owned=first_line_is(HEADER),
                                                          force=args.force, what="timings Markdown")
        model = build_model(args, device, dtype)
        report = markdown(args, model, run_all(args, model), argv)
        print(report)
        if report_file is not None:
            report_file.write_text(report)
            print(f"wrote {report_file.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
