"""Training throughput and memory of each stage at its preset size, and what a target GPU would do.

    .venv/bin/python benchmarks/train_speed.py [--stages vae teacher student] [--device cpu|cuda]
        [--precision bf16-mixed|32-true] [--batch 1] [--seconds 10] [--steps 2] [--mfu 0.35 0.5]

Each stage is built from its preset (``configs/experiment/{vae_speech,teacher_300m,student_100m}.yaml``,
composed with Hydra) with random weights, and trained by a Lightning Trainer on synthetic batches of
real shapes: the whole ``training_step`` (CFG dropout excepted, see below), i.e. forward, backward,
clipping, AdamW, EMA, and the VAE's discriminator step. Per stage:

* s/step here: the mean of ``--steps`` steps of ``--batch`` rows of ``--seconds`` (target audio) after a
  warm-up step at that shape.
* FLOPs per step per GPU at the recipe's batch: ``torch.utils.flop_counter`` counts one step of ONE
  row at the recipe's row shape, times the rows a GPU takes (rows of one shape cost the same,
  attention included). It counts what runs: CPU attention (``_scaled_dot_product_flash_attention_for_cpu``,
  not in torch's table) with torch's SDPA formula, causal attention as full (torch's convention);
  FFTs (the STFT discriminator) and elementwise ops count 0. The LSD head's ``torch.func.jvp`` is
  counted as executed: three matmuls per linear layer, the third by the weight's zero tangent.
* Memory per GPU at the recipe's batch: weights, gradients, AdamW moments and EMA (and frozen
  models), read from the live objects in their dtypes; what autograd keeps of the weights alone
  (autocast's bf16 copies, weight norm), once; and ``rows x`` the activations of the one-row step:
  the peak bytes of the tensors autograd keeps for backward that are computed from the batch (each
  storage counted once while it lives; a dispatch mode follows what derives from the batch).
  Activations are linear in rows (SDPA keeps O(T) per row); single ops' transient buffers are not
  counted, so "fits" means under 90 % of the card (which also leaves the CUDA context and allocator
  fragmentation their share). On CUDA the allocator's peak during that step is printed as a check.
* Predicted steps/s on the target GPU: ``peak x MFU / FLOPs per step`` at each ``--mfu``; and the MFU
  the open recipe's 1.91 it/s per H100 implies at these shapes, and the MFU 1.3x that needs.

The LSD head computes its self-distillation term on a ``distill_prob`` (0.25) share of steps; both
branches are counted and timed and weighted by it. CFG dropout is switched off: at the recipe's 64 rows
the padded length is the longest row's anyway, while in a batch of one or two rows a dropped prompt
would shorten the whole batch. The recipe's rows: the teacher and the student read ``VOICE_SECONDS`` of
voice prompt, ``TEXT_TOKENS_PER_SECOND`` tokens per second of target and ``--recipe-seconds`` of target
(30 s, the cap: the data's rows are shorter on average, so this is the slow end); the VAE 12 s crops.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchaudio
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from pockettts.cli import CONFIG_DIR
from pockettts.data.examples import TeacherBatch
from pockettts.models.bundle import write_export
from pockettts.models.heads import LSDHead
from pockettts.schema import register_schemas

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class TargetGPU:
    name: str
    peak_flops: float  # dense bf16 tensor-core FLOP/s
    memory: float  # bytes
    usable: float = 0.9  # of memory: CUDA context and allocator fragmentation take the rest


H100 = TargetGPU("H100 SXM", 989e12, 81559 * 2**20)  # 80 GB: 81559 MiB as nvidia-smi reports it
OPEN_RECIPE_STEPS_PER_S = 1.91  # Kyutai's open recipe: the teacher, 64 rows per step, 1x H100 (55.6 GiB)
GOAL_SPEEDUP = 1.3
VOICE_SECONDS = 5.0  # the teacher data's max_voice_prompt_sec
TEXT_TOKENS_PER_SECOND = 4.0  # a 4000-piece SentencePiece on English read speech (~15 chars/s)
# Frozen models the stages keep outside their module tree (so checkpoints carry no copy of them).
FROZEN_OUTSIDE = ("teacher", "ssl_teacher")


@dataclasses.dataclass(frozen=True)
class Stage:
    name: str
    entry: str  # the Hydra entry config: "train" or "distill"
    experiment: str
    rows: int  # the recipe's rows per optimizer step (all GPUs)
    seconds: float  # the recipe's longest row (target audio)
    devices: int = 1  # GPUs the recipe shares the rows over; what one of them holds is predicted

    @property
    def rows_per_device(self) -> int:
        return self.rows // self.devices

    def describe(self, seconds: float) -> str:
        shape = f"{self.name} {self.rows}x{seconds:g}s"
        return shape if self.devices == 1 else f"{shape}/{self.devices} GPUs"


STAGES = {
    # Paper Table 13: 64 crops of 12 s, 8 per GPU on 8 GPUs; the VAE stage does not accumulate.
    "vae": Stage("vae", "train", "vae_speech", 64, 12.0, devices=8),
    "teacher": Stage("teacher", "train", "teacher_300m", 64, 30.0),
    "student": Stage("student", "distill", "student_100m", 64, 30.0),
}


# -- building a stage -------------------------------------------------------------------------------
def compose_stage(stage: Stage, workdir: Path, overrides: Iterable[str] = ()) -> DictConfig:
    """The stage's preset composed as its entry point would, every path under ``workdir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            stage.entry,
            overrides=[f"experiment={stage.experiment}", "model.export_path=null", *overrides],
            return_hydra_config=True,
        )
    with open_dict(cfg):  # outside a Hydra run there is no runtime directory
        cfg.paths.root_dir = str(workdir)
        cfg.paths.output_dir = str(workdir / "run")
        del cfg["hydra"]
    return cfg


def build_module(stage: Stage, workdir: Path) -> L.LightningModule:
    """The stage's LightningModule at its preset size, random weights; the files it needs (a WavLM
    checkpoint, an exported teacher) are random ones written under ``workdir``."""
    overrides = []
    if stage.name == "vae":
        wavlm = workdir / "wavlm_base_plus.pt"
        torch.save(torchaudio.models.wavlm_base().state_dict(), wavlm)
        overrides.append(f"model.ssl_teacher.checkpoint={wavlm}")
    if stage.name == "student":
        teacher = workdir / "teacher.safetensors"
        write_export(instantiate(compose_stage(STAGES["teacher"], workdir).model.model), teacher)
        overrides.append(f"teacher={teacher}")
    module = instantiate(compose_stage(stage, workdir, overrides).model)
    if hasattr(module, "text_dropout"):
        module.text_dropout = module.voice_dropout = 0.0  # see the module docstring
    return module


def synthetic_batch(module: L.LightningModule, rows: int, seconds: float) -> Any:
    """A batch of ``rows`` rows of ``seconds`` of target audio, shaped as the stage's data module's."""
    if hasattr(module, "vae"):
        vae = module.vae
        frames = round(seconds * vae.frame_rate)
        return {"audio": 0.1 * torch.randn(rows, 1, frames * vae.frame_size)}
    model = module.model
    frames, voice = round(seconds * 12.5), round(VOICE_SECONDS * 12.5)
    tokens = round(seconds * TEXT_TOKENS_PER_SECOND)
    return TeacherBatch(
        voice=torch.randn(rows, voice, model.latent_dim),
        voice_lengths=torch.full((rows,), voice),
        text=torch.randint(0, model.vocab_size, (rows, tokens)),
        text_lengths=torch.full((rows,), tokens),
        target=torch.randn(rows, frames, model.latent_dim),
        target_lengths=torch.full((rows,), frames),
    )


def lsd_head(module: L.LightningModule) -> LSDHead | None:
    """The head whose self-distillation branch varies between steps (a trained LSD head), or None."""
    head = getattr(getattr(module, "model", None), "head", None)
    trained = head is not None and any(p.requires_grad for p in head.parameters())
    return head if isinstance(head, LSDHead) and trained else None


# -- measuring one step -----------------------------------------------------------------------------
class _Global:
    """``FlopCounterMode``'s module tracker, reduced to the total: the tracker's backward hooks fail
    when a backward calls ``autograd.grad`` (the LSD head's stop-gradient target does)."""

    parents = ("Global",)

    def __enter__(self) -> _Global:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _cpu_attention(q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(q, k, v)


def _cpu_attention_backward(grad, q, k, v, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad, q, k, v)


def flop_counter() -> FlopCounterMode:
    """A total-only FLOP counter that also knows the CPU attention kernels (torch's table has the CUDA
    ones; the formulas are the same)."""
    aten = torch.ops.aten
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
    }
    counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
    counter.mod_tracker = _Global()
    return counter


class StorageSet:
    """Storages by identity (one Python object per storage while it lives); a freed one leaves."""

    def __init__(self) -> None:
        self.keys: set[int] = set()

    def add(self, tensor: torch.Tensor) -> bool:
        """Whether ``tensor``'s storage was new to the set."""
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.keys:
            return False
        self.keys.add(key)
        weakref.finalize(storage, self.keys.discard, key)
        return True

    def __contains__(self, tensor: torch.Tensor) -> bool:
        return id(tensor.untyped_storage()) in self.keys


class BatchDerived(TorchDispatchMode):
    """Marks every storage computed (through any chain of ops) from the batch's tensors: per-row
    data, as opposed to what is derived from the weights alone (autocast's bf16 copies, weight
    norm), which does not grow with the rows."""

    def __init__(self, batch: Iterable[torch.Tensor]):
        super().__init__()
        self.storages = StorageSet()
        for tensor in batch:
            self.storages.add(tensor)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if any(isinstance(t, torch.Tensor) and t in self.storages for t in tree_leaves((args, kwargs))):
            for tensor in tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    self.storages.add(tensor)
        return out


class SavedActivations:
    """Peak bytes of the tensors autograd saves for backward while it holds them, each storage
    counted once from its first save until it is freed, parameters and buffers left out; split into
    what is computed from the batch (``from_batch``) and from the weights alone (``from_weights``)."""

    def __init__(self, excluded: Iterable[torch.Tensor], derived: BatchDerived):
        self.excluded = StorageSet()
        for tensor in excluded:
            self.excluded.add(tensor)
        self.derived = derived
        self.seen = StorageSet()
        self.current = {True: 0, False: 0}
        self.peak = {True: 0, False: 0}

    @property
    def from_batch(self) -> int:
        return self.peak[True]

    @property
    def from_weights(self) -> int:
        return self.peak[False]

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor not in self.excluded and self.seen.add(tensor):
            nbytes, kind = tensor.untyped_storage().nbytes(), tensor in self.derived.storages
            self.current[kind] += nbytes
            self.peak[kind] = max(self.peak[kind], self.current[kind])
            weakref.finalize(tensor.untyped_storage(), self._freed, kind, nbytes)
        return tensor

    def _freed(self, kind: bool, nbytes: int) -> None:
        self.current[kind] -= nbytes

    @contextmanager
    def recording(self) -> Iterator[SavedActivations]:
        with self.derived, torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor):
            yield self


@dataclasses.dataclass
class PlannedStep:
    batch: Any
    distill_branch: bool | None  # force the LSD head's self-distillation term on/off; None: no LSD head
    count: bool = False  # count FLOPs
    memory: bool = False  # measure activations
    timed: bool = False


@dataclasses.dataclass
class StepResult:
    seconds: float = 0.0
    flops: int = 0
    from_batch: int = 0  # peak bytes saved for backward that are computed from the batch
    from_weights: int = 0  # peak bytes saved for backward that are computed from the weights alone
    cuda_bytes: int | None = None  # CUDA: peak allocated during the step minus allocated before it


class StepProbe(L.Callback):
    """Runs ``plan[i]`` as the i-th training step: sets the LSD branch, counts, measures, times."""

    def __init__(self, plan: list[PlannedStep]):
        self.plan = plan
        self.results = [StepResult() for _ in plan]

    def on_train_batch_start(self, trainer, module, batch, batch_idx: int) -> None:
        step = self.plan[batch_idx]
        head = lsd_head(module)
        if head is not None:
            head.distill_prob = 1.0 if step.distill_branch else 0.0  # 0: the draw is never below it
        self.stack = ExitStack()
        self.counter = self.stack.enter_context(flop_counter()) if step.count else None
        self.saved = None
        if step.memory:
            tensors = [t for m in [module, *outside_models(module)] for t in (*m.parameters(), *m.buffers())]
            derived = BatchDerived(batch_tensors(batch))
            self.saved = self.stack.enter_context(SavedActivations(tensors, derived).recording())
            if module.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(module.device)
                self.allocated_before = torch.cuda.memory_allocated(module.device)
        synchronize(module.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx: int) -> None:
        synchronize(module.device)
        result = self.results[batch_idx]
        result.seconds = time.perf_counter() - self.start
        self.stack.close()
        if self.counter is not None:
            result.flops = self.counter.get_total_flops()
        if self.saved is not None:
            result.from_batch, result.from_weights = self.saved.from_batch, self.saved.from_weights
            if module.device.type == "cuda":
                result.cuda_bytes = torch.cuda.max_memory_allocated(module.device) - self.allocated_before


def batch_tensors(batch: Any) -> list[torch.Tensor]:
    """The tensors of a VAE batch (a dict) or a ``TeacherBatch``."""
    if isinstance(batch, dict):
        return list(batch.values())
    return [getattr(batch, field.name) for field in dataclasses.fields(batch)]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def outside_models(module: L.LightningModule) -> list[nn.Module]:
    return [m for name in FROZEN_OUTSIDE if isinstance(m := getattr(module, name, None), nn.Module)]


def static_bytes(module: L.LightningModule, trainer: L.Trainer) -> int:
    """Weights and buffers (frozen models included), gradients of the trainable weights, optimizer
    states and the EMA shadow, in their dtypes."""
    total = 0
    for model in [module, *outside_models(module)]:
        total += sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    total += sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)
    for optimizer in trainer.optimizers:
        for state in optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    if getattr(module, "ema", None) is not None:
        total += sum(t.numel() * t.element_size() for t in module.ema.shadow.values())
    return total


# -- one stage --------------------------------------------------------------------------------------
@dataclasses.dataclass
class StageReport:
    stage: Stage
    recipe_seconds: float
    batch: int
    seconds: float
    trainable: int
    total_params: int
    distill_prob: float | None
    step_seconds: float  # expected over the LSD branches
    flops_here: float  # expected FLOPs of one step of the timed batch
    flops_recipe: float  # expected FLOPs of one step at the recipe's batch, per GPU
    distill_share: float  # of the recipe FLOPs: the LSD self-distillation term's (0 without one)
    static: int  # weights, gradients, optimizer states, EMA
    constant: int  # saved for backward, derived from the weights alone (autocast copies)
    per_row: int  # saved for backward, derived from one recipe row
    cuda_bytes: int | None  # CUDA allocator: peak during the one-row step minus allocated before it

    def memory(self, rows: int) -> int:
        return self.static + self.constant + rows * self.per_row


def weighted(values: dict[bool | None, float], distill_prob: float | None) -> float:
    """Mean over the LSD branches (``True``: self-distillation term computed) at ``distill_prob``."""
    if distill_prob is None:
        return values[None]
    return distill_prob * values[True] + (1 - distill_prob) * values[False]


def measure_stage(stage: Stage, args: argparse.Namespace, workdir: Path) -> StageReport:
    torch.manual_seed(0)
    module = build_module(stage, workdir)
    head = lsd_head(module)
    distill_prob = head.distill_prob if head is not None else None
    branches = [True, False] if head is not None else [None]
    recipe_seconds = stage.seconds if stage.name == "vae" else args.recipe_seconds
    timed = synthetic_batch(module, args.batch, args.seconds)
    one_row = synthetic_batch(module, 1, recipe_seconds)
    plan = [PlannedStep(timed, b, count=True) for b in branches]  # warm-up, counted
    plan += [PlannedStep(one_row, b, count=True, memory=b is not False) for b in branches]
    plan += [PlannedStep(timed, b, timed=True) for b in branches for _ in range(args.steps)]
    probe = StepProbe(plan)
    trainer = L.Trainer(
        accelerator=args.device, devices=1, precision=args.precision, max_epochs=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[probe], default_root_dir=workdir,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=DataLoader(plan, batch_size=None, collate_fn=lambda s: s.batch))

    results = list(zip(plan, probe.results))
    flops_here = {s.distill_branch: r.flops for s, r in results[: len(branches)]}
    flops_row = {s.distill_branch: r.flops for s, r in results[len(branches) : 2 * len(branches)]}
    seconds = {b: [r.seconds for s, r in results if s.timed and s.distill_branch is b] for b in branches}
    memory = next(r for s, r in results if s.memory)
    distill_flops = distill_prob * (flops_row[True] - flops_row[False]) if head is not None else 0.0
    params = list(module.parameters()) + [p for m in outside_models(module) for p in m.parameters()]
    return StageReport(
        stage=stage,
        recipe_seconds=recipe_seconds,
        batch=args.batch,
        seconds=args.seconds,
        trainable=sum(p.numel() for p in module.parameters() if p.requires_grad),
        total_params=sum(p.numel() for p in params),
        distill_prob=distill_prob,
        step_seconds=weighted({b: sum(v) / len(v) for b, v in seconds.items()}, distill_prob),
        flops_here=weighted(flops_here, distill_prob),
        flops_recipe=stage.rows_per_device * weighted(flops_row, distill_prob),
        distill_share=distill_flops / weighted(flops_row, distill_prob),
        static=static_bytes(module, trainer),
        constant=memory.from_weights,
        per_row=memory.from_batch,  # the probe's one row
        cuda_bytes=memory.cuda_bytes,
    )


# -- the prediction ---------------------------------------------------------------------------------
def micro_batches(report: StageReport, gpu: TargetGPU) -> int | None:
    """Fewest micro-batches (a power of two dividing the rows) whose memory fits ``gpu``; None: none."""
    count = 1
    rows = report.stage.rows_per_device
    while count <= rows:
        if report.memory(math.ceil(rows / count)) <= gpu.usable * gpu.memory:
            return count
        count *= 2
    return None


def print_table(reports: list[StageReport], mfus: list[float], gpu: TargetGPU, precision: str) -> None:
    header = [
        "stage", "params (trained)", "here: rows x s", "s/step", "TFLOP/step/GPU",
        *(f"{gpu.name.split()[0]} it/s @{m:g}" for m in mfus),
        f"MFU for {OPEN_RECIPE_STEPS_PER_S}", f"MFU for {GOAL_SPEEDUP}x", "GiB/GPU @recipe",
        "fits / accumulate",
    ]  # fmt: skip
    rows = []
    for r in reports:
        flops = r.flops_recipe
        targets = (OPEN_RECIPE_STEPS_PER_S, GOAL_SPEEDUP * OPEN_RECIPE_STEPS_PER_S)
        needed = [f"{t * flops / gpu.peak_flops:.2f}" if r.stage.name == "teacher" else "-" for t in targets]
        memory = r.memory(r.stage.rows_per_device)
        count = micro_batches(r, gpu)
        fits = "yes" if count == 1 else f"no: accumulate {count}" if count else "no, not even 1 row"
        rows.append([
            r.stage.describe(r.recipe_seconds),
            f"{r.total_params / 1e6:.0f}M ({r.trainable / 1e6:.0f}M)",
            f"{r.batch}x{r.seconds:g}s",
            f"{r.step_seconds:.2f}",
            f"{flops / 1e12:.1f}",
            *(f"{m * gpu.peak_flops / flops:.2f}" for m in mfus),
            *needed,
            f"{memory / GIB:.1f}",
            fits,
        ])  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).rjust(width) for cell, width in zip(row, widths)))
    print(f"\n{gpu.name}: {gpu.peak_flops / 1e12:.0f} TFLOP/s dense bf16, {gpu.memory / GIB:.1f} GiB "
          f"({gpu.usable:.0%} usable); precision {precision}; open recipe {OPEN_RECIPE_STEPS_PER_S} it/s "
          f"per H100 at 64 rows (55.6 GiB).")  # fmt: skip
    for r in reports:
        print(
            f"{r.stage.name}: {r.flops_here / r.step_seconds / 1e9:.0f} GFLOP/s achieved here; per GPU "
            f"{r.static / GIB:.1f} GiB weights/grads/AdamW/EMA + {r.constant / GIB:.2f} GiB weight copies + "
            f"{r.stage.rows_per_device} x {r.per_row / GIB:.3f} GiB activations ({r.recipe_seconds:g} s rows)"
        )
        if r.cuda_bytes is not None:
            print(f"  CUDA allocator during the one-row step: {r.cuda_bytes / GIB:.2f} GiB above its start "
                  f"(the model: {(r.constant + r.per_row) / GIB:.2f} GiB)")  # fmt: skip
        if r.distill_prob:
            print(f"  LSD self-distillation term on {r.distill_prob:.0%} of steps: "
                  f"{r.distill_share:.0%} of the expected FLOPs")  # fmt: skip


LEVERS = """What would get there:
- fused attention: the backbone already calls scaled_dot_product_attention (flash on an H100 in bf16);
- packing: rows are right-padded to the longest of the batch; packing them into one sequence with a
  block-diagonal causal mask (FlexAttention / varlen flash) removes the padding's share of the FLOPs;
- torch.compile of the transformer layer and of the head's loss: fuses LayerNorm, GELU, RoPE and the
  residual adds; the head's 512-wide MLP is launch-bound in eager mode;
- the JVP: torch.func.jvp runs three matmuls per linear layer (one multiplies by the weight's zero
  tangent); a hand-written tangent pass through the head's MLP drops that third;
- activation checkpointing: StreamingTransformer has no such option; it would trade ~1/3 more
  backbone FLOPs for memory, so it only pays where the batch does not fit (last column); the
  *_h100 experiment presets accumulate gradients instead."""


def print_levers(teacher: StageReport, gpu: TargetGPU) -> None:
    """The MFU the teacher needs for ``GOAL_SPEEDUP`` x the open recipe's steps/s, and the levers."""
    flops = teacher.flops_recipe
    goal = GOAL_SPEEDUP * OPEN_RECIPE_STEPS_PER_S
    shape = f"{teacher.stage.rows} rows x {teacher.recipe_seconds:g} s"
    print(
        f"\nTeacher at {shape}: {flops / 1e12:.1f} TFLOP per step. {OPEN_RECIPE_STEPS_PER_S} it/s is "
        f"MFU {OPEN_RECIPE_STEPS_PER_S * flops / gpu.peak_flops:.2f} at these rows; {goal:.2f} it/s "
        f"({GOAL_SPEEDUP}x) needs MFU {goal * flops / gpu.peak_flops:.2f}. The open recipe's rows are "
        "shorter than the cap on average: --recipe-seconds at their mean compares like with like."
    )
    print(LEVERS)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--precision", choices=["bf16-mixed", "32-true"], default="bf16-mixed")
    parser.add_argument("--batch", type=int, default=1, help="rows of the timed steps")
    parser.add_argument("--seconds", type=float, default=10.0, help="target audio per row of the timed steps")
    parser.add_argument("--steps", type=int, default=2, help="timed steps (per LSD branch)")
    parser.add_argument("--recipe-seconds", type=float, default=30.0, help="teacher/student recipe row")
    parser.add_argument("--mfu", type=float, nargs="+", default=[0.35, 0.5], help="assumed utilisations")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    register_schemas()
    start = time.perf_counter()
    reports = []
    for name in args.stages:
        with tempfile.TemporaryDirectory(prefix=f"train_speed_{name}_") as workdir:
            reports.append(measure_stage(STAGES[name], args, Path(workdir)))
    print()
    print_table(reports, args.mfu, H100, args.precision)
    for report in reports:
        if report.stage.name == "teacher":
            print_levers(report, H100)
    print(f"\nwall time {time.perf_counter() - start:.0f} s on {args.device}")


if __name__ == "__main__":
    main()
