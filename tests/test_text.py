"""Tokenizer: SentencePiece training on manifests; loading a SentencePiece ``.model`` or a HF
``tokenizers`` ``tokenizer.json`` (the released models' format) with the same ids as Pocket TTS's
tokenizer classes; encoding through the shared normalisation."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from pockettts.cli.data import main
from pockettts.data.manifest import read_manifest
from pockettts.data.synthetic import read_sentences
from pockettts.text import (
    TextError,
    Tokenizer,
    VocabularyTooLargeError,
    normalize_text,
    train_tokenizer,
)

VOCAB = 96


@pytest.fixture(scope="module")
def tokenizer_path(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "demo"
    return train_tokenizer([tiny_corpus / "train.jsonl"], out, vocab_size=VOCAB, num_threads=1)


def test_train_writes_model_and_vocab_only(tokenizer_path):
    assert tokenizer_path.name == "demo.model"
    # The temporary training prefix is gone: only the two final files remain.
    assert sorted(p.name for p in tokenizer_path.parent.iterdir()) == ["demo.model", "demo.vocab"]
    assert len(tokenizer_path.with_suffix(".vocab").read_text().splitlines()) == VOCAB


def test_round_trip_of_a_training_sentence(tokenizer_path, tiny_corpus):
    tokenizer = Tokenizer(tokenizer_path)
    assert tokenizer.vocab_size == VOCAB and tokenizer.pad_id == VOCAB
    text = read_manifest(tiny_corpus / "train.jsonl")[0].text
    ids = tokenizer.encode(text)
    assert ids and all(0 <= i < VOCAB for i in ids)
    assert tokenizer.unk_id not in ids  # every character of the training text is covered
    assert tokenizer.decode(ids) == normalize_text(text)
    # Padding ids decode to nothing, so padded rows round-trip too.
    assert tokenizer.decode(ids + [tokenizer.pad_id] * 3) == normalize_text(text)


def test_encode_applies_the_shared_normalisation(tokenizer_path):
    tokenizer = Tokenizer(tokenizer_path)
    fancy = "\u201cWell\u201d  \u2014 it\u2019s\n fine."
    assert tokenizer.encode(fancy) == tokenizer.encode(normalize_text(fancy))
    assert tokenizer.encode(fancy) == tokenizer.encode('"Well" - it\'s fine.')


@pytest.mark.parametrize("text", ["", "   \n\t", "...", "?! --", "\u65e5\u672c\u8a9e"])
def test_unusable_text_raises_text_error_naming_it(tokenizer_path, text):
    tokenizer = Tokenizer(tokenizer_path)
    with pytest.raises(TextError) as info:
        tokenizer.encode(text)
    assert repr(text) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_decode_rejects_ids_outside_the_vocabulary(tokenizer_path):
    with pytest.raises(ValueError, match=str(VOCAB + 1)):
        Tokenizer(tokenizer_path).decode([3, VOCAB + 1])


def test_tokenizer_pickles_by_value(tokenizer_path, tmp_path):
    tokenizer = Tokenizer(tokenizer_path)
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.encode("Hello there.") == tokenizer.encode("Hello there.")
    assert copy.vocab_size == tokenizer.vocab_size


def test_missing_model_names_the_path(tmp_path):
    missing = tmp_path / "nope.model"
    with pytest.raises(FileNotFoundError, match="nope.model"):
        Tokenizer(missing)


def test_too_large_vocab_names_the_largest_that_works(tiny_corpus, tmp_path):
    manifests = [tiny_corpus / "train.jsonl"]
    with pytest.raises(VocabularyTooLargeError) as info:
        train_tokenizer(manifests, tmp_path / "big", vocab_size=100_000, num_threads=1)
    maximum = info.value.maximum
    assert 0 < maximum < 100_000
    assert f"at most {maximum}" in str(info.value) and "hard_vocab_limit=False" in str(info.value)
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    # The size it names does work, and the soft limit stops there by itself.
    assert (
        Tokenizer(train_tokenizer(manifests, tmp_path / "max", maximum, num_threads=1)).vocab_size == maximum
    )
    soft = train_tokenizer(manifests, tmp_path / "soft", 100_000, hard_vocab_limit=False, num_threads=1)
    assert Tokenizer(soft).vocab_size <= maximum


def test_unigram_and_bad_model_type(tiny_corpus, tmp_path):
    manifests = [tiny_corpus / "train.jsonl"]
    path = train_tokenizer(manifests, tmp_path / "uni", vocab_size=80, model_type="unigram", num_threads=1)
    assert Tokenizer(path).vocab_size == 80
    with pytest.raises(ValueError, match="model_type"):
        train_tokenizer(manifests, tmp_path / "x", model_type="wordpiece")


def test_cli_trains_on_several_manifests(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "tokenizers" / "demo"
    argv = ["tokenizer", "--out", str(out), "--vocab-size", "100"]
    for split in ("train", "valid"):
        argv += ["--manifest", str(tiny_corpus / f"{split}.jsonl")]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == {"model": f"{out}.model", "vocab_size": 100, "pad_id": 100}
    tokenizer = Tokenizer(f"{out}.model")
    assert main([*argv, "--vocab-size", "100000"]) == 1  # the last --vocab-size wins
    assert "at most" in capsys.readouterr().err
    valid_text = read_manifest(tiny_corpus / "valid.jsonl")[0].text
    assert tokenizer.decode(tokenizer.encode(valid_text)) == normalize_text(valid_text)


# -- tokenizer.json (HF tokenizers), the format of the released Pocket TTS models ----------------

# Numbers, punctuation, non-ASCII letters and typographic quotes (which the normalisation rewrites).
PARITY_TEXTS = [
    "The morning fog drifted slowly across the harbor.",
    "It cost 3.50 euros, not 42 - or was it 1,024?",
    "Caf\u00e9 d\u00e9j\u00e0 vu: na\u00efve Stra\u00dfe, se\u00f1or!",
    "\u201cWell\u201d  \u2014 it\u2019s fine\u2026 (isn't it?)",
    "Zo\u00eb's 2nd r\u00e9sum\u00e9; \u00c5ngstr\u00f6m & \u00dcber.",
]
EXTRA_TRAINING = [
    "Prices: 0 1 2 3 4 5 6 7 8 9, 3.50 euros and 1,024 apples; 42 - or 2nd?",
    "Caf\u00e9 d\u00e9j\u00e0 vu, na\u00efve Stra\u00dfe, se\u00f1or, Zo\u00eb, r\u00e9sum\u00e9.",
    '\u00c5ngstr\u00f6m & \u00dcber (isn\'t it)... "Well"?',
]


def _train_json_tokenizer(kind: str, path):
    """A tiny tokenizer.json trained offline, shaped like a SentencePiece conversion (Metaspace
    pre-tokenizer and decoder); "bpe_bos_eos" also wraps every text in <s> ... </s>."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    specials = ["<unk>", "<s>", "</s>"]
    if kind == "unigram":
        tok = HFTokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=300, special_tokens=specials, unk_token="<unk>", show_progress=False
        )
    else:
        tok = HFTokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False)
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(read_sentences(None) + EXTRA_TRAINING, trainer)
    if kind == "bpe_bos_eos":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)]
        )
    tok.save(str(path))
    return path


@pytest.fixture(scope="module", params=["unigram", "bpe", "bpe_bos_eos"])
def json_tokenizer_path(request, tmp_path_factory):
    return _train_json_tokenizer(request.param, tmp_path_factory.mktemp("json") / "tokenizer.json")


def test_json_tokenizer_gives_the_reference_ids(json_tokenizer_path):
    from pocket_tts.modules.text_conditioner import JsonTokenizer, build_tokenizer

    ours = Tokenizer(json_tokenizer_path)
    reference = JsonTokenizer(ours.vocab_size, str(json_tokenizer_path))  # asserts the same vocab size
    assert isinstance(build_tokenizer(ours.vocab_size, str(json_tokenizer_path)), JsonTokenizer)
    for text in PARITY_TEXTS:
        ids = ours.encode(text)
        assert ids == reference.encode(normalize_text(text)), text
        assert ours.unk_id not in ids, text  # every character is covered: a real tokenization
        assert ours.decode(ids) == reference.decode(ids) == normalize_text(text)
    assert ours.encode(PARITY_TEXTS[3]) != ours.encode(PARITY_TEXTS[3].replace("\u2019", "\u00b4"))
    copy = pickle.loads(pickle.dumps(ours))
    assert copy.encode(PARITY_TEXTS[1]) == ours.encode(PARITY_TEXTS[1])


def test_sentencepiece_model_gives_the_reference_ids(tokenizer_path):
    from pocket_tts.modules.text_conditioner import SentencePieceTokenizer, build_tokenizer

    ours = Tokenizer(tokenizer_path)
    reference = build_tokenizer(VOCAB, str(tokenizer_path), "sentencepiece")
    assert isinstance(reference, SentencePieceTokenizer)
    for text in PARITY_TEXTS[:2]:  # what the English-only demo vocabulary covers
        assert ours.encode(text) == reference.encode(normalize_text(text)), text


@pytest.mark.parametrize("text", ["", "  \t", "...", "\u65e5\u672c\u8a9e"])
def test_json_tokenizer_rejects_unusable_text(json_tokenizer_path, text):
    with pytest.raises(TextError, match="nothing to say|no characters this tokenizer knows"):
        Tokenizer(json_tokenizer_path).encode(text)


@pytest.mark.parametrize(
    "name, content",
    [
        ("tokenizer.json", b'{"version": "1.0", "model": '),  # truncated JSON
        ("tokenizer.json", b'{"version": "1.0", "model": {"type": "NoSuchModel"}}'),
        ("tokenizer.model", b"\x00\x01 not a protobuf \xff" * 8),
        ("tokenizer.txt", b"hello world"),
    ],
)
def test_unreadable_tokenizer_file_names_the_path(tmp_path, name, content):
    path = tmp_path / "bad" / name
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable tokenizer") as info:
        Tokenizer(path)
    assert str(path) in str(info.value)


@pytest.fixture(scope="module")
def released_model(tmp_path_factory):
    """A released-layout file (1-layer english.yaml FlowLM, random weights, and Mimi) whose config
    names a tokenizer.json, as Kyutai's configs do; pocket-tts itself builds it from that file."""
    import yaml
    from pocket_tts.models.flow_lm import FlowLMModel
    from pocket_tts.models.mimi import build_mimi
    from pocket_tts.utils.config import CONFIGS_DIR, load_config
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("released")
    json_path = _train_json_tokenizer("bpe", folder / "tokenizer.json")
    config = yaml.safe_load((CONFIGS_DIR / "english.yaml").read_text())
    lookup = config["flow_lm"]["lookup_table"]
    config["flow_lm"]["transformer"]["num_layers"] = 1
    lookup.update(
        n_bins=Tokenizer(json_path).vocab_size, tokenizer="tokenizers", tokenizer_path=str(json_path)
    )
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    parsed = load_config(folder / "config.yaml")
    torch.manual_seed(0)
    flow_lm = FlowLMModel.from_pydantic_config(parsed.flow_lm, latent_dim=32, insert_bos_before_voice=True)
    flow_lm.speaker_proj_weight = torch.nn.Parameter(torch.randn(parsed.flow_lm.transformer.d_model, 32))
    tensors = {f"flow_lm.{k}": v for k, v in flow_lm.state_dict().items()}
    tensors.update({f"mimi.{k}": v for k, v in build_mimi(parsed.mimi).state_dict().items()})
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "model.safetensors"))
    return folder


def test_released_model_imports_with_its_tokenizer_json(released_model, tokenizer_path, tmp_path, capsys):
    from pocket_tts.modules.text_conditioner import JsonTokenizer

    from pockettts.models.bundle import read_export
    from pockettts.models.tts import TextToSpeech
    from pockettts.tools.__main__ import main as tools_main

    json_path = released_model / "tokenizer.json"
    argv = [
        "import-kyutai",
        "--weights",
        str(released_model / "model.safetensors"),
        "--config",
        str(released_model / "config.yaml"),
    ]
    out = tmp_path / "ours"
    assert tools_main([*argv, "--out", str(out), "--tokenizer", str(json_path)]) == 0
    assert (out / "tokenizer.json").read_bytes() == json_path.read_bytes()
    assert read_export(out / "flow_lm.safetensors").metadata["tokenizer"] == "tokenizer.json"
    tts = TextToSpeech.load(out / "flow_lm.safetensors")
    reference = JsonTokenizer(tts.tokenizer.vocab_size, str(json_path))
    assert tts.tokenizer.encode(PARITY_TEXTS[1]) == reference.encode(normalize_text(PARITY_TEXTS[1]))
    # A tokenizer of another size (the demo .model) or an unreadable one is refused, naming the file.
    for wrong in (tokenizer_path, tmp_path / "missing.json"):
        assert tools_main([*argv, "--out", str(tmp_path / "refused"), "--tokenizer", str(wrong)]) == 2
        assert str(wrong) in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
