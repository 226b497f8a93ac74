"""Azure Pipelines: ``azure-pipelines.yml`` as data.

One stage per pipeline job (ids with ``_``: ``deploy_staging``). Test, validate and
security start together (``dependsOn: []``); each deploy stage depends on what comes
before it and runs only when ``Build.SourceBranch`` is ``refs/heads/main`` and the build
is not a pull request. Deploys are ``deployment`` jobs on an Azure DevOps environment of
the same name: the approvals and checks configured on the ``production`` environment are
the manual gate. ``--gpu`` runs test and validate on the self-hosted agent pool named by
``--gpu-label``. Secrets are pipeline (or variable group) variables named
``VAR_STAGING``/``VAR_PRODUCTION`` (``--admin-url-var``/``--token-var`` plus the
environment); Azure does not expose secret variables to scripts by itself, so each deploy
step maps them into ``SPLITWAY_ADMIN_URL``/``SPLITWAY_TOKEN`` with ``env:``.
"""

from __future__ import annotations

from typing import Any

from control.ci.options import MAIN_BRANCH
from control.ci.pipeline import Job, Pipeline, Step
from control.ci.render import base_yaml
from control.ci.script import Renderer

REFS = {"COMMIT": "BUILD_SOURCEVERSION", "RUN_URL": "RUN_URL"}
RUN_URL = "$(System.CollectionUri)$(System.TeamProject)/_build/results?buildId=$(Build.BuildId)"
DEPLOY_CONDITION = (f"and(succeeded(), eq(variables['Build.SourceBranch'], "
                    f"'refs/heads/{MAIN_BRANCH}'), ne(variables['Build.Reason'], 'PullRequest'))")


def stage_id(job: Job) -> str:
    """Azure identifiers take letters, digits and ``_``."""
    return job.id.replace("-", "_")


def secret_name(var: str, environment: str) -> str:
    """The per-environment variable holding ``var``: ``SPLITWAY_TOKEN_PRODUCTION``."""
    return f"{var}_{environment.upper()}"


def _steps(pipeline: Pipeline, job: Job, shell: Renderer) -> list[dict[str, Any]]:
    o = pipeline.options
    steps: list[dict[str, Any]] = []
    if job.environment is not None:
        steps.append({"checkout": "self"})  # deployment jobs do not check out by default
    steps.append({"task": "UsePythonVersion@0", "displayName": f"Python {o.python}",
                  "inputs": {"versionSpec": o.python}})

    def script(step: Step) -> dict[str, Any]:
        out: dict[str, Any] = {"script": shell.script(step.lines), "displayName": step.name}
        if job.environment is not None and step.secrets:
            out["env"] = {
                "SPLITWAY_ADMIN_URL": f"$({secret_name(o.admin_url_var, job.environment)})",
                "SPLITWAY_TOKEN": f"$({secret_name(o.token_var, job.environment)})",
                "RUN_URL": RUN_URL,
            }
        return out

    steps += [script(step) for step in job.steps]
    if job.coverage_file is not None:
        steps.append({"publish": job.coverage_file, "artifact": "coverage",
                      "condition": "always()", "displayName": "coverage report"})
    return steps


def _pool(pipeline: Pipeline, job: Job) -> dict[str, Any]:
    if job.gpu:
        return {"name": pipeline.options.gpu_label}
    return {"vmImage": "ubuntu-latest"}


def _stage(pipeline: Pipeline, job: Job, shell: Renderer) -> dict[str, Any]:
    stage: dict[str, Any] = {"stage": stage_id(job), "displayName": job.title,
                             "dependsOn": [stage_id(j) for j in pipeline.jobs
                                           if j.id in job.needs]}
    steps = _steps(pipeline, job, shell)
    if job.environment is None:
        stage["jobs"] = [{"job": stage_id(job), "pool": _pool(pipeline, job),
                          "timeoutInMinutes": str(job.timeout_min), "steps": steps}]
        return stage
    stage["condition"] = DEPLOY_CONDITION
    stage["jobs"] = [{
        "deployment": stage_id(job), "displayName": job.title, "pool": _pool(pipeline, job),
        "environment": job.environment, "timeoutInMinutes": str(job.timeout_min),
        "strategy": {"runOnce": {"deploy": {"steps": steps}}},
    }]
    return stage


def build(pipeline: Pipeline) -> dict[str, Any]:
    """The ``azure-pipelines.yml`` document."""
    shell = Renderer(REFS)
    doc = base_yaml("azure.yaml")
    doc["stages"] = [_stage(pipeline, job, shell) for job in pipeline.jobs]
    return doc
