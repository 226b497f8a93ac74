"""GitHub Actions: ``.github/workflows/<model>.yml`` as data.

One job per pipeline job. ``--gpu`` runs test and validate on ``[self-hosted, LABEL]``.
Deploy jobs run only for ``push`` to ``refs/heads/main`` and name their GitHub
environment: its secrets (``--admin-url-var``/``--token-var``, set per environment) reach
the ``splitway`` CLI as ``SPLITWAY_ADMIN_URL``/``SPLITWAY_TOKEN``, and the ``production``
environment's required reviewers are the manual gate. Secrets and expressions appear only
in ``env:`` and ``with:`` values, never inside a ``run:`` script.
"""

from __future__ import annotations

from typing import Any

from control.ci.options import MAIN_BRANCH
from control.ci.pipeline import Job, Pipeline
from control.ci.render import base_yaml
from control.ci.script import Renderer

#: Logical variables -> what a GitHub ``run:`` step sees.
REFS = {"COMMIT": "GITHUB_SHA", "RUN_URL": "RUN_URL"}
RUN_URL = "${{ github.server_url }}/${{ github.repository }}/actions/runs/${{ github.run_id }}"
CHECKOUT = "actions/checkout@v4"
SETUP_PYTHON = "actions/setup-python@v5"
UPLOAD = "actions/upload-artifact@v4"
DEPLOY_IF = f"github.event_name == 'push' && github.ref == 'refs/heads/{MAIN_BRANCH}'"


def secret(name: str) -> str:
    """The expression reading secret ``name`` (validated ``[A-Z_][A-Z0-9_]*``)."""
    return "${{ secrets." + name + " }}"


def _runner(pipeline: Pipeline, job: Job) -> str | list[str]:
    if job.gpu:
        return ["self-hosted", pipeline.options.gpu_label]
    return "ubuntu-latest"


def _job(pipeline: Pipeline, job: Job, shell: Renderer) -> dict[str, Any]:
    o = pipeline.options
    out: dict[str, Any] = {"name": job.title, "runs-on": _runner(pipeline, job),
                           "timeout-minutes": job.timeout_min}
    if job.needs:
        out["needs"] = list(job.needs)
    if job.environment is not None:
        out["if"] = DEPLOY_IF
        out["environment"] = job.environment
        out["concurrency"] = {"group": f"splitway-{o.model}-{job.environment}",
                              "cancel-in-progress": False}
    steps: list[dict[str, Any]] = [
        {"uses": CHECKOUT},
        {"uses": SETUP_PYTHON, "with": {"python-version": o.python}},
    ]
    for step in job.steps:
        run: dict[str, Any] = {"name": step.name, "run": shell.script(step.lines)}
        if step.secrets:
            run["env"] = {
                "SPLITWAY_ADMIN_URL": secret(o.admin_url_var),
                "SPLITWAY_TOKEN": secret(o.token_var),
                "RUN_URL": RUN_URL,
            }
        steps.append(run)
    if job.coverage_file is not None:
        steps.append({"name": "coverage report", "if": "always()", "uses": UPLOAD,
                      "with": {"name": "coverage", "path": job.coverage_file,
                               "if-no-files-found": "warn"}})
    out["steps"] = steps
    return out


def build(pipeline: Pipeline) -> dict[str, Any]:
    """The workflow document."""
    shell = Renderer(REFS)
    doc: dict[str, Any] = {"name": f"{pipeline.options.model} model"}
    doc.update(base_yaml("github.yaml"))
    doc["jobs"] = {job.id: _job(pipeline, job, shell) for job in pipeline.jobs}
    return doc
