"""Write every sheet of the corpus into a folder, to open them in Excel or LibreOffice: `python tests/corpus/build.py DIR`."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus_cases import all_cases  # noqa: E402


def main(folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for case in all_cases():
        path = case.materialise(out)
        print(f"{path}  exit {case.exit}  {case.about}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "corpus-sheets")
