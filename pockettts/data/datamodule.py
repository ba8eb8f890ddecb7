"""LightningDataModules over manifests: crops for the VAE, bucketed utterances and prompt/target
examples from cached latents for the TTS stages.

Both build the offline demo corpus in ``prepare_data`` when configured with ``demo``, split
batches across ranks themselves (set the trainer's ``use_distributed_sampler: false``), and save
their position in checkpoints so a resumed run continues with exactly the next batch.

Batch sizes and frame budgets are *global*: what one optimizer step sees over all devices and
accumulation steps. Each device takes ``1 / (devices x accumulation)`` of every global batch
(``pockettts.data.batching``), so changing the GPU count or the accumulation keeps the optimisation
the same and only changes the memory per device.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from pockettts.audio import SAMPLE_RATE
from pockettts.data.batching import DurationBucketSampler, EpochBatchSampler, FixedSizeBatchSampler
from pockettts.data.datasets import AudioCropDataset, ManifestDataset, UtteranceDataset, collate_audio
from pockettts.data.examples import CutConfig, TeacherExampleDataset, collate_examples
from pockettts.data.latents import LatentCache, build_latent_cache
from pockettts.data.synthetic import DemoCorpusConfig, build_demo_corpus
from pockettts.text import Tokenizer, train_tokenizer

log = logging.getLogger(__name__)


def micro_batches_per_step(trainer: L.Trainer) -> int:
    """Gradient-accumulation steps of a fit: Lightning's for automatic optimisation, the module's
    own ``accumulate_grad_batches`` for manual optimisation (which Lightning does not accumulate)."""
    module = trainer.lightning_module
    if module is None or module.automatic_optimization:
        return trainer.accumulate_grad_batches
    return getattr(module, "accumulate_grad_batches", 1)


class ManifestDataModule(L.LightningDataModule):
    """Shared plumbing: manifests, optional demo-corpus build, rank sharding, resumable position.

    Args:
        train_manifest, valid_manifest: validated manifests (relative paths resolve against
            ``data_dir`` when ``demo`` is set).
        data_dir: where the demo corpus is built.
        demo: recipe of the demo corpus to build in ``prepare_data``; ``None`` for your own data.
        num_workers: loader worker processes.
        seed: base seed of batch order and crops.
    """

    def __init__(
        self,
        train_manifest: str,
        valid_manifest: str,
        data_dir: str | None = None,
        demo: DemoCorpusConfig | dict | None = None,
        sample_rate: int = SAMPLE_RATE,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.data_dir = Path(data_dir) if data_dir else None
        self.demo = DemoCorpusConfig(**demo) if isinstance(demo, Mapping) else demo
        self.train_manifest = self._path(train_manifest)
        self.valid_manifest = self._path(valid_manifest)
        self.sample_rate = sample_rate
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: ManifestDataset | None = None
        self.valid_set: ManifestDataset | None = None
        self._train_sampler: EpochBatchSampler | None = None
        self._pending_state: dict | None = None

    def _path(self, manifest: str) -> Path:
        path = Path(manifest)
        return self.data_dir / path if self.data_dir is not None and not path.is_absolute() else path

    def prepare_data(self) -> None:
        if self.demo is not None:
            if self.data_dir is None:
                raise ValueError("data_dir is required to build the demo corpus")
            build_demo_corpus(self.data_dir, self.demo)
        for path in (self.train_manifest, self.valid_manifest):
            if not path.is_file():
                raise FileNotFoundError(f"manifest not found: {path}")

    def _make_dataset(self, manifest: Path, train: bool) -> ManifestDataset:
        raise NotImplementedError

    def _make_sampler(self, dataset: ManifestDataset, train: bool) -> EpochBatchSampler:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._make_dataset(self.train_manifest, train=True)
            self.valid_set = self._make_dataset(self.valid_manifest, train=False)

    def _split(self) -> dict[str, int]:
        """``num_replicas``, ``rank`` and ``accumulate`` (micro-batches per optimizer step) of the
        trainer running this module: how each global batch is split."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return {"num_replicas": 1, "rank": 0, "accumulate": 1}
        return {
            "num_replicas": trainer.world_size,
            "rank": trainer.global_rank,
            "accumulate": micro_batches_per_step(trainer),
        }

    def describe_batch(self, world_size: int, accumulate: int) -> str:
        """The global batch and each device's share of it, for the log; raises ``ValueError`` if
        the global batch cannot be split evenly."""
        raise NotImplementedError

    def _loader(self, dataset: ManifestDataset, sampler: EpochBatchSampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_audio,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        self._train_sampler = self._make_sampler(self.train_set, train=True)
        if self._pending_state is not None:
            self._train_sampler.load_state_dict(self._pending_state)
            self._pending_state = None
        return self._loader(self.train_set, self._train_sampler)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.valid_set, self._make_sampler(self.valid_set, train=False))

    def state_dict(self) -> dict:
        """Position of the training sampler: the batches the trainer has consumed this epoch."""
        if self._train_sampler is None:
            return {}
        trainer = getattr(self, "trainer", None)
        done = None
        if trainer is not None:
            # "processed", not "completed": checkpoints are written in on_train_batch_end, after
            # the batch is processed but before Lightning marks it completed.
            done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return {"train_sampler": self._train_sampler.state_dict(done)}

    def load_state_dict(self, state: dict) -> None:
        if "train_sampler" in state:
            self._pending_state = state["train_sampler"]


class CropDataModule(ManifestDataModule):
    """Fixed-length random crops in fixed-size batches (VAE training); ``batch_size`` is global."""

    def __init__(
        self,
        crop_seconds: float = 1.0,
        batch_size: int = 16,
        valid_crop_seconds: float | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.crop_seconds = crop_seconds
        self.valid_crop_seconds = valid_crop_seconds or crop_seconds
        self.batch_size = batch_size

    def _make_dataset(self, manifest: Path, train: bool) -> ManifestDataset:
        crop = self.crop_seconds if train else self.valid_crop_seconds
        return AudioCropDataset(manifest, crop, self.sample_rate, self.seed, random_crop=train)

    def _make_sampler(self, dataset: ManifestDataset, train: bool) -> EpochBatchSampler:
        return FixedSizeBatchSampler(
            len(dataset),
            self.batch_size,
            shuffle=train,
            seed=self.seed,
            drop_last=train,
            tag_epoch=True,
            **self._split(),
        )

    def describe_batch(self, world_size: int, accumulate: int) -> str:
        shares = world_size * accumulate
        if self.batch_size % shares:
            raise ValueError(
                f"data.batch_size={self.batch_size} (the global batch) does not split evenly into "
                f"{world_size} device(s) x {accumulate} accumulation step(s); change one of them"
            )
        return (
            f"global batch {self.batch_size} crops of {self.crop_seconds:g} s = {world_size} device(s) "
            f"x {accumulate} micro-batch(es) of {self.batch_size // shares}"
        )


class UtteranceDataModule(ManifestDataModule):
    """Whole utterances in duration-bucketed batches under a frame budget (TTS stages).

    ``max_frames`` (padded frames, ``rows x longest``) and ``max_batch_size`` (rows) bound the global
    batch; each device's share is bounded by ``max_frames / (devices x accumulation)``.
    """

    def __init__(
        self,
        max_frames: int = 2000,
        frame_rate: float = 12.5,
        max_batch_size: int | None = None,
        pool_size: int | None = 4096,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_frames = max_frames
        self.frame_rate = frame_rate
        self.max_batch_size = max_batch_size
        self.pool_size = pool_size
        # Datasets whose items depend on the epoch (random cuts) receive (index, epoch) keys.
        self.tag_epoch = False

    def _make_dataset(self, manifest: Path, train: bool) -> ManifestDataset:
        return UtteranceDataset(manifest, self.sample_rate)

    def _make_sampler(self, dataset: ManifestDataset, train: bool) -> EpochBatchSampler:
        return DurationBucketSampler(
            dataset.durations,
            self.max_frames,
            frame_rate=self.frame_rate,
            max_batch_size=self.max_batch_size,
            pool_size=self.pool_size,
            shuffle=train,
            ids=[item.id for item in dataset.items],
            seed=self.seed,
            tag_epoch=self.tag_epoch,
            **self._split(),
        )

    def describe_batch(self, world_size: int, accumulate: int) -> str:
        shares = world_size * accumulate
        rows = self.max_batch_size
        if rows is not None and rows % shares:
            raise ValueError(
                f"data.max_batch_size={rows} (rows per global batch) does not split evenly into "
                f"{world_size} device(s) x {accumulate} accumulation step(s); change one of them"
            )
        row_cap = "" if rows is None else f"<= {rows} rows, "
        share_cap = "" if rows is None else f"<= {rows // shares} rows, "
        return (
            f"global batch {row_cap}<= {self.max_frames} padded frames "
            f"({self.max_frames / self.frame_rate:.0f} s) = {world_size} device(s) x {accumulate} "
            f"micro-batch(es) of {share_cap}<= {self.max_frames // shares} frames"
        )


class TeacherDataModule(UtteranceDataModule):
    """Voice-prompt / text / target examples from cached latents, in duration-bucketed batches.

    ``prepare_data`` makes what is missing (once, on rank 0): the SentencePiece tokenizer (trained
    on the training manifest) and the latent cache of both manifests under the frozen VAE; both are
    reused as they are afterwards, and a cache built with other VAE weights is refused.

    Args:
        vae: the exported VAE (``.safetensors``) whose latents are modelled.
        cache_dir: root of the latent cache (one sub-directory per VAE weights hash).
        tokenizer: a SentencePiece ``.model``; trained with ``vocab_size`` if absent.
        cut: ``CutConfig`` fields (prompt length, cut margins, trailing audio, longest target).
        Batching options (``max_frames``, ``max_batch_size``, ...) are ``UtteranceDataModule``'s.
    """

    def __init__(
        self,
        vae: str,
        cache_dir: str,
        tokenizer: str,
        vocab_size: int = 4000,
        cut: Mapping | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tag_epoch = True
        self.vae = Path(vae)
        self.cache_dir = Path(cache_dir)
        self.tokenizer_path = Path(tokenizer)
        self.vocab_size = vocab_size
        self.cut = CutConfig(**(cut or {}))
        self._tokenizer: Tokenizer | None = None
        self._cache: LatentCache | None = None

    def prepare_data(self) -> None:
        super().prepare_data()
        if not self.vae.is_file():
            raise FileNotFoundError(
                f"VAE checkpoint {self.vae} not found: train stage 1 first (experiment=vae_*)"
            )
        if not self.tokenizer_path.is_file():
            prefix = self.tokenizer_path.with_suffix("")
            log.info("training a %d-piece tokenizer on %s", self.vocab_size, self.train_manifest)
            train_tokenizer([self.train_manifest], prefix, vocab_size=self.vocab_size)
        for manifest in (self.train_manifest, self.valid_manifest):
            build_latent_cache(manifest, self.vae, self.cache_dir, progress=False)

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = Tokenizer(self.tokenizer_path)
        return self._tokenizer

    @property
    def cache(self) -> LatentCache:
        if self._cache is None:
            self._cache = LatentCache.open(self.cache_dir, self.vae)
        return self._cache

    def _make_dataset(self, manifest: Path, train: bool) -> TeacherExampleDataset:
        return TeacherExampleDataset(
            manifest, self.cache, self.tokenizer, self.cut, self.seed, random_cuts=train
        )

    def _loader(self, dataset: TeacherExampleDataset, sampler: EpochBatchSampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=functools.partial(collate_examples, pad_id=self.tokenizer.pad_id),
            persistent_workers=self.num_workers > 0,
        )
