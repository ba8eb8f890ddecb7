"""Write DATA/clean/overfit8.jsonl: 8 training utterances of the demo corpus (2 per voice, 2 sentences
each, 3-7.5 s), the items of the overfit check. Beside train.jsonl, so relative audio paths stay valid.

    python recipes/tiny/pick_overfit8.py data/demo
"""

import collections
import json
import sys

VOICES = ["flite_awb", "flite_rms", "flite_slt", "festival_ked_diphone"]


def main(data: str) -> None:
    by_speaker = collections.defaultdict(list)
    with open(f"{data}/clean/train.jsonl") as manifest:
        for line in manifest:
            item = json.loads(line)
            if 3.0 < item["duration"] < 7.5 and len(item.get("segments") or []) == 2:
                by_speaker[item["speaker"]].append(line)
    with open(f"{data}/clean/overfit8.jsonl", "w") as out:
        for speaker in VOICES:
            out.writelines(by_speaker[speaker][:2])


if __name__ == "__main__":
    main(sys.argv[1])
