"""Latent cache: exact VAE latents in shards, streaming statistics, resume, bad items, staleness."""

from __future__ import annotations

import json
import math
import pickle
import shutil
from dataclasses import replace

import pytest
import soundfile as sf
import torch
from safetensors import safe_open

import pockettts.data.latents as latents_module
from pockettts.audio import load_audio
from pockettts.cli.data import main
from pockettts.data.latents import (
    LatentCache,
    LatentCacheError,
    StaleCacheError,
    build_latent_cache,
    vae_latent_hash,
)
from pockettts.data.manifest import ManifestItem, read_manifest, write_manifest
from pockettts.models.vae import AudioVAE, load_vae
from tests.support import TINY_VAE


@pytest.fixture
def vae_path(tiny_vae, tmp_path):
    return tiny_vae.save(tmp_path / "vae_a" / "vae.safetensors")


def _windowed_manifest(tiny_corpus, root, split: str, count: int):
    """``count`` items of a split cut to short windows (keeps the tests fast, covers offset/duration).

    Audio paths stay relative: ``root/audio`` links to the corpus audio.
    """
    if not (root / "audio").exists():
        root.mkdir(parents=True, exist_ok=True)
        (root / "audio").symlink_to(tiny_corpus / "audio")
    items = [
        replace(item, offset=0.3 * n, duration=1.1 + 0.37 * n, segments=(), words=())
        for n, item in enumerate(read_manifest(tiny_corpus / f"{split}.jsonl")[:count])
    ]
    return write_manifest(root / f"{split}.jsonl", items)


@pytest.fixture
def manifest(tiny_corpus, tmp_path):
    return _windowed_manifest(tiny_corpus, tmp_path / "corpus", "train", 7)


def _contents(cache: LatentCache) -> dict[str, torch.Tensor]:
    return {item_id: cache.get(item_id) for item_id in cache.ids}


def test_latents_are_exactly_the_vae_encoding(manifest, vae_path, tmp_path):
    cache = build_latent_cache(manifest, vae_path, tmp_path / "latents", shard_size=3, progress=False)
    vae = load_vae(vae_path)
    latent_hash = vae_latent_hash(vae_path)
    with safe_open(str(vae_path), framework="pt") as handle:
        assert latent_hash == handle.metadata()["latent_sha1"]
    assert cache.cache_dir == tmp_path / "latents" / latent_hash[:16]
    assert (cache.latent_hash, cache.frame_rate, cache.latent_dim) == (
        latent_hash,
        12.5,
        TINY_VAE["latent_dim"],
    )

    items = read_manifest(manifest)
    assert sorted(cache.ids) == sorted(i.id for i in items) and len(cache) == len(items)
    index = [json.loads(line) for line in (cache.cache_dir / "index.jsonl").read_text().splitlines()]
    assert {r["shard"] for r in index} == {
        f"shard_{n:05d}.safetensors" for n in range(math.ceil(len(items) / 3))
    }
    frames = {r["id"]: r["frames"] for r in index}
    for item in items:
        audio = load_audio(item.resolve_audio(manifest.parent), vae.sample_rate, item.offset, item.duration)
        with torch.no_grad():
            expected = vae.encode(audio[None])[0]
        got = cache.get(item.id)
        assert got.dtype == torch.float32
        assert got.shape == (math.ceil(audio.shape[-1] / vae.frame_size), vae.latent_dim)
        assert torch.equal(got, expected)
        assert frames[item.id] == cache.num_frames(item.id) == got.shape[0]
    assert "nope" not in cache and items[0].id in cache
    with pytest.raises(KeyError, match="nope"):
        cache.get("nope")

    meta = json.loads((cache.cache_dir / "meta.json").read_text())
    assert meta["latent_hash"] == latent_hash and meta["vae_path"] == str(vae_path.resolve())
    assert meta["manifests"] == [str(manifest.resolve())]
    assert (meta["items"], meta["frames"], meta["skipped"]) == (len(items), sum(frames.values()), 0)
    assert meta["last_run"]["encoded"] == len(items)


def test_stats_are_mean_and_std_of_every_cached_frame(manifest, vae_path, tmp_path):
    cache = build_latent_cache(manifest, vae_path, tmp_path / "latents", shard_size=4, progress=False)
    every_frame = torch.cat(list(_contents(cache).values())).double()
    stats = cache.stats()
    assert stats["mean"].shape == stats["std"].shape == (cache.latent_dim,)
    torch.testing.assert_close(stats["mean"].double(), every_frame.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stats["std"].double(), every_frame.std(0), rtol=1e-5, atol=1e-6)
    # The fallback that sums shard headers (no stats file after a crash) agrees.
    (cache.cache_dir / "stats.safetensors").unlink()
    torch.testing.assert_close(LatentCache(cache.cache_dir).stats(), stats)


def test_resume_after_a_lost_shard_and_after_a_crash(manifest, vae_path, tmp_path, monkeypatch):
    out = tmp_path / "latents"
    first = build_latent_cache(manifest, vae_path, out, shard_size=2, progress=False)
    reference, reference_stats = _contents(first), first.stats()
    total = len(reference)

    # A lost shard (and a temp file left by a killed writer) are re-encoded, nothing else.
    with safe_open(str(first.cache_dir / "shard_00001.safetensors"), framework="pt") as handle:
        lost = set(handle.keys())
    (first.cache_dir / "shard_00001.safetensors").unlink()
    (first.cache_dir / ".shard_00009.k2x7q.tmp.safetensors").write_bytes(b"torn")  # atomic_write's name
    second = build_latent_cache(manifest, vae_path, out, shard_size=2, progress=False)
    assert second.meta["last_run"]["encoded"] == len(lost) == 2
    assert second.meta["last_run"]["already_cached"] == total - 2
    assert not list(second.cache_dir.glob(".*.tmp*"))
    assert _contents(second).keys() == reference.keys()
    assert all(torch.equal(second.get(i), reference[i]) for i in reference)
    torch.testing.assert_close(second.stats(), reference_stats)

    # A crash mid-run keeps every shard written before it; the next run encodes only the rest.
    crashed = tmp_path / "crashed"
    real_encode, calls = latents_module._encode, []

    def encode_then_crash(*args):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("simulated crash")
        return real_encode(*args)

    monkeypatch.setattr(latents_module, "_encode", encode_then_crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_latent_cache(manifest, vae_path, crashed, shard_size=2, progress=False)
    partial = LatentCache.open(crashed)
    assert len(partial) == 5  # two full shards, and the half-filled one flushed on the way out
    assert all(torch.equal(partial.get(i), reference[i]) for i in partial.ids)
    monkeypatch.setattr(latents_module, "_encode", real_encode)
    resumed = build_latent_cache(manifest, vae_path, crashed, shard_size=2, progress=False)
    assert resumed.meta["last_run"]["encoded"] == total - 5
    assert all(torch.equal(resumed.get(i), reference[i]) for i in reference)
    torch.testing.assert_close(resumed.stats(), reference_stats)


def test_bad_items_are_skipped_listed_and_retried(manifest, vae_path, tmp_path):
    good = read_manifest(manifest)[:2]
    audio_dir = tmp_path / "broken" / "audio"
    audio_dir.mkdir(parents=True)
    (audio_dir / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt this is not audio")
    sf.write(audio_dir / "silent.wav", torch.zeros(24_000).numpy(), 24_000)
    items = [
        *(replace(item, audio=str(item.resolve_audio(manifest.parent))) for item in good),
        ManifestItem(id="missing", audio="audio/missing.wav", text="Gone."),
        ManifestItem(id="corrupt", audio="audio/corrupt.wav", text="Broken."),
        ManifestItem(id="silent", audio="audio/silent.wav", text="Quiet."),
    ]
    bad_manifest = write_manifest(tmp_path / "broken" / "bad.jsonl", items)
    out = tmp_path / "latents"
    cache = build_latent_cache(bad_manifest, vae_path, out, progress=False)
    assert sorted(cache.ids) == sorted(i.id for i in good)
    skipped = {
        r["id"]: r for r in map(json.loads, (cache.cache_dir / "skipped.jsonl").read_text().splitlines())
    }
    assert {k: r["reason"] for k, r in skipped.items()} == {
        "missing": "missing_file",
        "corrupt": "unreadable_audio",
        "silent": "silent_audio",
    }
    assert "missing.wav" in skipped["missing"]["message"] and "corrupt.wav" in skipped["corrupt"]["message"]
    assert cache.meta["skipped"] == cache.meta["last_run"]["skipped"] == 3

    # Once the missing file appears, the next run picks it up and drops it from the list.
    shutil.copy(good[0].resolve_audio(manifest.parent), audio_dir / "missing.wav")
    again = build_latent_cache(bad_manifest, vae_path, out, progress=False)
    assert again.meta["last_run"]["encoded"] == 1 and "missing" in again
    assert {
        json.loads(line)["id"] for line in (again.cache_dir / "skipped.jsonl").read_text().splitlines()
    } == {
        "corrupt",
        "silent",
    }


def test_a_cache_from_another_vae_is_detected(manifest, vae_path, tmp_path):
    out = tmp_path / "latents"
    cache_a = build_latent_cache(manifest, vae_path, out, shard_size=64, progress=False)
    torch.manual_seed(1)  # same architecture, different weights
    path_b = AudioVAE(**TINY_VAE).eval().save(tmp_path / "vae_b" / "vae.safetensors")
    hash_a, hash_b = vae_latent_hash(vae_path), vae_latent_hash(path_b)
    assert hash_a != hash_b

    for where in (out, cache_a.cache_dir):
        with pytest.raises(StaleCacheError) as info:
            LatentCache.open(where, vae_path=path_b)
        message = str(info.value)
        assert all(s in message for s in (hash_a, hash_b, str(path_b), str(vae_path.resolve())))
    assert LatentCache.open(out, vae_path=vae_path).cache_dir == cache_a.cache_dir
    assert LatentCache.open(out).cache_dir == cache_a.cache_dir

    # Two VAEs' caches side by side: choosing needs the VAE.
    cache_b = build_latent_cache(manifest, path_b, out, shard_size=64, progress=False)
    assert cache_b.cache_dir != cache_a.cache_dir
    with pytest.raises(LatentCacheError, match="2 VAEs") as info:
        LatentCache.open(out)
    assert hash_a[:16] in str(info.value) and hash_b[:16] in str(info.value)
    assert LatentCache.open(out, vae_path=path_b).latent_hash == hash_b
    with pytest.raises(FileNotFoundError, match="no latent cache"):
        LatentCache.open(tmp_path / "elsewhere")


def test_a_codec_with_another_decoder_reads_the_same_cache(manifest, vae_path, tmp_path):
    """Latents depend on the encoder side only: a new (here wider) decoder on the same encoder keeps
    the cache, so nothing is encoded again; another encoder does not."""
    out = tmp_path / "latents"
    cache = build_latent_cache(manifest, vae_path, out, shard_size=64, progress=False)
    wide = AudioVAE(**TINY_VAE, decoder_seanet=dict(n_filters=8, dimension=32), weight_norm=False).eval()
    wide.load_inference_state_dict(load_vae(vae_path).inference_state_dict(), encoder_only=True)
    wide_path = wide.save(tmp_path / "vae_wide" / "vae.safetensors")
    assert LatentCache.open(out, vae_path=wide_path).cache_dir == cache.cache_dir
    again = build_latent_cache(manifest, wide_path, out, shard_size=64, progress=False)
    assert again.meta["last_run"]["encoded"] == 0 and again.cache_dir == cache.cache_dir
    with torch.no_grad():
        next(wide.encoder.parameters()).add_(1e-3)
    with pytest.raises(StaleCacheError):
        LatentCache.open(out, vae_path=wide.save(tmp_path / "vae_moved" / "vae.safetensors"))


def test_cache_survives_pickling_for_loader_workers(manifest, vae_path, tmp_path):
    cache = build_latent_cache(manifest, vae_path, tmp_path / "latents", shard_size=2, progress=False)
    cache.max_open_shards = 1
    before = _contents(cache)  # opens every shard in turn, keeping one
    copy = pickle.loads(pickle.dumps(cache))
    assert all(torch.equal(copy.get(i), before[i]) for i in before)


def test_cli_encode_and_summary(manifest, tiny_corpus, vae_path, tmp_path, capsys):
    out = tmp_path / "latents"
    argv = ["encode", "--vae", str(vae_path), "--out", str(out), "--shard-size", "4", "--no-progress"]
    valid_manifest = _windowed_manifest(tiny_corpus, manifest.parent, "valid", 2)
    argv += ["--manifest", str(manifest), "--manifest", str(valid_manifest)]
    assert main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    train, valid = len(read_manifest(manifest)), len(read_manifest(valid_manifest))
    assert [line["encoded"] for line in lines] == [train, valid]
    cache = LatentCache.open(out, vae_path=vae_path)
    assert len(cache) == lines[-1]["items"] == train + valid
    assert len(cache.meta["manifests"]) == 2
