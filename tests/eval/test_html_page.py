"""The listening pages: errors marked as what they are, text escaped, and, in headless Chromium
opened from disk, every player loads its audio, the tables have their rows and every plot decodes;
a missing audio file or plot is caught."""

from __future__ import annotations

import base64
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from pockettts.eval.html_page import aligned_words, marked_words_html, write_run_page
from pockettts.eval.intervals import summary_intervals
from pockettts.eval.listening_copy import ListeningCopyError, write_listening_copy
from pockettts.eval.report import build_report
from pockettts.eval.runner import eval_knobs, results_name
from pockettts.eval.wer import utterance_scores
from pockettts.models.sampling import SamplingOptions
from pockettts.schema import EvalConfig
from tests.support import write_tone

CHROMIUM = shutil.which("chromium")
# (id, text, transcript, with a reference recording)
ITEMS = [
    ("a1", "The cat sat on the mat.", "the bat sat on mat", True),
    ("b2", "Quick, bring the <map> & go!", "quick bring the map and go go", False),
]


def test_errors_are_marked_as_substitution_deletion_and_insertion():
    chunks = aligned_words("The cat sat on the mat.", "oh the cat on the hat", "plain")
    assert chunks == [
        ("insert", [], ["oh"]), ("equal", ["the", "cat"], ["the", "cat"]), ("delete", ["sat"], []),
        ("equal", ["on", "the"], ["on", "the"]), ("substitute", ["mat"], ["hat"]),
    ]  # fmt: skip
    assert marked_words_html(chunks) == (
        '<span class="ins">oh</span> the cat <span class="del">sat</span> on the '
        '<span class="sub">mat → hat</span>'
    )
    assert aligned_words("Hello there", "", "plain") == [("delete", ["hello", "there"], [])]
    # the whisper normaliser's spelling rules apply before aligning: "Mr." is "mister"
    assert aligned_words("Mr. Smith", "mister smith", "whisper") == [
        ("equal", ["mister", "smith"], ["mister", "smith"])
    ]


def test_text_is_escaped():
    marked = marked_words_html([("substitute", ["<b>"], ["&amp;"]), ("insert", [], ['"x"'])])
    assert marked == '<span class="sub">&lt;b&gt; → &amp;amp;</span> <span class="ins">&quot;x&quot;</span>'


def _write_run(results_root: Path, cfg_scale: float) -> Path:
    """A results folder as ``runner.evaluate`` writes it: kept audio, ``items.jsonl``, ``results.json``."""
    checkpoint = {"name": "teacher", "sha256": "ab" * 32, "step": None, "ema": None, "context_noise": 0.0}
    cfg = EvalConfig(checkpoint="unused", sampling=SamplingOptions(cfg_scale=cfg_scale))
    knobs = eval_knobs(cfg, checkpoint, "seed_tts")
    out = results_root / "seed_tts" / results_name(knobs)
    rows = []
    for number, (item_id, text, transcript, has_reference) in enumerate(ITEMS):
        tone = dict(seconds=0.6 + 0.2 * number, sample_rate=24_000, freq=220.0 * (number + 1))
        write_tone(out / "wavs" / f"{item_id}.wav", **tone)
        write_tone(out / "prompts" / f"{item_id}.flac", **tone)
        if has_reference:
            write_tone(out / "references" / f"{item_id}.flac", **tone)
        rows.append({
            "id": item_id, "text": text, "speaker": None, "seed": number, "prompt_audio": "/corpus/p.wav",
            "prompt_offset": 0.0, "prompt_duration": None, "reference_audio": None,
            "wav": f"wavs/{item_id}.wav", "audio_seconds": tone["seconds"], "voice_seconds": 0.1,
            "generation_seconds": 0.3, "rtf": 0.3 / tone["seconds"], "ttfa_seconds": 0.05,
            "eos_reached": number == 0, "silent": False, "kept_prompt": f"prompts/{item_id}.flac",
            "kept_reference": f"references/{item_id}.flac" if has_reference else None,
            "transcript": transcript, **utterance_scores(text, transcript, knobs["normalizers"]),
            "sim_prompt": 0.5 + 0.1 * number, "sim_reference": 0.4 if has_reference else None,
            "quality": None,
        })  # fmt: skip
    (out / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = {
        "items": len(rows), "wer_whisper": 0.3 / cfg_scale, "mean_wer_plain": 0.35 / cfg_scale,
        "cer_whisper": 0.1, "sim_prompt": 0.55, "sim_reference": 0.4, "silent": 0, "no_eos": 1, "missing": 0,
        "skipped": 0, "failed": 0, "rtf": 0.4, "ttfa_seconds": 0.05, "audio_seconds": 1.4,
        **summary_intervals(rows),
    }  # fmt: skip
    results = {
        "results_dir": str(out), "knobs": knobs, "summary": summary, "missing": [], "skipped": [],
        "failed": [], "quality_primary": None, "testset_options": {},
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(results))
    return out


def test_run_page_escapes_text_and_marks_what_was_not_kept(tmp_path):
    run = _write_run(tmp_path / "results", 1.0)
    page = write_run_page(run).read_text()
    assert "&lt;map&gt; &amp; go!" in page and "<map>" not in page
    assert page.count("<audio ") == 5 and page.count("not kept") == 1  # b2 has no reference
    assert 'src="prompts/a1.flac"' in page and str(tmp_path) not in page.split("<h2>Items")[1]
    assert "wer_whisper_ci" not in page and "[" in page.split("wer_whisper</td>")[1].split("</tr>")[0]
    assert page.count('class="flag">no EOS') == 1


# -- in a browser -------------------------------------------------------------------------------------
class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
    commands in on fd 3, replies out on fd 4, each a JSON message ended by a NUL byte)."""

    def __init__(self, profile: Path):
        to_browser, self.commands = os.pipe()
        self.replies, from_browser = os.pipe()

        def wire_pipes():  # in the child: the descriptors Chromium expects
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--window-size=1200,900", "--hide-scrollbars", f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire_pipes, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_browser)
        os.close(from_browser)
        self.buffer, self.last_id = b"", 0
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, timeout: float = 60.0, **params) -> dict:
        """Send one command (to the attached page once there is one) and wait for its reply."""
        self.last_id += 1
        message = {"id": self.last_id, "method": method, "params": params}
        if getattr(self, "session", None):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self.buffer:
                raw, self.buffer = self.buffer.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self.last_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            ready, _, _ = select.select([self.replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"Chromium did not answer {method} in {timeout} s")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium exited")
            self.buffer += chunk

    def evaluate(self, expression: str):
        reply = self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(reply["exceptionDetails"])
        return reply["result"]["value"]

    def open(self, page: Path) -> dict:
        """Open ``page`` from disk; once every player has loaded its audio's metadata (or failed) and
        every image has decoded (or failed), what rendered."""
        self.send("Page.enable")
        self.send("Page.navigate", url=page.as_uri())
        while self.evaluate("document.readyState") != "complete":
            time.sleep(0.05)
        return self.evaluate(RENDERED)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        os.close(self.commands)
        os.close(self.replies)
        self.process.terminate()
        self.process.wait(timeout=30)


# Players load nothing until played (preload="none"): each is asked for its metadata here.
RENDERED = """(async () => {
  const audio = [...document.querySelectorAll("audio")];
  const settled = (element, events) =>
    new Promise(done => events.forEach(e => element.addEventListener(e, done)));
  const loads = audio.map(a => {
    const loaded = settled(a, ["loadedmetadata", "error"]);
    a.preload = "metadata";
    a.load();
    return loaded;
  });
  const decodes = [...document.images].map(i => i.decode().catch(() => null));
  await Promise.race([Promise.all([...loads, ...decodes]), new Promise(done => setTimeout(done, 20000))]);
  return {
    audio: audio.map(a => ({src: a.getAttribute("src"), duration: a.duration, ready: a.readyState})),
    images: [...document.images].map(i => ({src: i.getAttribute("src"), width: i.naturalWidth})),
    tableRows: [...document.querySelectorAll("table")].map(t => t.tBodies[0].rows.length),
    items: document.querySelectorAll("section.item").length,
    links: [...document.querySelectorAll("a")].map(a => a.getAttribute("href")),
  };
})()"""


def broken(rendered: dict) -> list[str]:
    """The players that loaded no audio and the images that decoded nothing."""
    silent = [a["src"] for a in rendered["audio"] if not (a["ready"] >= 1 and (a["duration"] or 0) > 0)]
    return silent + [i["src"] for i in rendered["images"] if i["width"] == 0]


def assert_painted(png: Path) -> None:
    """A PNG with more than one colour in it (a blank or failed render is one flat colour)."""
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(png.read_bytes())).convert("L")
    low, high = image.getextrema()
    assert image.width >= 800 and high - low > 100 and len(image.getcolors(1 << 16)) > 10


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs the chromium binary (Debian's chromium package, scripts/setup.sh)"
)
def test_pages_render_players_tables_and_plots_in_chromium(tmp_path):
    runs = [_write_run(tmp_path / "results", scale) for scale in (1.0, 2.0)]
    for run in runs:
        write_run_page(run)
    report = build_report([tmp_path / "results"], tmp_path / "report")
    assert report["page"] == tmp_path / "report" / "report.html"
    browser = Chromium(tmp_path / "profile")
    try:
        sweep = browser.open(report["page"])
        assert sweep["images"] and broken(sweep) == []
        assert [i["src"] for i in sweep["images"]] == ["vs_cfg_scale.png"]
        assert sweep["tableRows"][0] == 2  # one row per run
        assert len(sweep["links"]) == 2 and all(link.endswith("/report.html") for link in sweep["links"])
        assert_painted(browser.screenshot(tmp_path / "sweep.png"))

        page = runs[0] / "report.html"
        rendered = browser.open(page)
        assert rendered["items"] == len(ITEMS) and len(rendered["audio"]) == 5 and broken(rendered) == []
        results = json.loads((runs[0] / "results.json").read_text())
        shown = [k for k in results["summary"] if not k.endswith("_ci")]
        set_knobs = [k for k, v in results["knobs"].items() if v is not None]
        assert rendered["tableRows"][:2] == [len(set_knobs), len(shown)]  # knobs, summary
        assert_painted(browser.screenshot(tmp_path / "run.png"))

        # the checks can fail: a lost audio file and a lost plot are caught
        (runs[0] / "prompts" / "a1.flac").unlink()
        (tmp_path / "report" / "vs_cfg_scale.png").rename(tmp_path / "report" / "moved.png")
        assert broken(browser.open(page)) == ["prompts/a1.flac"]
        assert broken(browser.open(report["page"])) == ["vs_cfg_scale.png"]
    finally:
        browser.close()


def test_listening_copy_keeps_the_tables_and_the_same_items_of_every_run_in_opus(tmp_path):
    runs = [_write_run(tmp_path / "results", scale) for scale in (1.0, 2.0)]
    report = build_report([tmp_path / "results"], tmp_path / "report")
    with pytest.raises(ListeningCopyError, match="no results.csv"):
        write_listening_copy(tmp_path / "results", tmp_path / "nowhere")
    page = write_listening_copy(tmp_path / "report", tmp_path / "copy", items=1)
    copy = tmp_path / "copy"
    assert (copy / "results.md").read_text() == report["table"] and (copy / "vs_cfg_scale.png").is_file()
    kept = {
        run.name: [json.loads(line) for line in (copy / "runs" / run.name / "items.jsonl").open()]
        for run in runs
    }
    assert [[row["id"] for row in rows] for rows in kept.values()] == [["a1"], ["a1"]]  # the same item
    first = kept[runs[0].name][0]
    assert (
        first["wav"] == f"../../audio/{runs[0].name}/a1.ogg"
        and first["kept_prompt"] == "../../audio/prompts/a1.ogg"
    )
    assert (
        sorted(p.name for p in (copy / "audio").rglob("*.ogg")).count("a1.ogg") == 4
    )  # 2 generations, 1+1 shared
    assert str(tmp_path / "results") not in page.read_text()  # links point into the copy
    if CHROMIUM is None:
        pytest.skip("needs the chromium binary (Debian's chromium package, scripts/setup.sh)")
    browser = Chromium(tmp_path / "profile")
    try:
        sweep = browser.open(page)
        assert broken(sweep) == [] and len(sweep["links"]) == 2
        rendered = browser.open(copy / "runs" / runs[0].name / "report.html")
        assert rendered["items"] == 1 and len(rendered["audio"]) == 3 and broken(rendered) == []
    finally:
        browser.close()
