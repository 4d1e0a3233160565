"""Runs every grpcurl example of README.md and docs/**/*.md against a fresh `leadpipe serve`.

Each file's ```sh blocks that mention grpcurl run in the file's order in one bash session of
their own, as a reader pasting them into one shell would, so variables such as $LEAD carry from
block to block within a file. The files run one after another against the same server, README.md
first and then docs/ in path order; the README's tour seeds the sample data that later guides
query.
`localhost:50051` becomes the test server's address, `leadpipe` on PATH is the binary under
test, and LEADPIPE_DATABASE_URL points the `leadpipe keys` commands at the server's database.

Each block must succeed: every command in it, and every stage of every pipeline (pipefail).
When a ```text block follows a checked block directly, it is the block's output, and the output
must match it line by line; `…` in it stands for any text. An HTML comment on the line before a
block changes what is expected of it:

    <!-- readme-check: exit 73 (any explanation) -->   the block's first failing command exits 73
    <!-- readme-check: skip (the reason) -->           the block is not run
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def documents() -> list[Path]:
    """README.md, then every Markdown file under docs/, in path order."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


DIRECTIVE = re.compile(r"<!--\s*readme-check:\s*(skip|exit\s+(\d+))\b.*?-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
README_ADDRESS = re.compile(r"\b(?:localhost|127\.0\.0\.1):50051\b")
# All blocks together take seconds; this only keeps a hung command from stalling CI.
RUN_TIMEOUT_SECONDS = 300


@dataclass
class Block:
    path: str  # relative to the repository, e.g. docs/tutorial.md
    line: int  # where the fence opens, 1-based
    language: str
    code: str
    expected_exit: int = 0
    skip: bool = False
    expected_output: str | None = None


def fenced_blocks(path: str, text: str) -> list[Block]:
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, language = fence.group(1), fence.group(2)
        start = i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        block = Block(path=path, line=start + 1, language=language, code="\n".join(body) + "\n")
        before = lines[start - 1] if start > 0 else ""
        directive = DIRECTIVE.search(before)
        if directive:
            block.skip = directive.group(1) == "skip"
            if directive.group(2):
                block.expected_exit = int(directive.group(2))
        blocks.append(block)
    return blocks


def checked_blocks(document: Path) -> list[Block]:
    """A file's grpcurl blocks, each with the ```text block that directly follows it, if any."""
    text = document.read_text()
    blocks = fenced_blocks(str(document.relative_to(REPO)), text)
    lines = text.splitlines()
    checked = []
    for index, block in enumerate(blocks):
        if block.language not in ("sh", "bash") or "grpcurl" not in block.code:
            continue
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if following is not None and following.language == "text":
            # Only blank lines between the closing fence and the next opening one.
            after_closing_fence = block.line + block.code.count("\n") + 1
            between = lines[after_closing_fence : following.line - 1]
            if all(not line.strip() for line in between):
                block.expected_output = following.code
        checked.append(block)
    return checked


def output_matches(expected: str, actual: str) -> bool:
    expected_lines = [line.rstrip() for line in expected.strip("\n").splitlines()]
    actual_lines = [line.rstrip() for line in actual.strip("\n").splitlines()]
    if len(expected_lines) != len(actual_lines):
        return False
    for want, got in zip(expected_lines, actual_lines):
        pattern = ".*".join(re.escape(part) for part in want.split("…"))
        if not re.fullmatch(pattern, got):
            return False
    return True


DOCUMENTS = [(document, checked_blocks(document)) for document in documents()]
DOCUMENTS = [(document, blocks) for document, blocks in DOCUMENTS if blocks]
BLOCKS = [(index, number, block) for index, (_, blocks) in enumerate(DOCUMENTS)
          for number, block in enumerate(blocks)]


def script_for(blocks: list[Block], address: str, results: Path) -> str:
    """One bash script that runs every block in order, each block's output in its own file.

    An ERR trap records the exit status of each block's first failing command, so a failure in
    the middle of a block is not hidden by a later command that succeeds.
    """
    parts = [
        "set -o pipefail",
        'trap \'__rc=$?; [ -z "$__status" ] && __status=$__rc && __command=$BASH_COMMAND\' ERR',
    ]
    for number, block in enumerate(blocks):
        if block.skip:
            continue
        code = README_ADDRESS.sub(address, block.code)
        parts += [
            "__status= __command=",
            "{",
            code.rstrip("\n"),
            f"}} >{results}/{number}.out 2>&1 </dev/null",
            f'printf "%s\\n%s\\n" "${{__status:-0}}" "$__command" >{results}/{number}.status',
        ]
    return "\n".join(parts) + "\n"


@pytest.fixture(scope="module")
def readme_run(server, tmp_path_factory):
    """Runs every file's blocks once per server, each file in its own shell and directory.

    Returns one results directory per file; the tests below check each block's result.
    """
    grpcurl = shutil.which("grpcurl")
    assert grpcurl, "grpcurl is not on PATH: pip install -r tests/python/requirements.txt"
    assert shutil.which("jq"), "the examples use jq"
    env = dict(
        os.environ,
        PATH=f"{server.binary.parent}{os.pathsep}{os.environ['PATH']}",
        LEADPIPE_DATABASE_URL=server.database_url,
        NO_COLOR="1",
    )
    runs = []
    for document, blocks in DOCUMENTS:
        results = tmp_path_factory.mktemp("examples")
        work = tmp_path_factory.mktemp("examples-cwd")
        script = results / "examples.sh"
        script.write_text(script_for(blocks, server.address, results))
        try:
            subprocess.run(
                ["bash", str(script)], cwd=work, env=env, timeout=RUN_TIMEOUT_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"the examples of {document.relative_to(REPO)} did not finish within "
                f"{RUN_TIMEOUT_SECONDS} s"
            )
        runs.append(results)
    return runs


@pytest.mark.parametrize(
    ("document", "number"),
    [(index, number) for index, number, _ in BLOCKS],
    ids=[f"{block.path}:{block.line}" for _, _, block in BLOCKS],
)
def test_readme_example(readme_run, document, number):
    block = DOCUMENTS[document][1][number]
    where = f"{block.path}:{block.line}"
    if block.skip:
        pytest.skip(f"{where} is marked readme-check: skip")
    results = readme_run[document]
    status_file = results / f"{number}.status"
    assert status_file.exists(), f"{where} did not run (an earlier block ended the shell)"
    status, _, command = status_file.read_text().partition("\n")
    output = (results / f"{number}.out").read_text()
    assert int(status) == block.expected_exit, (
        f"{where}: `{command.strip()}` exited {status}, "
        f"expected {block.expected_exit}; output:\n{output}"
    )
    if block.expected_output is not None:
        assert output_matches(block.expected_output, output), (
            f"{where}: the output does not match the text block after it.\n"
            f"--- {block.path}\n{block.expected_output}--- actual\n{output}"
        )


def test_readme_has_grpcurl_examples():
    """Guards against the extraction silently finding nothing."""
    assert len(BLOCKS) >= 10
    found = {block.path for _, _, block in BLOCKS}
    for path in ("README.md", "docs/tutorial.md", "docs/pipelines.md", "docs/importing.md"):
        assert path in found, f"no grpcurl example found in {path}"
