"""Every ``python scripts/<name>.py ...`` command that README.md and docs/*.md show is one the
script accepts: a Hydra script's overrides compose (and, for ``train.py`` and
``pipeline.py``, pass the settings checks a real run makes before any work); an argparse
script's arguments parse with the script's own parser. Nothing is trained or written.

Where commands are found: fenced code blocks (a ``\\`` continuation joined to its line) and
inline code spans (which may run over lines in a paragraph); a span may leave out the
``python``. In them, ``for s in 0 1 2; do ... $s ...; done`` takes the loop's first value, a
variable set alone on a line (``C="experiment=msnbc ..."``) is expanded where ``$C`` follows,
a ``$s`` with no loop in the span, or a ``seed=S``, is seed 0, a placeholder ``<a|b|c>`` is its
first choice and any other ``<...>`` is ``0`` (a seed, a number or a path), and an elided
``...`` argument is left out. What this cannot read is listed in :data:`UNCHECKED`, with why;
each entry must still match a command in the docs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from scripts import hydra_argv
from scripts.configs import CONFIGS, compose_stage

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
SOURCES = {p.stem: p.read_text(encoding="utf-8") for p in sorted((ROOT / "scripts").glob("*.py"))}
HYDRA_SCRIPTS = {n for n, src in SOURCES.items() if re.search(r"^@hydra\.main\(", src, re.M)}
ARGPARSE_SCRIPTS = {n for n, src in SOURCES.items() if re.search(r"^def main\(", src, re.M)}
ARGPARSE_SCRIPTS = {n for n in ARGPARSE_SCRIPTS - HYDRA_SCRIPTS if "ArgumentParser(" in SOURCES[n]}
QUOTING_SCRIPTS = {n for n, src in SOURCES.items() if "= hydra_argv(sys.argv[1:])" in src}
"""The scripts whose ``__main__`` quotes awkward values for Hydra (``scripts.hydra_argv``):
the test quotes only theirs, as only they do for real."""

UNCHECKED = {
    r"\[data\.mode=markov \| data=ga360\]": "a choice between two overrides, in brackets",
    r" \[seed=[\d|]+\]": "an optional override, in brackets",
    r"data=<\.\.\.> data\.path=<\.\.\.>": "any data source: no one config group to fill in",
    r"experiment=<name>": "any experiment (tests/unit/test_configs.py composes each)",
    r"simulator=my_model": "the reader's own config (configs/simulator/my_model.yaml)",
    r"^scripts/ope\.py (log|estimate)$": "names a subcommand in prose, not a whole command",
    r"^scripts/ope_study\.py (--slate-size k|--fixed-models)$": "names an option in prose",
}
"""Patterns (``re.search`` in a command's text) of the commands this test cannot check, and
why."""


@dataclass(frozen=True)
class Command:
    where: str  # doc:line
    script: str
    argv: tuple[str, ...]
    text: str  # the command as found (before placeholders were filled)


def _spans(doc: str) -> list[tuple[int, str]]:
    """``(line, shell text)`` of every code line (continuations joined) and inline code span
    of ``doc``."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    out: list[tuple[int, str]] = []
    paragraph: list[tuple[int, str]] = []

    def flush() -> None:
        text = "\n".join(t for _, t in paragraph)
        for m in re.finditer(r"`([^`]+)`", text):
            line = paragraph[0][0] + text.count("\n", 0, m.start())
            out.append((line, " ".join(m.group(1).split())))
        paragraph.clear()

    fenced, i = False, 0
    while i < len(lines):
        line, start = lines[i], i + 1
        i += 1
        if line.lstrip().startswith("```"):
            flush()
            fenced = not fenced
        elif fenced:
            while line.rstrip().endswith("\\") and i < len(lines):
                line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
            out.append((start, line.strip()))
        elif line.strip():
            paragraph.append((start, line))
        else:
            flush()
    flush()
    return out


def _fill(text: str, env: dict[str, str]) -> str:
    """``text`` with its shell variables expanded and its placeholders filled."""
    loop = re.search(r"\bfor (\w+) in (\S+)[^;]*;\s*do\b", text)
    if loop:
        env = {**env, loop.group(1): loop.group(2)}
        text = text[: loop.start()] + text[loop.end() :]
    text = re.sub(r";\s*done\b", "", text)
    text = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), text)
    text = re.sub(r"\bseed=S\b", "seed=0", text)  # "seed=S": any seed
    return re.sub(
        r"<([^<>\s][^<>]*)>",
        lambda m: (
            m.group(1).split("|")[0] if re.fullmatch(r"[\w.-]+(\|[\w.-]+)+", m.group(1)) else "0"
        ),
        text,
    )


def _argv(tokens: list[str]) -> tuple[str, list[str]] | None:
    """``(script, arguments)`` of one simple shell command, or None if it runs no script."""
    for j, token in enumerate(tokens[:-1]):
        if re.fullmatch(r"python3?", token):
            script = re.fullmatch(r"scripts/(\w+)\.py", tokens[j + 1])
            if script:
                return script.group(1), [t for t in tokens[j + 2 :] if t != "..."]
    script = re.fullmatch(r"scripts/(\w+)\.py", tokens[0]) if len(tokens) > 1 else None
    if script:  # "scripts/x.py --flag": a command without its "python"
        return script.group(1), [t for t in tokens[1:] if t != "..."]
    return None


def documented_commands() -> tuple[list[Command], list[tuple[str, str, str]]]:
    """Every documented script command, and ``(where, text, why)`` of those left out."""
    found: list[Command] = []
    left_out: list[tuple[str, str, str]] = []
    for doc in DOCS:
        env = {"s": "0"}  # a seed loop's variable, where the loop is in the prose
        for line, text in _spans(doc):
            assign = re.fullmatch(r"([A-Za-z_]\w*)=(\"[^\"]*\"|'[^']*'|\S*)", text)
            if assign:
                env[assign.group(1)] = " ".join(shlex.split(assign.group(2)))
                continue
            if "scripts/" not in text:
                continue
            where = f"{doc}:{line}"
            why = next((w for mark, w in UNCHECKED.items() if re.search(mark, text)), None)
            if why is not None:
                left_out.append((where, text, why))
                continue
            lexer = shlex.shlex(_fill(text, env), posix=True, punctuation_chars=";&|<>")
            lexer.whitespace_split = True
            simple: list[str] = []
            redirected = False  # after "> file" (or "2>&1"), no more arguments
            for token in [*lexer, ";"]:
                if token and set(token) <= set(";&|") and token != "&":
                    cmd = _argv(simple)
                    if cmd is not None:
                        found.append(Command(where, cmd[0], tuple(cmd[1]), text))
                    simple, redirected = [], False
                elif token and set(token) <= set("<>&"):
                    if simple and simple[-1].isdigit() and not redirected:
                        simple.pop()  # the "2" of "2>"
                    redirected = True
                elif not redirected:
                    simple.append(token)
    return found, left_out


COMMANDS, LEFT_OUT = documented_commands()
HYDRA_COMMANDS = [c for c in COMMANDS if c.script in HYDRA_SCRIPTS]
ARGPARSE_COMMANDS = [c for c in COMMANDS if c.script in ARGPARSE_SCRIPTS]


def _id(c: Command) -> str:
    return f"{c.where} {c.script} {' '.join(c.argv)}"[:160]


def test_the_docs_have_commands_of_every_hydra_script_and_each_names_a_script() -> None:
    assert {c.script for c in HYDRA_COMMANDS} == HYDRA_SCRIPTS
    assert len(HYDRA_COMMANDS) >= 150 and len(ARGPARSE_COMMANDS) >= 50
    assert {"pipeline", "prepare_data"} == QUOTING_SCRIPTS
    unknown = [f"{c.where}: {c.script}" for c in COMMANDS if c.script not in SOURCES]
    assert not unknown, f"documented commands of scripts that do not exist: {unknown}"
    neither = {c.script for c in COMMANDS} - HYDRA_SCRIPTS - ARGPARSE_SCRIPTS
    assert not neither, f"documented scripts this test cannot check: {neither}"


def test_every_unchecked_mark_is_still_in_the_docs() -> None:
    """The list of what cannot be checked stays short: each entry still matches a command."""
    marks = {mark for mark in UNCHECKED if any(re.search(mark, text) for _, text, _ in LEFT_OUT)}
    assert marks == set(UNCHECKED)


# ---- Hydra scripts: compose, as the script's @hydra.main would -------------------------------


def _jobs(c: Command) -> list[tuple[str, ...]]:
    """The overrides of each job the command runs, quoted as the script quotes them. A ``-m``
    sweep gives as many jobs as its longest list of values, job ``i`` taking each list's
    ``i``-th value (cyclically): every value is composed, not every combination."""
    args = [a for a in c.argv if a not in ("-m", "--multirun")]
    if c.script in QUOTING_SCRIPTS:
        args = hydra_argv(args)
    if len(args) == len(c.argv):  # one job (a sweep's comma list fails, as without -m)
        return [tuple(args)]
    choices = []
    for o in OverridesParser.create().parse_overrides(args):
        key = f"{o.get_key_element()}="
        if o.is_sweep_override():
            choices.append([key + v for v in o.sweep_string_iterator()])
        else:
            choices.append([key + o.get_value_element_as_str()])
    n = max((len(v) for v in choices), default=1)
    return [tuple(v[i % len(v)] for v in choices) for i in range(n)]


def _hydra_jobs() -> dict[tuple[str, tuple[str, ...]], list[str]]:
    """Each distinct ``(script, overrides)`` job, with where the docs show it."""
    jobs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for c in HYDRA_COMMANDS:
        for job in _jobs(c):
            jobs.setdefault((c.script, job), []).append(c.where)
    return jobs


HYDRA_JOBS = _hydra_jobs()


@pytest.mark.parametrize(
    ("script", "job"),
    list(HYDRA_JOBS),
    ids=[f"{s} {' '.join(j)} ({w[0]})"[:180] for (s, j), w in HYDRA_JOBS.items()],
)
def test_a_documented_hydra_command_composes_and_passes_the_settings_checks(
    script: str, job: tuple[str, ...], tmp_path: Path
) -> None:
    _check_job(script, job, tmp_path)


def _check_job(script: str, job: tuple[str, ...], tmp_path: Path) -> None:
    own = [a for a in job if not a.lstrip("+~").startswith("hydra")]
    if len(own) < len(job):  # the launcher and Hydra's own settings compose too
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            compose(script, overrides=list(job), return_hydra_config=True)
    cfg = compose_stage(script, own)
    assert isinstance(OmegaConf.to_container(cfg, resolve=True), dict)
    if script == "pipeline":
        _check_pipeline(cfg, tmp_path)
    elif script == "train":
        _check_train(cfg)


class Stop(Exception):
    """Raised where a script would start its work, after its settings checks."""


def _check_train(cfg: Any) -> None:
    """``scripts.train.run``'s checks before it reads the data: the seed, the agent's keys and
    the agent built (its constructor's own checks)."""
    import torch

    from scripts import train

    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "verify_folder", _stop)
        try:
            with pytest.raises(Stop):
                train.run(cfg)
        finally:  # what run() set for the work it did not start
            torch.set_num_threads(threads)
            torch.set_rng_state(rng)


def _check_pipeline(cfg: Any, tmp_path: Path) -> None:
    """``scripts.pipeline.check_settings`` (with the run folder moved into ``tmp_path``), then
    every stage's config, and each agent's training checks (:func:`_check_train`), which a real
    run reaches only after the data and the visitor models are made."""
    from scripts.pipeline import check_settings, stage_configs

    check_settings(_moved(cfg, tmp_path))
    stages = stage_configs(cfg)
    for name, stage in stages.items():
        OmegaConf.to_container(stage, resolve=True)
        if name.startswith("agents/"):
            _check_train(stage)
    assert stages["prepare_data"].out_dir == cfg.data_dir
    assert stages["prepare_data"].data == cfg.data
    assert stages["evaluate"].env == cfg.env
    assert list(stages["evaluate"].seeds) == list(cfg.eval_seeds)


def _moved(cfg: Any, tmp_path: Path) -> Any:
    moved = cfg.copy()
    with open_dict(moved):
        moved.out_dir = str(tmp_path / "run")
    return moved


def _stop(*args: Any, **kwargs: Any) -> None:
    raise Stop


# ---- argparse scripts: parse with the script's own parser, then stop --------------------------


@pytest.mark.parametrize("command", ARGPARSE_COMMANDS, ids=[_id(c) for c in ARGPARSE_COMMANDS])
def test_a_documented_argparse_command_parses(command: Command) -> None:
    _parse(command)


def _parse(command: Command) -> argparse.Namespace:
    """The script's ``main`` runs up to its ``parse_args``, which parses the documented
    arguments for real (an unknown flag, a bad choice or type, a missing required argument
    fail) and then stops it."""
    module = importlib.import_module(f"scripts.{command.script}")
    real = argparse.ArgumentParser.parse_args
    parsed: list[argparse.Namespace] = []

    def parse_then_stop(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None):
        parsed.append(real(self, args, namespace))
        raise Stop

    err = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err):
        mp.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        mp.setattr(sys, "argv", [f"scripts/{command.script}.py", *command.argv])
        try:
            module.main()
        except Stop:
            pass
        except SystemExit as exc:
            raise AssertionError(f"{command.where}: {command.text}\n{err.getvalue()}") from exc
    assert parsed, f"scripts/{command.script}.py's main() parsed no arguments"
    return parsed[0]


# ---- the checks refuse what a real run refuses -------------------------------------------------


def _command(script: str, *argv: str) -> Command:
    return Command("test", script, argv, " ".join(argv))


@pytest.mark.parametrize(
    "command",
    [
        _command("ope", "estimate", "--data-dir", "d", "--logs", "l", "--policy", "p", "--bogus"),
        _command("ope", "guess", "--data-dir", "d"),  # no such subcommand
        _command("ope", "log", "--data-dir", "d"),  # --out is required
        _command("ope", "log", "--data-dir", "d", "--out", "o", "--epsilon", "half"),
        _command("slate_study", "--data-dir", "d", "--slate-size", "five"),
        _command("compare_policies", "runs/a/eval"),  # RESULTS:POLICY
        _command("bench_env", "--dynamcs", "gru"),
    ],
    ids=lambda c: f"{c.script} {c.text}",
)
def test_a_bad_argparse_command_is_refused(command: Command) -> None:
    with pytest.raises(AssertionError, match="usage:"):
        _parse(command)


@pytest.mark.parametrize(
    ("command", "error"),
    [
        (_command("train", "agent=ppo", "+agent.teacher_model=markov"), "unknown agent key"),
        (_command("train", "agent=ppo", "seed=S"), "seed"),
        (_command("train", "data.path=a,b"), "Ambiguous value"),  # train.py does not quote
        (_command("train", "agent=ppo,dqn"), "Ambiguous value"),  # a sweep needs -m
        (_command("train", "-m", "agent=ppo,nope"), "nope"),  # every value of a sweep
        (_command("pipeline", "agents=[organic,nope]"), "nope"),
        (_command("pipeline", "++agent_overrides.ppo.total_timestep=5"), "total_timestep"),
        (_command("evaluate", "env.rewrad=page_value"), "rewrad"),
        (_command("train", "-m", "hydra/launcher=nope"), "nope"),
    ],
    ids=lambda v: v.text if isinstance(v, Command) else None,
)
def test_a_bad_hydra_command_is_refused(command: Command, error: str, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=re.escape(error)):  # whatever the script raises
        for job in _jobs(command):
            _check_job(command.script, job, tmp_path)


def test_the_values_only_the_quoting_scripts_quote_pass_there() -> None:
    assert _jobs(_command("pipeline", "data.path=a,b")) == [("data.path='a,b'",)]
    assert _jobs(_command("train", "data.path=a,b")) == [("data.path=a,b",)]


def test_each_documented_ope_estimate_reads_logs_a_documented_log_command_writes() -> None:
    """``ope.py estimate`` must read its logs with the env that wrote them (a page-level env
    cannot read group-level logs): where a doc estimates from a file, the same doc writes it
    with ``ope.py log`` from the same data and the same ``--env``."""
    ope = [(c, _parse(c)) for c in ARGPARSE_COMMANDS if c.script == "ope"]
    logs = {(c.where.split(":")[0], a.out): a for c, a in ope if a.command == "log"}
    estimates = [(c, a) for c, a in ope if a.command == "estimate"]
    assert estimates
    for c, a in estimates:
        made = logs.get((c.where.split(":")[0], a.logs))
        assert made is not None, f"{c.where}: no ope.py log command in this doc writes {a.logs}"
        assert (a.data_dir, a.env) == (made.data_dir, made.env), f"{c.where}: {c.text}"
