"""Runs the `python` blocks of docs/clients/python.md, in order, as one script against a fresh
`leadpipe serve`, with the interpreter that has clients/python installed.

`localhost:50051` becomes the test server's address. A block preceded by
`<!-- readme-check: skip (the reason) -->` is not run, as in test_readme.py.
"""

import subprocess
import sys

from test_readme import README_ADDRESS, REPO, fenced_blocks

GUIDE = REPO / "docs" / "clients" / "python.md"


def test_python_guide_examples_run(server, tmp_path):
    blocks = [
        block
        for block in fenced_blocks(str(GUIDE.relative_to(REPO)), GUIDE.read_text())
        if block.language == "python" and not block.skip
    ]
    assert len(blocks) >= 5, "the guide's examples were not found"
    script = tmp_path / "guide.py"
    script.write_text("\n".join(README_ADDRESS.sub(server.address, block.code) for block in blocks))
    run = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, f"{GUIDE.name} examples failed:\n{run.stdout}\n{run.stderr}"
