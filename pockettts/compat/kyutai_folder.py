"""Our model as a folder that Kyutai's ``pocket-tts`` loads through its own config:

    OUT/model.safetensors   FlowLM and codec in the released single-file layout (``flow_lm.*``, ``mimi.*``)
    OUT/tokenizer.model     (or ``tokenizer.json``) the export's tokenizer file, unchanged
    OUT/voice.<ext>         optional: a voice prompt, for ``--voice``
    OUT/config.yaml         in pocket-tts's own schema, naming the files above; written last

``pocket-tts generate --config OUT/config.yaml`` then runs the model, as do ``pocket-tts serve``,
``pocket-tts export-voice`` and ``TTSModel.load_model(config=...)``. pocket-tts reads a local path
in a config relative to its working directory, not to the config, so the paths are absolute: a
moved folder needs a new export.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from pockettts.compat.flow_lm import flow_lm_config_to_pocket
from pockettts.compat.mimi import mimi_config_from_vae
from pockettts.compat.pocket import save_pocket_tts
from pockettts.io import atomic_write, atomic_write_text
from pockettts.models.tts import TextToSpeech
from pockettts.text import PLAIN_PUNCTUATION


def export_kyutai_folder(
    flow_lm: str | Path, out_dir: str | Path, vae: str | Path | None = None, voice: str | Path | None = None
) -> Path:
    """Write ``out_dir`` (see the module docstring) from an exported FlowLM (teacher or student) with
    its tokenizer beside it and the codec it records, or ``vae``; returns the config's path.

    Raises ``KyutaiLayoutError``, before writing anything, naming what Kyutai's layout cannot
    express: a short-context transformer, a backbone conditioned on the context noise level, voice
    features other than the codec's downsampled features, a codec transformer without a context
    window or LayerScale, a codec without a downsampling conv.
    """
    tts = TextToSpeech.load(flow_lm, vae)
    if voice is not None and not Path(voice).is_file():
        raise FileNotFoundError(f"voice prompt {voice} does not exist")
    out_dir = Path(out_dir).resolve()
    tokenizer = tts.tokenizer.path.read_bytes()
    # pocket-tts picks its tokenizer class from the config; pockettts.text reads the file by content.
    is_json = tokenizer.lstrip()[:1] == b"{"
    tokenizer_path = out_dir / ("tokenizer.json" if is_json else "tokenizer.model")
    weights_path = out_dir / "model.safetensors"
    kind = "tokenizers" if is_json else "sentencepiece"
    config = {
        "weights_path": str(weights_path),
        # What our tokenizer's text normalisation does before encoding (its pieces have no such characters).
        "replace_characters": PLAIN_PUNCTUATION,
        "flow_lm": flow_lm_config_to_pocket(tts.flow_lm, str(tokenizer_path), kind),
        "mimi": mimi_config_from_vae(tts.vae),
    }
    save_pocket_tts(tts.flow_lm, tts.vae, weights_path)
    atomic_write(tokenizer_path, lambda tmp: tmp.write_bytes(tokenizer))
    if voice is not None:
        atomic_write(out_dir / f"voice{Path(voice).suffix}", lambda tmp: shutil.copyfile(voice, tmp))
    header = f"# A pocket-tts config for {flow_lm}, written by `pockettts-tools export-kyutai`.\n"
    text = yaml.safe_dump(config, sort_keys=False)  # escapes the invisible no-break space
    return atomic_write_text(out_dir / "config.yaml", header + text)
