"""Jenkins: a declarative ``Jenkinsfile`` filled from the templates in
``control/ci_templates`` (``Jenkinsfile.tmpl``, ``jenkins-check.groovy``,
``jenkins-deploy.groovy``, ``jenkins-input.groovy``).

``agent none`` at the top, so no executor is held while production waits on ``input``;
each stage runs in a ``python:VERSION`` Docker agent (Docker Pipeline plugin), with
``--gpu``: ``label 'LABEL'`` and ``args '--gpus all'`` for test and validate. Each stage
works in a virtualenv (``.venv`` in its workspace: the container does not run as root).
Deploy stages run only when ``BRANCH_NAME`` equals ``main`` (a multibranch job);
``when`` is judged before ``input`` (``beforeInput true``), so other branches never ask.
Credentials are *Secret text* credentials with the ids ``VAR_STAGING``/``VAR_PRODUCTION``.
Every shell script is a Groovy ``'''`` string: no Groovy interpolation, and its values
are checked by :func:`control.ci.render.groovy_string`.
"""

from __future__ import annotations

from control.ci.azure import secret_name
from control.ci.options import MAIN_BRANCH
from control.ci.pipeline import Job, Pipeline, Step
from control.ci.render import Groovy, fill, groovy_string, join
from control.ci.script import Renderer

REFS = {"COMMIT": "GIT_COMMIT", "RUN_URL": "BUILD_URL"}
VENV = "python -m venv .venv"
ACTIVATE = ". .venv/bin/activate"
#: How long production may wait on its ``input`` before the build is aborted.
INPUT_WAIT_MIN = 7 * 24 * 60


def _sh(step: Step, shell: Renderer) -> Groovy:
    script = groovy_string(f"{ACTIVATE}\n{shell.script(step.lines)}")
    return Groovy(f"sh(label: '{groovy_string(step.name)}', script: '''{script}\n''')\n")


def _steps(job: Job, shell: Renderer) -> Groovy:
    venv = Groovy(f"sh(label: 'virtualenv', script: '{VENV}')\n")
    return join([venv, *(_sh(step, shell) for step in job.steps)])


def _check(pipeline: Pipeline, job: Job, shell: Renderer) -> Groovy:
    o = pipeline.options
    extra = ""
    if job.gpu:
        extra = f"label '{groovy_string(o.gpu_label)}'\nargs '--gpus all'"
    post = ""
    if job.coverage_file is not None:
        archive = (f"archiveArtifacts(artifacts: '{groovy_string(job.coverage_file)}', "
                   "allowEmptyArchive: true)")
        post = "post {\n    always {\n        " + archive + "\n    }\n}"
    return fill("jenkins-check.groovy", {
        "title": job.title, "image": f"python:{o.python}", "agent_extra": Groovy(extra),
        "steps": _steps(job, shell), "post": Groovy(post)})


def _deploy(pipeline: Pipeline, job: Job, shell: Renderer) -> Groovy:
    o = pipeline.options
    assert job.environment is not None
    gate = Groovy("")
    stage_timeout = job.timeout_min
    if job.manual:
        gate = fill("jenkins-input.groovy", {
            "message": f"Deploy {o.model} to {job.environment}?"})
        stage_timeout += INPUT_WAIT_MIN
    return fill("jenkins-deploy.groovy", {
        "title": job.title, "branch": MAIN_BRANCH, "input": gate,
        "image": f"python:{o.python}",
        "admin_url_credential": secret_name(o.admin_url_var, job.environment),
        "token_credential": secret_name(o.token_var, job.environment),
        "stage_timeout": str(stage_timeout), "timeout": str(job.timeout_min),
        "steps": _steps(job, shell)})


def build(pipeline: Pipeline, header: str) -> str:
    """The Jenkinsfile text."""
    shell = Renderer(REFS)
    checks = [_check(pipeline, j, shell) for j in pipeline.jobs if j.environment is None]
    deploys = [_deploy(pipeline, j, shell) for j in pipeline.jobs if j.environment is not None]
    return fill("Jenkinsfile.tmpl", {"header": header, "checks": join(checks),
                                     "deploys": join(deploys)})
