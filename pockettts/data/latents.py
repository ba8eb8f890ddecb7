"""Latent cache: a manifest encoded once by a frozen VAE, stored as sharded safetensors.

One directory per latent space, named after the VAE's latent hash (its encoder side: codecs that
differ only in their decoder share a cache), so latents of an older codec are never read
by mistake::

    <out_dir>/<first 16 hex digits of the VAE's latent hash>/
        meta.json                 VAE path and hash, rates, latent dim, manifests, counts
        index.jsonl               {"id", "shard", "frames"} for every cached item
        shard_00000.safetensors   item id -> float32 latents [F, D]; frame sums in its metadata
        skipped.jsonl             {"id", "manifest", "reason", "message"} per item left out
        stats.safetensors         per-dimension "mean" [D] and "std" [D] over every cached frame

Shards are the ground truth. Each is written whole and renamed into place, and carries its own
frame count, sums and sums of squares, so the index and the statistics can always be rebuilt from
the shards alone: a crash loses at most the shard being filled, and the next build resumes from
what is on disk (items already in a shard are not encoded again; skipped items are retried).
One build at a time per cache directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from pockettts.audio import TARGET_LUFS, is_silent, load_audio, loudness_normalize
from pockettts.data.manifest import ManifestItem, read_manifest
from pockettts.data.parallel import ordered_map
from pockettts.devices import resolve_device
from pockettts.io import atomic_write, atomic_write_text
from pockettts.models.vae import AudioVAE, load_vae, vae_latent_hash

log = logging.getLogger(__name__)

CACHE_FORMAT = "pockettts.latents"
HASH_DIR_CHARS = 16
META_FILE = "meta.json"
INDEX_FILE = "index.jsonl"
SKIPPED_FILE = "skipped.jsonl"
STATS_FILE = "stats.safetensors"
_SHARD_NAME = re.compile(r"^shard_(\d+)\.safetensors$")


class LatentCacheError(RuntimeError):
    """A latent cache that cannot be used as asked; the message names the directory."""


class StaleCacheError(LatentCacheError):
    """The cache was built by a VAE whose weights differ from the one in use."""


def shard_name(number: int) -> str:
    return f"shard_{number:05d}.safetensors"


# -- statistics ---------------------------------------------------------------------------------


@dataclass
class FrameMoments:
    """Streaming per-dimension moments: frame count, sums and sums of squares (float64)."""

    count: int
    total: torch.Tensor  # [D] float64
    squares: torch.Tensor  # [D] float64

    @classmethod
    def zeros(cls, dim: int) -> FrameMoments:
        return cls(0, torch.zeros(dim, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64))

    def add(self, frames: torch.Tensor) -> None:
        """Accumulate ``frames`` ``[F, D]``."""
        frames = frames.to(torch.float64)
        self.count += frames.shape[0]
        self.total += frames.sum(0)
        self.squares += frames.pow(2).sum(0)

    def merge(self, other: FrameMoments) -> None:
        self.count += other.count
        self.total += other.total
        self.squares += other.squares

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and unbiased std ``[D]`` (as ``Tensor.std``), float64."""
        mean = self.total / self.count
        variance = (self.squares - self.count * mean.pow(2)) / max(self.count - 1, 1)
        return mean, variance.clamp_min(0).sqrt()

    def to_metadata(self) -> dict[str, str]:
        # JSON floats round-trip float64 exactly.
        return {
            "frames": str(self.count),
            "sum": json.dumps(self.total.tolist()),
            "sumsq": json.dumps(self.squares.tolist()),
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> FrameMoments:
        return cls(
            int(metadata["frames"]),
            torch.tensor(json.loads(metadata["sum"]), dtype=torch.float64),
            torch.tensor(json.loads(metadata["sumsq"]), dtype=torch.float64),
        )


# -- small file helpers -------------------------------------------------------------------------


def _write_json(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def _write_jsonl(path: Path, records: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _read_jsonl(path: Path) -> list[dict]:
    """Records of a jsonl file; a torn last line (crash mid-append) is ignored."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("ignoring a torn line in %s", path)
    return records


def _read_meta(cache_dir: Path) -> dict:
    meta = json.loads((cache_dir / META_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != CACHE_FORMAT:
        raise LatentCacheError(
            f"{cache_dir} is not a pockettts latent cache (meta.format={meta.get('format')})"
        )
    return meta


def _shard_files(cache_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in cache_dir.iterdir() if (m := _SHARD_NAME.match(p.name))]
    return sorted(found)


# -- building -----------------------------------------------------------------------------------


def _scan_shards(cache_dir: Path) -> tuple[list[dict], FrameMoments | None]:
    """Index records and summed moments of every readable shard, from the shard headers alone."""
    records: list[dict] = []
    moments: FrameMoments | None = None
    seen: set[str] = set()
    for _, path in _shard_files(cache_dir):
        try:
            with safe_open(str(path), framework="pt") as handle:
                shard_moments = FrameMoments.from_metadata(handle.metadata())
                shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}
        except Exception as err:  # a damaged shard is left out (and re-encoded), not fatal
            log.warning("ignoring unreadable shard %s: %s", path, err)
            continue
        for key in sorted(shapes):
            if key in seen:
                log.warning("item %s appears in several shards; using the first", key)
                continue
            seen.add(key)
            records.append({"id": key, "shard": path.name, "frames": shapes[key][0]})
        if moments is None:
            moments = shard_moments
        else:
            moments.merge(shard_moments)
    return records, moments


@dataclass(frozen=True)
class _Skip:
    reason: str
    message: str


def _load_for_encoding(item: ManifestItem, root: Path, sample_rate: int, silence_db: float):
    """``[1, T]`` loudness-normalised audio of ``item``'s window, or why it cannot be used."""
    path = item.resolve_audio(root)
    if not path.is_file():
        return _Skip("missing_file", f"audio file not found: {path}")
    try:
        # Silence is judged at the recorded level: normalisation would lift faint noise to speech level.
        wav = load_audio(path, sample_rate, item.offset, item.duration, target_lufs=None)
    except Exception as err:  # decoders raise many types; one bad file must not stop the run
        return _Skip("unreadable_audio", f"{type(err).__name__}: {err}")
    if is_silent(wav, sample_rate, silence_db):
        return _Skip("silent_audio", f"no 20 ms frame above {silence_db} dBFS in {path}")
    return loudness_normalize(wav, sample_rate, TARGET_LUFS)


def _prefetched(
    load: Callable, items: list[ManifestItem], workers: int
) -> Iterator[tuple[ManifestItem, object]]:
    """``(item, load(item))`` in order, decoding up to ``2 * workers`` items ahead in threads."""
    with ThreadPoolExecutor(workers) if workers > 0 else nullcontext() as pool:
        yield from zip(items, ordered_map(load, items, pool, 2 * workers))


class _CacheWriter:
    """Collects latents into shards; each full shard is written atomically, then indexed."""

    def __init__(self, cache_dir: Path, shard_size: int, latent_hash: str, skipped: dict[str, dict]):
        self.cache_dir = cache_dir
        self.shard_size = shard_size
        self.latent_hash = latent_hash
        self.skipped = skipped
        shards = _shard_files(cache_dir)
        self.next_number = shards[-1][0] + 1 if shards else 0
        self.pending: dict[str, torch.Tensor] = {}

    def add(self, item_id: str, latents: torch.Tensor) -> None:
        self.pending[item_id] = latents
        self.skipped.pop(item_id, None)
        if len(self.pending) >= self.shard_size:
            self.flush()

    def skip(self, item_id: str, manifest: Path, reason: str, message: str) -> None:
        self.skipped[item_id] = {
            "id": item_id,
            "manifest": str(manifest),
            "reason": reason,
            "message": message,
        }

    def flush(self) -> None:
        if self.pending:
            moments = FrameMoments.zeros(next(iter(self.pending.values())).shape[-1])
            for latents in self.pending.values():
                moments.add(latents)
            metadata = {"format": CACHE_FORMAT, "latent_hash": self.latent_hash, **moments.to_metadata()}
            path = self.cache_dir / shard_name(self.next_number)
            atomic_write(path, lambda tmp: save_file(self.pending, str(tmp), metadata=metadata))
            with open(self.cache_dir / INDEX_FILE, "a", encoding="utf-8") as index:
                for item_id in sorted(self.pending):
                    frames = self.pending[item_id].shape[0]
                    index.write(json.dumps({"id": item_id, "shard": path.name, "frames": frames}) + "\n")
            self.next_number += 1
            self.pending = {}
        _write_jsonl(self.cache_dir / SKIPPED_FILE, self.skipped.values())


@torch.inference_mode()
def _encode(vae: AudioVAE, wav: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``[1, T]`` -> float32 latents ``[ceil(T / frame_size), D]`` on the CPU (for the shard files)."""
    return vae.encode(wav[None].to(device))[0].float().cpu().contiguous()


def build_latent_cache(
    manifest: str | os.PathLike,
    vae_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    shard_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = True,
    silence_db: float = -50.0,
    workers: int = 2,
) -> LatentCache:
    """Encode every item of ``manifest`` with the exported VAE at ``vae_path`` into ``out_dir``.

    Each item's latents are ``vae.encode`` (posterior mean) of its audio window, loaded at the VAE's
    sample rate and loudness-normalised like everywhere else. Resumable: items already cached are
    skipped, so several manifests (train, valid) can share one cache. Missing, unreadable and
    silent items are listed in ``skipped.jsonl`` and never stop the run. ``workers`` threads decode
    audio ahead of the encoder, which runs on ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
    The counts of this run are in ``cache.meta["last_run"]``.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    device = resolve_device(device)
    manifest, vae_path = Path(manifest), Path(vae_path)
    items = read_manifest(manifest)
    latent_hash = vae_latent_hash(vae_path)
    cache_dir = Path(out_dir) / latent_hash[:HASH_DIR_CHARS]
    cache_dir.mkdir(parents=True, exist_ok=True)
    previous = _read_meta(cache_dir) if (cache_dir / META_FILE).is_file() else {}
    if previous and previous.get("latent_hash") != latent_hash:
        raise StaleCacheError(
            f"{cache_dir} holds latents of latent hash {previous.get('latent_hash')}, not {latent_hash} "
            f"({vae_path})"
        )

    # The shards decide what is done; the index is rewritten from them (it may lag after a crash).
    for leftover in cache_dir.glob(".*.tmp*"):  # pockettts.io.atomic_write's temporary names
        leftover.unlink()
    records, _ = _scan_shards(cache_dir)
    _write_jsonl(cache_dir / INDEX_FILE, records)
    # Statistics come back at the end; until then none (rather than stale ones) are on disk.
    (cache_dir / STATS_FILE).unlink(missing_ok=True)
    done = {r["id"] for r in records}
    skipped = {r["id"]: r for r in _read_jsonl(cache_dir / SKIPPED_FILE) if r["id"] not in done}
    todo: list[ManifestItem] = []
    for item in items:
        if item.id not in done:
            done.add(item.id)  # a repeated id is encoded once
            todo.append(item)
    unique_ids = len({item.id for item in items})

    vae = load_vae(vae_path, device)
    meta = {
        "format": CACHE_FORMAT,
        "version": 2,  # 2: keyed by the latent hash (encoder side), 1: by the whole weights
        "vae_path": str(vae_path.resolve()),
        "latent_hash": latent_hash,
        "sample_rate": vae.sample_rate,
        "frame_rate": vae.frame_rate,
        "frame_size": vae.frame_size,
        "latent_dim": vae.latent_dim,
        "target_lufs": TARGET_LUFS,
        "silence_db": silence_db,
        "manifests": sorted({*previous.get("manifests", []), str(manifest.resolve())}),
    }
    _write_json(cache_dir / META_FILE, {**previous, **meta})

    writer = _CacheWriter(cache_dir, shard_size, latent_hash, skipped)
    encoded = 0

    def load(item: ManifestItem):
        return _load_for_encoding(item, manifest.parent, vae.sample_rate, silence_db)

    try:
        loaded = _prefetched(load, todo, workers)
        for item, wav in tqdm(loaded, total=len(todo), desc="encode latents", disable=not progress):
            if isinstance(wav, _Skip):
                writer.skip(item.id, manifest, wav.reason, wav.message)
                continue
            latents = _encode(vae, wav, device)
            if not torch.isfinite(latents).all():
                writer.skip(item.id, manifest, "non_finite_latents", "the VAE produced NaN or inf")
                continue
            writer.add(item.id, latents)
            encoded += 1
    finally:
        # Whatever was encoded before an error or an interrupt is kept.
        writer.flush()

    records, moments = _scan_shards(cache_dir)
    _write_jsonl(cache_dir / INDEX_FILE, records)
    if moments is not None:
        mean, std = moments.mean_std()
        stats = {"mean": mean.float(), "std": std.float()}
        atomic_write(
            cache_dir / STATS_FILE,
            lambda tmp: save_file(stats, str(tmp), metadata={"frames": str(moments.count)}),
        )
    meta.update(
        items=len(records),
        frames=sum(r["frames"] for r in records),
        shards=len({r["shard"] for r in records}),
        skipped=len(writer.skipped),
        last_run={
            "manifest": str(manifest.resolve()),
            "manifest_items": len(items),
            "encoded": encoded,
            "already_cached": unique_ids - len(todo),
            "skipped": len(todo) - encoded,
        },
    )
    _write_json(cache_dir / META_FILE, meta)
    log.info("latent cache %s: %s", cache_dir, meta["last_run"])
    return LatentCache(cache_dir)


# -- reading ------------------------------------------------------------------------------------


class LatentCache:
    """Read access to one VAE's latent cache directory.

    ``get`` opens shards lazily and keeps the last ``max_open_shards`` handles. Handles are never
    shared between processes: a forked DataLoader worker (new pid) or an unpickled copy starts
    with none and opens its own.
    """

    def __init__(self, cache_dir: str | os.PathLike, max_open_shards: int = 8):
        self.cache_dir = Path(cache_dir)
        if not (self.cache_dir / META_FILE).is_file():
            raise FileNotFoundError(f"no latent cache at {self.cache_dir} (no {META_FILE})")
        self.meta = _read_meta(self.cache_dir)
        self.max_open_shards = max_open_shards
        existing = {path.name for _, path in _shard_files(self.cache_dir)}
        self._shard_of: dict[str, str] = {}
        self._frames: dict[str, int] = {}
        for record in _read_jsonl(self.cache_dir / INDEX_FILE):
            if record["shard"] not in existing:
                log.warning(
                    "%s: shard %s is missing; %s left out", self.cache_dir, record["shard"], record["id"]
                )
                continue
            self._shard_of[record["id"]] = record["shard"]
            self._frames[record["id"]] = int(record["frames"])
        self._reset_handles()

    @classmethod
    def open(cls, out_dir: str | os.PathLike, vae_path: str | os.PathLike | None = None) -> LatentCache:
        """The cache under ``out_dir`` (a root of hash directories, or one hash directory).

        With ``vae_path``, the cache must have been built by a VAE with the same weights, otherwise
        :class:`StaleCacheError`; without it, ``out_dir`` must hold exactly one cache.
        """
        out_dir = Path(out_dir)
        if (out_dir / META_FILE).is_file():
            candidates = [out_dir]
        else:
            candidates = sorted(p.parent for p in out_dir.glob(f"*/{META_FILE}"))
        if not candidates:
            raise FileNotFoundError(
                f"no latent cache in {out_dir}: build one with `python -m pockettts.data encode`"
            )
        metas = {c: _read_meta(c) for c in candidates}
        if vae_path is None:
            if len(candidates) > 1:
                listed = ", ".join(f"{c} (VAE {m['vae_path']})" for c, m in metas.items())
                raise LatentCacheError(
                    f"{out_dir} holds caches of {len(candidates)} VAEs: {listed}; pass vae_path to choose"
                )
            return cls(candidates[0])
        wanted = vae_latent_hash(vae_path)
        for cache_dir, meta in metas.items():
            if meta.get("latent_hash") == wanted:
                return cls(cache_dir)
        found = "; ".join(
            f"{c} built by {m['vae_path']} (latent hash {m.get('latent_hash')})" for c, m in metas.items()
        )
        raise StaleCacheError(
            f"stale latent cache: VAE {vae_path} has latent hash {wanted}, "
            f"but {out_dir} only holds {found}. "
            f"Re-encode with `python -m pockettts.data encode --vae {vae_path} --out {out_dir} ...`"
        )

    # -- metadata ---------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return list(self._shard_of)

    def __len__(self) -> int:
        return len(self._shard_of)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._shard_of

    def num_frames(self, item_id: str) -> int:
        """Latent frames of ``item_id``, without reading its shard (length bucketing)."""
        return self._frames[self._check(item_id)]

    @property
    def frame_rate(self) -> float:
        return float(self.meta["frame_rate"])

    @property
    def latent_dim(self) -> int:
        return int(self.meta["latent_dim"])

    @property
    def latent_hash(self) -> str:
        return self.meta["latent_hash"]

    def stats(self) -> dict[str, torch.Tensor]:
        """Per-dimension ``mean`` and ``std`` ``[D]`` (float32) over every cached frame."""
        path = self.cache_dir / STATS_FILE
        if path.is_file():
            return dict(load_file(str(path)))
        # An interrupted build leaves no stats file; the shards carry what is needed.
        _, moments = _scan_shards(self.cache_dir)
        if moments is None:
            raise LatentCacheError(f"latent cache {self.cache_dir} is empty: no statistics")
        mean, std = moments.mean_std()
        return {"mean": mean.float(), "std": std.float()}

    # -- latents ----------------------------------------------------------------------------
    def get(self, item_id: str) -> torch.Tensor:
        """float32 latents ``[F, D]`` of ``item_id``."""
        return self._handle(self._shard_of[self._check(item_id)]).get_tensor(item_id)

    def _check(self, item_id: str) -> str:
        if item_id not in self._shard_of:
            raise KeyError(f"item {item_id!r} is not in latent cache {self.cache_dir}")
        return item_id

    def _handle(self, shard: str):
        if self._pid != os.getpid():
            self._reset_handles()
        handle = self._handles.get(shard)
        if handle is None:
            handle = safe_open(str(self.cache_dir / shard), framework="pt")
            self._handles[shard] = handle
            while len(self._handles) > self.max_open_shards:
                self._handles.popitem(last=False)
        self._handles.move_to_end(shard)
        return handle

    def _reset_handles(self) -> None:
        self._handles: OrderedDict[str, object] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f"LatentCache({str(self.cache_dir)!r}, items={len(self)}, latent_hash={self.latent_hash[:12]})"
