"""GitLab CI: ``.gitlab-ci.yml`` as data.

Stages ``test``, ``validate``, ``security`` (their jobs start together: ``needs: []``),
then ``deploy-staging`` and ``deploy-production``. Jobs run in the ``python:VERSION``
image; ``--gpu`` adds the runner tag (``tags: [LABEL]``) to test and validate. Deploy jobs
exist only for ``$CI_COMMIT_BRANCH == "main"``; production is ``when: manual`` (and
``allow_failure: false``, so the pipeline waits, blocked, for someone to press play).
``--admin-url-var``/``--token-var`` name CI/CD variables, best scoped to each environment
and masked; they are handed to the CLI as ``SPLITWAY_ADMIN_URL``/``SPLITWAY_TOKEN``.
"""

from __future__ import annotations

from typing import Any

from control.ci.options import MAIN_BRANCH
from control.ci.pipeline import Job, Pipeline
from control.ci.render import base_yaml
from control.ci.script import Renderer

REFS = {"COMMIT": "CI_COMMIT_SHA", "RUN_URL": "CI_PIPELINE_URL"}
DEPLOY_IF = f'$CI_COMMIT_BRANCH == "{MAIN_BRANCH}"'
#: pytest-cov's terminal total line, for GitLab's coverage badge.
COVERAGE_RE = r"/TOTAL.*\s(\d+(?:\.\d+)?)%/"


def _job(pipeline: Pipeline, job: Job, shell: Renderer) -> dict[str, Any]:
    o = pipeline.options
    out: dict[str, Any] = {"stage": job.id, "timeout": f"{job.timeout_min} minutes"}
    if job.gpu:
        out["tags"] = [o.gpu_label]
    out["needs"] = list(job.needs)
    if job.environment is not None:
        rule: dict[str, Any] = {"if": DEPLOY_IF}
        if job.manual:
            rule["when"] = "manual"
        out["rules"] = [rule]
        if job.manual:
            out["allow_failure"] = False
        out["environment"] = {"name": job.environment}
        out["resource_group"] = f"splitway-{o.model}-{job.environment}"
        variables = {"SPLITWAY_ADMIN_URL": o.admin_url_var, "SPLITWAY_TOKEN": o.token_var}
        mapped = {k: f"${v}" for k, v in variables.items() if k != v}
        if mapped:
            out["variables"] = mapped
    out["script"] = [shell.script(step.lines) for step in job.steps]
    if job.coverage_file is not None:
        out["coverage"] = COVERAGE_RE
        out["artifacts"] = {"when": "always", "reports": {"coverage_report": {
            "coverage_format": "cobertura", "path": job.coverage_file}}}
    return out


def build(pipeline: Pipeline) -> dict[str, Any]:
    """The ``.gitlab-ci.yml`` document."""
    shell = Renderer(REFS)
    doc = base_yaml("gitlab.yaml")
    doc["default"] = {"image": f"python:{pipeline.options.python}"}
    doc["stages"] = [job.id for job in pipeline.jobs]
    for job in pipeline.jobs:
        doc[job.id] = _job(pipeline, job, shell)
    return doc
