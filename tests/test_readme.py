"""The README's commands: every `recembed` line shown exists with the options it uses, and the
"Running" story on the shipped sample runs, in order, each command answering something."""

from __future__ import annotations

import re
import shlex

import pytest
import typer
from typer.testing import CliRunner

from recembed.cli import Profile, StageName, app
from tests.conftest import ROOT

runner = CliRunner()
README = (ROOT / "README.md").read_text()
# the story's `run` lines get these (documented in the README next to the story): one epoch and
# no calibration keep the test short; the runs and the published versions go to a temp folder
QUICK = ["train.epochs=1", "calibrate.enabled=false", "run.progress=false"]


def code_blocks(text: str) -> list[str]:
    """The fenced shell code blocks of a Markdown text (their bodies; ```python blocks left
    out: a command inside a Python string is not a command line)."""
    return [body for lang, body in re.findall(r"^```([a-z]*)\n(.*?)^```", text,
                                              flags=re.S | re.M) if lang != "python"]


def commands(block: str) -> list[list[str]]:
    """The `recembed ...` command lines of a block, as argument lists after `recembed`
    (comments dropped; `.venv/bin/recembed` in a cron line counts too)."""
    out = []
    for line in block.splitlines():
        m = re.search(r"(?:^|\s|/)recembed (\w.*)$", line)
        if not m or line.lstrip().startswith(("from ", "import ", "#")):
            continue
        cmd = m.group(1).split(" >>")[0].split("  #")[0].split(" # ")[0]
        args = shlex.split(cmd)
        if args and args[0] in {"run", "evaluate", "publish", "query", "recommend", "tune",
                                "synth"}:
            out.append(args)
    return out


def story() -> list[list[str]]:
    section = README.split("## Running", 1)[1]
    return commands(code_blocks(section)[0])


def test_every_readme_command_exists_with_its_options():
    group = typer.main.get_command(app)
    shown = [c for b in code_blocks(README) for c in commands(b)]
    assert len(shown) >= 12  # the parser found the Running blocks and the cron line
    for args in shown:
        cmd = group.commands.get(args[0])
        assert cmd is not None, f"README shows `recembed {args[0]}`, which does not exist"
        opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for a in args[1:]:
            if a.startswith("-"):
                assert a.split("=")[0] in opts, f"`recembed {' '.join(args)}`: no option {a}"


def test_stage_and_profile_choices_match_the_code():
    from recembed.stages import STAGES
    from recembed.synth import PROFILES

    assert [s.value for s in StageName] == [s.name for s in STAGES]
    assert tuple(p.value for p in Profile) == PROFILES


def test_help_keeps_every_bracket_and_names_top_k():
    # Rich reads "[lo, hi]" as markup and drops it unless escaped: every bracketed phrase of a
    # help text or docstring must be printed
    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():
        r = runner.invoke(app, [name, "--help"], terminal_width=400, env={"COLUMNS": "400"})
        assert r.exit_code == 0, r.output
        shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", r.output).split())
        texts = [cmd.help or "", *(getattr(p, "help", "") or "" for p in cmd.params)]
        for t in texts:
            for br in re.findall(r"\\?\[[^\]]*\]", t):
                br = " ".join(br.lstrip("\\").split())
                assert br in shown, f"recembed {name} --help lost {br!r}"
    for name in ("query", "recommend"):
        opts = next(p for p in group.commands[name].params if p.name == "k").opts
        assert set(opts) == {"-k", "--top-k"}


@pytest.fixture(scope="module")
def story_dirs(tmp_path_factory):
    return tmp_path_factory.mktemp("story")


@pytest.mark.slow  # ~25 s of CPU: a whole nightly run on the 60k-event sample, evaluated twice
def test_the_running_story_on_the_sample(story_dirs):
    tmp = story_dirs
    lines = story()
    assert [a[0] for a in lines] == ["run", "evaluate", "publish", "evaluate", "query",
                                     "recommend", "run", "run"]
    run_dir = None
    extra = [x for s in [f"run.runs_dir='{tmp / 'runs'}'", f"publish.dir='{tmp / 'published'}'",
                         *QUICK] for x in ("--set", s)]
    for args in lines:
        args = [str(ROOT / a) if a.startswith("pipelines/") else a for a in args]
        if run_dir is not None:
            args = [str(run_dir) if a.startswith("runs/nightly-") else a for a in args]
        args = [str(tmp / "published") if a == "published/" else a for a in args]
        if args[0] == "run" and "--resume" not in args:
            args = [*args, *extra]
        r = runner.invoke(app, args)
        assert r.exit_code == 0, f"recembed {' '.join(args)}:\n{r.output}"
        out = r.output
        assert out.strip(), args
        if args[0] == "run" and run_dir is None:
            run_dir = next((tmp / "runs").iterdir())
            assert f"run: {run_dir}" in out
        if args[0] in ("query", "recommend"):
            assert "unknown" not in out, out
            rows = [ln for ln in out.splitlines() if re.match(r"\s+\d+\s+\S+\s+-?\d", ln)]
            assert len(rows) == int(args[args.index("--top-k" if "--top-k" in args
                                                    else "-k") + 1]), out
        if args[0] == "evaluate" and "--run" in args:
            assert float(out.split()[1]) > 0.05, out  # the sample's ids score on its holdout
        if args[0] == "evaluate" and "--run" not in args:
            assert "serving" in out
    assert len(list((tmp / "runs").iterdir())) == 1  # every run line used the same run dir
