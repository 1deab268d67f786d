"""The commands a newcomer copies: every ```bash and ```python block of README.md and docs/quickstart.md
runs, in order, against small fake datasets laid out as published (tests/fake_datasets.py), so a
documented command that fails fails the suite.

What the test changes, and only that (:func:`adapt`): dataset paths (``/data/CREMA-D`` ...) become
the fake trees; ``cache/.../<hash>`` the directory the last ``extract run`` into that root printed;
placeholder files (``clip1.wav``, ``new_clip.mp4`` ...) real clips. Sizes shrink: ``extract run``
gets ``--face-weights random`` (no download), 2 frames a second and one worker; ``distill
teacher|student`` the :data:`distill.testing.TINY` network and one epoch (appended, so they win over
a documented ``--epochs``); ``distill sweep`` a copy of its sweep file with one seed, the first two
variants, no control teacher and TINY; ``--val-speakers 0.02`` of the six fake VoxCeleb2 speakers
would be one, and selection by val EER needs two, so 0.34. Commands run in this process through
each CLI's ``main`` (no interpreter start per command); ``make`` targets are the suite's own
runners and are only checked to exist.

Beyond exit status 0 it checks what a reader cannot see fail: two datasets extracted into one cache
directory (it is named by the feature settings alone), and a sweep in a walkthrough that trains
another task than the walkthrough's teacher. Other docs' sweep commands are checked to name a cache.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from fake_datasets import demo_clips, make_fake_tree

from distill.cli import EPILOG
from distill.cli import main as distill_main
from distill.config import ConfigError, merge
from distill.sweep import SweepSpec
from distill.testing import TINY
from extract.cache import open_cache
from extract.cli import main as extract_main
from manifests.cli import main as manifests_main
from manifests.io import read_manifest

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/quickstart.md")
PROGRAMS = {
    ("distill",): distill_main,
    ("extract",): extract_main,
    ("python", "-m", "distill"): distill_main,
    ("python", "-m", "extract"): extract_main,
    ("python", "-m", "manifests"): manifests_main,
}
TREES = {  # documented dataset root -> fake tree
    "/data/CREMA-D": "cremad",
    "/data/RAVDESS": "ravdess",
    "/data/IEMOCAP_full_release": "iemocap",
    "/data/VoxCeleb2": "voxceleb2",
    "/data/VoxCeleb1": "voxceleb1",
    "/data/my_videos": "generic",
}
AUDIO, VIDEO = ("clip1.wav", "clip.wav", "a.wav", "b.wav"), ("clip2.mp4", "new_clip.mp4")
TINY_SETS = [a for k, v in TINY.items() if k != "train.epochs" for a in ("--set", f"{k}={v}")]


# --------------------------------------------------------------------------- reading the docs


@dataclass
class Block:
    doc: str
    line: int  # of the opening fence
    lang: str  # bash | python
    text: str


def blocks(doc: str, langs: tuple[str, ...] = ("bash", "python")) -> list[Block]:
    found, lang, start, body = [], None, 0, []
    for n, line in enumerate((REPO / doc).read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)\s*$", line)
        if fence and lang is None:
            lang, start, body = fence.group(1), n, []
        elif fence:
            if lang in langs:
                found.append(Block(doc, start, lang, "\n".join(body)))
            lang = None
        elif lang is not None:
            body.append(line)
    return found


@dataclass
class Command:
    where: str  # doc:line
    words: list[str]  # as written (after variables), before the test's changes


def commands(block: Block, env: dict[str, str]) -> list[Command | tuple[str, str]]:
    """A bash block's commands, ``NAME=VALUE`` lines as (name, value); comments, ``\\`` continuations,
    ``;`` and ``$NAME`` handled as bash does. Variables expand when the command runs (``env``)."""
    out: list[Command | tuple[str, str]] = []
    lines = block.text.replace("\\\n", " ").splitlines()
    for k, line in enumerate(lines):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token != ";":
                words.append(token)
                continue
            if len(words) == 1 and re.fullmatch(r"[A-Za-z_]\w*=\S*", words[0]):
                out.append(tuple(words[0].split("=", 1)))
            elif words:
                out.append(Command(f"{block.doc}:{block.line + 1 + k}", words))
            words = []
    return out


# --------------------------------------------------------------------------- the small world


@dataclass
class World:
    """The working directory the docs' relative paths live in, and what the commands made so far."""

    cwd: Path
    trees: dict[str, Path]
    audio: Path
    video: Path
    caches: dict[str, Path] = field(default_factory=dict)  # --cache-root as written -> cache dir printed
    extracted: dict[str, set] = field(default_factory=dict)  # cache dir -> utt ids of the manifest put there
    teacher_tasks: dict[str, set] = field(default_factory=dict)  # cache dir -> tasks of teachers trained on it
    sweeps: int = 0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("docs")
    clips = demo_clips(root / "corpus")
    trees = {doc: make_fake_tree(name, root / "data", clips) for doc, name in TREES.items()}
    cwd = root / "work"
    cwd.mkdir()
    (cwd / "configs").symlink_to(REPO / "configs")
    shutil.copy(trees["/data/my_videos"] / "labels.csv", cwd / "labels.csv")  # `--labels labels.csv`, beside you
    audio = next(trees["/data/VoxCeleb1"].rglob("*.wav"))
    return World(cwd, trees, audio, clips[0].path)


def expand(text: str, world: World, env: dict[str, str]) -> str:
    text = re.sub(r"\$\{?([A-Za-z_]\w*)\}?", lambda m: env.get(m.group(1), m.group(0)), text)
    for doc, tree in world.trees.items():
        text = text.replace(doc, str(tree))

    def cache_dir(m: re.Match) -> str:
        root = m.group(1) or "cache"
        if root not in world.caches:
            raise AssertionError(f"{m.group(0)}: no `extract run --cache-root {root}` ran before it")
        return str(world.caches[root])

    return re.sub(r"([\w./-]*)/<hash>", cache_dir, text)


def adapt(words: list[str], world: World) -> list[str]:
    """The documented command with the test's changes (module docstring)."""
    words = [str(world.audio) if w in AUDIO else str(world.video) if w in VIDEO else w for w in words]
    for i, word in enumerate(words[:-1]):
        if word == "--val-speakers" and words[i + 1] == "0.02":
            words[i + 1] = "0.34"
        if word == "--workers" and words[:2] == ["extract", "run"]:
            words[i + 1] = "1"
    head = words[:2]
    if head == ["extract", "run"]:
        return words + ["--face-weights", "random", "--fps", "2", "--threads", "1", "--no-progress"]
    if head in (["distill", "teacher"], ["distill", "student"]):
        return words + ["--epochs", "1", "--quiet", *TINY_SETS]
    if head == ["distill", "sweep"]:
        world.sweeps += 1
        raw = yaml.safe_load((world.cwd / words[2]).read_text())
        raw["seeds"], raw["variants"] = raw.get("seeds", [0])[:1], raw["variants"][:2]
        raw.pop("controls", None)
        tiny: dict = {"train": {"epochs": 1, "threads": 1}}
        for key, value in TINY.items():
            section, name = key.split(".")
            tiny.setdefault(section, {})[name] = value
        raw["base"] = merge(raw.get("base") or {}, tiny)
        raw["teacher"] = merge(raw.get("teacher") or {}, {"train": {"epochs": 1}})
        small = world.cwd.parent / f"sweep{world.sweeps}.yaml"
        small.write_text(yaml.safe_dump(raw))
        return [*words[:2], str(small), *words[3:], "--quiet"]
    return words


def program(words: list[str]):
    for prefix, main in PROGRAMS.items():
        if tuple(words[: len(prefix)]) == prefix:
            return main, words[len(prefix) :]
    raise AssertionError(f"no runner for {shlex.join(words)}: add it to PROGRAMS, or say why it is not run")


# --------------------------------------------------------------------------- running them


def run_command(cmd: Command, world: World, env: dict[str, str]) -> None:
    written = expand(shlex.join(cmd.words), world, env)
    words = adapt(shlex.split(written), world)
    if words[0] == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (REPO / "Makefile").read_text(), re.M)
        assert set(words[1:]) <= set(targets), f"{cmd.where}: {shlex.join(words)}: no such make target"
        return
    leftover = [w for w in words if re.search(r"<\w[\w -]*>|^/data/", w)]
    assert not leftover, f"{cmd.where}: placeholder(s) {leftover} the test does not fill in"
    main, argv = program(words)
    if words[:2] == ["extract", "run"]:
        share_extraction(argv, world)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    detail = f"{cmd.where}: `{shlex.join(cmd.words)}` ran as `{shlex.join(words)}`"
    assert code == 0, f"{detail}\nexit {code}\nstdout: {out.getvalue()[-1500:]}\nstderr: {err.getvalue()[-3000:]}"
    if words[:2] == ["extract", "run"]:
        record_extraction(argv, out.getvalue(), world, detail)
    if words[:2] == ["distill", "teacher"]:
        cache, task = _option(words, "--cache"), _option(words, "--task")
        world.teacher_tasks.setdefault(str(Path(cache).resolve()), set()).add(task)
    if words[:2] == ["distill", "sweep"]:
        tasks = {c["task"] for c in yaml.safe_load(Path(words[2]).read_text())["combos"]}
        trained = world.teacher_tasks.get(str(Path(_option(words, "--cache")).resolve()), tasks)
        assert tasks <= trained, f"{detail}: the sweep trains {tasks}, the walkthrough's teacher {trained}"


def _option(words: list[str], flag: str) -> str | None:
    return words[words.index(flag) + 1] if flag in words else None


def _cache_root(argv: list[str]) -> str:
    return _option(argv, "--cache-root") or "cache"


def share_extraction(argv: list[str], world: World) -> None:
    """A manifest already extracted with these settings into another root: seed this root with a copy,
    so the command runs as the resume it would be and each clip is extracted once in this module."""
    ids = set(read_manifest(world.cwd / _option(argv, "--manifest"))["utt_id"])
    for done, held in world.extracted.items():
        if held == ids and not (world.cwd / _cache_root(argv) / Path(done).name).exists():
            shutil.copytree(done, world.cwd / _cache_root(argv) / Path(done).name)
            return


def record_extraction(argv: list[str], printed: str, world: World, detail: str) -> None:
    cache = Path(printed.strip().split()[-1])
    ids = set(read_manifest(world.cwd / _option(argv, "--manifest"))["utt_id"])
    held = set(open_cache(cache).index.index)
    if held - ids:
        raise AssertionError(
            f"{detail}: cache {cache} also holds {len(held - ids)} item(s) of another manifest, e.g. "
            f"{sorted(held - ids)[0]!r}: two datasets extracted with the same settings into one --cache-root "
            "share one cache directory; give each its own root"
        )
    assert held == ids, f"{detail}: {len(ids - held)} item(s) not extracted, e.g. {sorted(ids - held)[0]!r}"
    world.caches[_cache_root(argv)] = cache
    world.extracted[str(cache)] = ids


def run_python(block: Block, world: World, env: dict[str, str]) -> None:
    code = expand(block.text, world, env).replace('cache["utt_id"]', "cache[next(iter(cache))]")
    leftover = re.findall(r"<\w[\w -]*>", code)
    assert not leftover, f"{block.doc}:{block.line}: placeholder(s) {leftover} the test does not fill in"
    exec(compile(code, f"{block.doc}:{block.line}", "exec"), {"__name__": "__docs__"})


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_every_documented_command_runs(doc, world, monkeypatch):
    monkeypatch.chdir(world.cwd)
    env: dict[str, str] = {}
    ran = 0
    for block in blocks(doc):
        if block.lang == "python":
            run_python(block, world, env)
            ran += 1
            continue
        for cmd in commands(block, env):
            if isinstance(cmd, tuple):
                env[cmd[0]] = expand(cmd[1], world, env)
            else:
                run_command(cmd, world, env)
                ran += 1
    assert ran >= 8, f"{doc}: only {ran} commands found; did the block syntax change?"


# --------------------------------------------------------------------------- sweeps elsewhere


def _sweep_commands() -> list[tuple[str, list[str]]]:
    found = []
    sources = [
        (f"{b.doc}:{b.line}", b.text)
        for d in sorted(REPO.glob("docs/*.md"))
        for b in blocks(str(d.relative_to(REPO)), ("bash", ""))
    ]
    sources += [(f"{b.doc}:{b.line}", b.text) for b in blocks("README.md", ("bash", ""))]
    sources.append(("distill --help", EPILOG))
    for where, text in sources:
        for line in text.replace("\\\n", " ").splitlines():
            if not line.strip().startswith("distill sweep"):
                continue
            words = shlex.split(line, comments=True)
            if (REPO / words[2]).is_file():
                found.append((where, words))
    return found


def test_every_documented_sweep_names_a_cache():
    """`distill sweep configs/demo_sweep.yaml --backend dask ...` once stopped at once with "no cache"."""
    found = _sweep_commands()
    assert len(found) >= 4 and any("--backend" in words for _, words in found)
    for where, words in found:
        try:
            SweepSpec.load(REPO / words[2], cache=_option(words, "--cache"))
        except ConfigError as exc:
            raise AssertionError(f"{where}: {shlex.join(words)}: {exc}") from exc
