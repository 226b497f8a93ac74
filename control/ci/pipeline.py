"""The pipeline, modelled once: jobs, their steps, each step a tuple of shell lines.

:func:`build_pipeline` turns validated :class:`~control.ci.options.CiOptions` into a
:class:`Pipeline`; the platform modules (:mod:`control.ci.github` and friends) only decide
how a job, a runner, a secret and a manual gate are spelled on their platform.

Jobs, in order: ``test`` (ruff, mypy, pytest), ``validate`` (``splitway check`` and the
user's validation hook), ``security`` (bandit, pip-audit) — these three run in parallel
on every push and pull request — then one ``deploy-ENV`` job per environment, only on a
push to ``main``, each after the previous one; production behind the platform's gate.

A deploy registers ``MODEL@VERSION`` where ``VERSION`` is the version file's content
plus ``+`` and the first 8 hex digits of the commit (SemVer build metadata), so every
commit is its own registry version; lineage carries the full commit, the artifact is
uploaded so the registry records its SHA-256. Each deploy step is idempotent up to the
rollout: a re-run skips the registration and the promotion request it already made.
"""

from __future__ import annotations

from dataclasses import dataclass

from control.ci.options import MAIN_BRANCH, POLL_INTERVAL_S, CiOptions
from control.ci.script import Assign, Cmd, Line, Ref, Unless, WaitFor, Word, python, splitway

COMMIT, RUN_URL = Ref("COMMIT"), Ref("RUN_URL")
VERSION, DATASET_DIGEST = Ref("VERSION"), Ref("DATASET_DIGEST")
COVERAGE_FILE = "coverage.xml"


@dataclass(frozen=True, slots=True)
class Step:
    """A named step: its lines run in one shell, stopping at the first failure."""

    name: str
    lines: tuple[Line, ...]
    secrets: bool = False  # needs the admin URL and token


@dataclass(frozen=True, slots=True)
class Job:
    """A job: ``id`` (``test``, ``deploy-staging``...), runner needs, steps."""

    id: str
    title: str
    steps: tuple[Step, ...]
    needs: tuple[str, ...] = ()
    gpu: bool = False
    environment: str | None = None
    manual: bool = False
    coverage_file: str | None = None
    timeout_min: int = 60


@dataclass(frozen=True, slots=True)
class Pipeline:
    """Every job of the pipeline, and the options it was built from."""

    options: CiOptions
    jobs: tuple[Job, ...]

    @property
    def check_ids(self) -> tuple[str, ...]:
        """The jobs a deploy waits for."""
        return tuple(j.id for j in self.jobs if j.environment is None)


def _pip(*packages: str) -> Cmd:
    return python("-m", "pip", "install", "--upgrade", *packages)


def _install(o: CiOptions, *packages: str) -> Step:
    lines: list[Line] = [_pip("pip")]
    if o.requirements is not None:
        lines.append(python("-m", "pip", "install", "-r", o.requirements))
    lines.append(_pip(*packages))
    return Step("install", tuple(lines))


def _test(o: CiOptions) -> Job:
    pytest: tuple[str, ...] = ("-m", "pytest")
    tools = ["ruff", "mypy", "pytest"]
    if o.coverage:
        tools.append("pytest-cov")
        pytest += (f"--cov={o.source}", f"--cov-report=xml:{COVERAGE_FILE}",
                   "--cov-report=term")
    return Job("test", "Test", (
        _install(o, *tools),
        Step("ruff", (Cmd(("ruff", "check", o.source)),)),
        Step("mypy", (Cmd(("mypy", o.source)),)),
        Step("pytest", (python(*pytest),)),
    ), gpu=o.gpu, coverage_file=COVERAGE_FILE if o.coverage else None)


def _validate(o: CiOptions) -> Job:
    steps = [_install(o, o.splitway_requirement),
             # --no-files: the TLS and tokens files the config names live on the hosts
             # that run the proxy, not in the repository (they are checked by `run`).
             Step("splitway check", (splitway("check", "--no-files", "-c", o.config),))]
    if o.validate_hook is not None:
        hook: tuple[str, ...] = (o.validate_hook,) + ((o.artifact,) if o.artifact else ())
        steps.append(Step("validate model", (python(*hook),)))
    return Job("validate", "Validate", tuple(steps), gpu=o.gpu)


def _security(o: CiOptions) -> Job:
    excluded = "./.venv,./tests"
    return Job("security", "Security", (
        _install(o, "bandit", "pip-audit"),
        Step("bandit", (Cmd(("bandit", "-r", o.source, "-x", excluded, "-ll")),)),
        Step("pip-audit", (Cmd(("pip-audit", "--skip-editable")),)),
    ))


def version_lines(o: CiOptions, *, digest: bool) -> tuple[Line, ...]:
    """``VERSION`` (and, with ``digest``, ``DATASET_DIGEST``) for a deploy script."""
    head = Cmd(("tr", "-d", "[:space:]"), stdin=o.version_file)
    short = Cmd(("printf", "%.8s", COMMIT))
    lines: list[Line] = [Cmd(("set", "-eu")), Assign(VERSION, Word((head, "+", short)))]
    if digest and o.dataset_digest_file is not None:
        read = Cmd(("tr", "-d", "[:space:]"), stdin=o.dataset_digest_file)
        lines.append(Assign(DATASET_DIGEST, Word((read,))))
    return tuple(lines)


def _register(o: CiOptions) -> Line:
    argv: list[str | Ref | Word] = [
        "models", "register", o.model, VERSION, "--backend", o.backend_name,
        "--commit", COMMIT, "--description", Word(("built by ", RUN_URL)), "--tag", "ci"]
    if o.artifact is not None:
        argv += ["--artifact-file", o.artifact]
    if o.dataset_digest_file is not None:
        argv += ["--dataset-digest", DATASET_DIGEST]
    return Unless(splitway("models", "show", o.model, VERSION), splitway(*argv))


def deploy_lines(o: CiOptions, environment: str) -> tuple[Line, ...]:
    """The deploy script for one environment (also what the e2e test runs)."""
    gate = splitway("models", "gate", o.model, VERSION, "--stage", environment)
    why = Word(("commit ", COMMIT, " passed test, validate and security in ", RUN_URL))
    request = splitway("promote", "request", o.model, VERSION, "--stage", environment,
                       "--justification", why)
    route = o.route_for(environment)
    start: list[str | Ref | Word] = ["rollout", "start", route, "--version",
                                     Word((f"{o.model}@", VERSION))]
    if environment == "production":
        start += ["--strategy", "canary"]
    lines: list[Line] = list(version_lines(o, digest=environment == "staging"))
    lines.append(Cmd(("echo", Word((f"deploying {o.model}@", VERSION,
                                    f" to {environment} (route {route})")))))
    if environment == "staging":
        lines.append(_register(o))
    lines += [
        Unless(gate, request),
        WaitFor(gate, o.poll_tries, POLL_INTERVAL_S,
                f"{o.model}: no {environment} approval within {o.approval_timeout_min} "
                "minutes; approve the promotion request and re-run this job"),
        splitway(*start),
        splitway("rollout", "status", route),
    ]
    return tuple(lines)


def _deploy(o: CiOptions, environment: str, needs: tuple[str, ...]) -> Job:
    return Job(f"deploy-{environment}", f"Deploy {environment}", (
        Step("install splitway", (_pip(o.splitway_requirement),)),
        Step(f"deploy to {environment}", deploy_lines(o, environment), secrets=True),
    ), needs=needs, environment=environment, manual=environment == "production",
        timeout_min=o.approval_timeout_min + 30)


def build_pipeline(o: CiOptions) -> Pipeline:
    """The whole pipeline for ``o``."""
    jobs = [_test(o), _validate(o)]
    if o.security:
        jobs.append(_security(o))
    needs = tuple(j.id for j in jobs)
    for environment in o.environments:
        job = _deploy(o, environment, needs)
        jobs.append(job)
        needs = (job.id,)
    return Pipeline(o, tuple(jobs))


__all__ = ["COMMIT", "MAIN_BRANCH", "RUN_URL", "Job", "Pipeline", "Step", "build_pipeline",
           "deploy_lines"]
