"""``splitway ci generate``: every platform and option combination parses, validates
against the platform's published JSON schema (check-jsonschema's vendored copies), keeps
production behind the platform's manual gate on ``main`` only, and refuses bad input
with exit 2 before anything reaches a shell."""

from __future__ import annotations

import itertools
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from control.ci import CiOptions, build_pipeline, deploy_lines, generate
from control.ci.render import Groovy, TemplateError, fill, groovy_string
from control.ci.script import Cmd, Renderer, Word
from proxy.cli import main

PLATFORMS = ("github", "gitlab", "jenkins", "azure")
SCHEMAS = {"github": "vendor.github-workflows", "gitlab": "vendor.gitlab-ci",
           "azure": "vendor.azure-pipelines"}
COMBOS: list[dict[str, Any]] = [
    {},
    {"gpu": True, "coverage": True},
    {"security": False, "environments": ("staging",)},
    {"python": "3.12", "gpu": True, "gpu_label": "a100", "admin_url_var": "PROD_URL",
     "token_var": "PROD_TOKEN", "route": "sentiment-live", "backend": "sentiment-v9"},
    {"artifact": "model/model.onnx", "validate_hook": "scripts/validate_model.py",
     "dataset_digest_file": "data/DIGEST", "requirements": None, "source": "src",
     "coverage": True, "approval_timeout_min": 5},
]
BAD_NAMES = ['a"b', "a'b", "x$(id)", "x`id`", "a b", "Sentiment", "-x", "../x", "x;rm",
             "a\nb", "", "x" * 65]


def load(text: str) -> Any:
    return yaml.safe_load(text)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = main(["ci", "generate", *args])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("platform", ["github", "gitlab", "azure"])
def test_every_combination_validates_against_the_published_schema(
        tmp_path: Path, platform: str) -> None:
    files = []
    for i, combo in enumerate(COMBOS):
        text = generate(CiOptions(platform=platform, model="sentiment", **combo))
        assert isinstance(load(text), dict)
        files.append(tmp_path / f"pipeline-{i}.yml")
        files[-1].write_text(text)
    checker = Path(sys.executable).parent / "check-jsonschema"
    result = subprocess.run([str(checker), "--builtin-schema", SCHEMAS[platform],
                             *map(str, files)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


# -- Jenkins: a declarative pipeline, read with a small Groovy block reader ------------------
def blocks(text: str, opener: str) -> list[str]:
    """The bodies of ``opener {...}`` blocks, braces inside string literals ignored."""
    out = []
    for m in re.finditer(re.escape(opener) + r"\s*\{", text):
        depth, i = 1, m.end()
        while depth:
            for quote in ("'''", "'", '"'):
                if text.startswith(quote, i):
                    i = text.index(quote, i + len(quote)) + len(quote)
                    while text[i - len(quote) - 1] == "\\" and quote != "'''":
                        i = text.index(quote, i) + len(quote)
                    break
            else:
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
        out.append(text[m.end():i - 1])
    return out


def stage(text: str, name: str) -> str:
    found = blocks(text, f"stage('{name}')")
    assert len(found) == 1, name
    return found[0]


@pytest.mark.parametrize("combo", COMBOS)
def test_jenkinsfile_is_declarative_and_production_waits_on_input_on_main(
        combo: dict[str, Any]) -> None:
    text = generate(CiOptions(platform="jenkins", model="sentiment", **combo))
    code = "\n".join(line for line in text.splitlines() if not line.startswith("//"))
    assert code.lstrip().startswith("pipeline {")
    (body,) = blocks(code, "pipeline")
    assert code.strip().endswith("}") and len(blocks(code, "stages")) >= 1
    assert re.search(r"^\s*agent none$", body, re.MULTILINE)
    staging = stage(code, "Deploy staging")
    assert "input" not in blocks(staging, "when")[0] and not blocks(staging, "input")
    for deploy in [staging] + ([stage(code, "Deploy production")]
                               if "production" in combo.get("environments", ("production",))
                               else []):
        (when,) = blocks(deploy, "when")
        assert "branch pattern: 'main', comparator: 'EQUALS'" in when
        assert "beforeInput true" in when and "beforeAgent true" in when
    if "production" in combo.get("environments", ("production",)):
        production = stage(code, "Deploy production")
        (gate,) = blocks(production, "input")
        assert "message 'Deploy sentiment to production?'" in gate
        assert production.index("when {") < production.index("input {") \
            < production.index("steps {")
        assert "--strategy canary" in production
    else:
        assert "Deploy production" not in code
    assert ("stage('Security')" in code) == combo.get("security", True)


def test_gpu_changes_the_runner_on_every_platform() -> None:
    def pair(platform: str) -> tuple[str, str]:
        return tuple(generate(CiOptions(platform=platform, model="m", gpu=gpu, gpu_label="h100"))
                     for gpu in (False, True))  # type: ignore[return-value]

    plain, gpu = (load(t) for t in pair("github"))
    assert plain["jobs"]["test"]["runs-on"] == "ubuntu-latest"
    assert gpu["jobs"]["test"]["runs-on"] == gpu["jobs"]["validate"]["runs-on"] \
        == ["self-hosted", "h100"]
    assert gpu["jobs"]["deploy-staging"]["runs-on"] == "ubuntu-latest"
    plain, gpu = (load(t) for t in pair("gitlab"))
    assert "tags" not in plain["test"] and gpu["test"]["tags"] == gpu["validate"]["tags"] \
        == ["h100"]
    plain, gpu = (load(t) for t in pair("azure"))
    assert plain["stages"][0]["jobs"][0]["pool"] == {"vmImage": "ubuntu-latest"}
    assert gpu["stages"][0]["jobs"][0]["pool"] == gpu["stages"][1]["jobs"][0]["pool"] \
        == {"name": "h100"}
    plain_text, gpu_text = pair("jenkins")
    for name in ("Test", "Validate"):
        (agent,) = blocks(stage(gpu_text, name), "agent")
        assert "label 'h100'" in agent and "args '--gpus all'" in agent
        (agent,) = blocks(stage(plain_text, name), "agent")
        assert "label" not in agent and "image 'python:3.11'" in agent
    (agent,) = blocks(stage(gpu_text, "Security"), "agent")
    assert "label" not in agent


def test_production_is_behind_each_platforms_manual_gate_on_main_only() -> None:
    gh = load(generate(CiOptions(platform="github", model="m")))["jobs"]
    for env in ("staging", "production"):
        job = gh[f"deploy-{env}"]
        assert job["environment"] == env
        assert job["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert gh["deploy-production"]["needs"] == ["deploy-staging"]
    assert gh["deploy-staging"]["needs"] == ["test", "validate", "security"]
    gl = load(generate(CiOptions(platform="gitlab", model="m")))
    assert gl["deploy-production"]["rules"] == [
        {"if": '$CI_COMMIT_BRANCH == "main"', "when": "manual"}]
    assert gl["deploy-production"]["allow_failure"] is False
    assert gl["deploy-staging"]["rules"] == [{"if": '$CI_COMMIT_BRANCH == "main"'}]
    assert all("rules" not in gl[j] for j in ("test", "validate", "security"))
    az = load(generate(CiOptions(platform="azure", model="m")))["stages"]
    prod = az[-1]
    assert prod["stage"] == "deploy_production" and prod["dependsOn"] == ["deploy_staging"]
    assert "eq(variables['Build.SourceBranch'], 'refs/heads/main')" in prod["condition"]
    assert prod["jobs"][0]["environment"] == "production" and "deployment" in prod["jobs"][0]


def test_environments_drive_the_deploy_jobs_and_secrets_are_named() -> None:
    o = CiOptions(platform="github", model="m", environments=("staging",),
                  admin_url_var="ML_URL", token_var="ML_TOKEN", security=False)
    jobs = load(generate(o))["jobs"]
    assert list(jobs) == ["test", "validate", "deploy-staging"]
    env = jobs["deploy-staging"]["steps"][-1]["env"]
    assert env["SPLITWAY_ADMIN_URL"] == "${{ secrets.ML_URL }}"
    assert env["SPLITWAY_TOKEN"] == "${{ secrets.ML_TOKEN }}"
    gl = load(generate(CiOptions(platform="gitlab", model="m", token_var="ML_TOKEN")))
    assert gl["deploy-staging"]["variables"] == {"SPLITWAY_TOKEN": "$ML_TOKEN"}
    az = load(generate(CiOptions(platform="azure", model="m")))["stages"]
    step = az[-1]["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"][-1]
    assert step["env"]["SPLITWAY_TOKEN"] == "$(SPLITWAY_TOKEN_PRODUCTION)"
    jf = generate(CiOptions(platform="jenkins", model="m"))
    assert "SPLITWAY_TOKEN = credentials('SPLITWAY_TOKEN_STAGING')" in jf


def test_the_test_stage_runs_ruff_mypy_and_pytest_with_coverage() -> None:
    jobs = load(generate(CiOptions(platform="github", model="m", coverage=True,
                                   source="src")))["jobs"]
    runs = [s.get("run", "") for s in jobs["test"]["steps"]]
    assert "ruff check src" in runs and "mypy src" in runs
    assert ("python -m pytest --cov=src --cov-report=xml:coverage.xml --cov-report=term"
            in runs)
    assert jobs["test"]["steps"][-1]["uses"].startswith("actions/upload-artifact@")
    security = [s.get("run", "") for s in jobs["security"]["steps"]]
    assert "bandit -r src -x ./.venv,./tests -ll" in security
    assert "pip-audit --skip-editable" in security
    validate = [s.get("run", "") for s in jobs["validate"]["steps"]]
    assert "splitway check --no-files -c splitway.yaml" in validate
    plain = load(generate(CiOptions(platform="github", model="m")))["jobs"]["test"]
    assert "python -m pytest" in [s.get("run") for s in plain["steps"]]


def test_deploy_scripts_are_valid_sh_and_the_same_on_every_platform() -> None:
    o: dict[str, Any] = {"model": "sentiment", "artifact": "model.bin",
                         "dataset_digest_file": "DIGEST"}
    scripts: dict[str, str] = {}
    gh = load(generate(CiOptions(platform="github", **o)))["jobs"]
    scripts["github"] = gh["deploy-staging"]["steps"][-1]["run"]
    gl = load(generate(CiOptions(platform="gitlab", **o)))
    scripts["gitlab"] = gl["deploy-staging"]["script"][-1]
    az = load(generate(CiOptions(platform="azure", **o)))["stages"]
    scripts["azure"] = az[-2]["jobs"][0]["strategy"]["runOnce"]["deploy"]["steps"][-1]["script"]
    names = {"github": ("GITHUB_SHA", "RUN_URL"), "gitlab": ("CI_COMMIT_SHA", "CI_PIPELINE_URL"),
             "azure": ("BUILD_SOURCEVERSION", "RUN_URL")}
    normal = {p: s.replace(names[p][0], "SHA").replace(names[p][1], "URL")
              for p, s in scripts.items()}
    assert normal["github"] == normal["gitlab"] == normal["azure"]
    shell = shutil.which("sh")
    assert shell is not None
    for script in scripts.values():
        assert subprocess.run([shell, "-n", "-c", script], timeout=10).returncode == 0


def test_refused_values_exit_2_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    for platform, name in itertools.product(PLATFORMS, BAD_NAMES):
        code, out, err = run_cli(capsys, "--platform", platform, "--model", name)
        assert code == 2, (platform, name)
        assert out == "" and "Traceback" not in err and "--model" in err
    for args in (["--python", "3.11; rm -rf /"], ["--python", "2.7"],
                 ["--admin-url-var", "lower"], ["--token-var", "A B"],
                 ["--token-var", "GITHUB_TOKEN"], ["--environments", "staging,prod"],
                 ["--environments", "production"], ["--environments", "production,staging"],
                 ["--environments", ""], ["--route", "a b"], ["--backend", "$(x)"],
                 ["--artifact", "../secret"], ["--artifact", "/etc/passwd"],
                 ["--validate-hook", "x$(id).py"], ["--config", "a`b`"],
                 ["--splitway-requirement", "splitway; rm"], ["--gpu-label", "x'y"],
                 ["--approval-timeout", "0"], ["--approval-timeout", "soon"],
                 ["--admin-url-var", "SAME", "--token-var", "SAME"], ["--platform", "travis"]):
        code, out, err = run_cli(capsys, "--platform", "github", "--model", "m", *args)
        assert code == 2, args
        assert out == "" and "Traceback" not in err
    proc = subprocess.run([sys.executable, "-m", "proxy", "ci", "generate", "--platform",
                           "jenkins", "--model", "m'; sh -c 'id"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "a model name is" in proc.stderr and "Traceback" not in proc.stderr


def test_shell_words_are_quoted_even_past_validation(tmp_path: Path) -> None:
    shell = Renderer({"COMMIT": "GITHUB_SHA"})
    evil = "x'; touch pwned; echo '$(touch p2)`touch p3` \\\" $HOME"
    line = shell.cmd(Cmd(("printf", "%s|", evil, Word(("v=", evil)))))
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=10,
                          cwd=tmp_path)
    assert done.stdout == f"{evil}|v={evil}|" and list(tmp_path.iterdir()) == []
    with pytest.raises(TemplateError):
        groovy_string("a\\b`c")
    with pytest.raises(TemplateError):
        fill("jenkins-input.groovy", {"message": "two\nlines"})
    with pytest.raises(TemplateError):
        fill("jenkins-input.groovy", {})
    with pytest.raises(TemplateError):
        fill("jenkins-input.groovy", {"message": Groovy("raw")})


def test_output_file_and_header_reproduce_the_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / ".github" / "workflows" / "sentiment.yml"
    args = ["--platform", "github", "--model", "sentiment", "--gpu", "--coverage",
            "--environments", "staging", "--requirements", "", "--route", "live",
            "--output", str(target)]
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and out == "" and "wrote" in err
    text = target.read_text()
    first = text.splitlines()[0]
    command = re.fullmatch(r"# Generated by: (.*) \(regenerate rather than edit; see "
                           r"docs/ci.md\)", first)
    assert command is not None
    again = shlex.split(command.group(1))
    assert again[:3] == ["splitway", "ci", "generate"]
    code, out, _ = run_cli(capsys, *again[3:])
    assert code == 0 and out == text


def test_pipeline_model_and_templates_ship_as_files() -> None:
    import control.ci_templates as templates

    root = Path(templates.__file__).parent
    for name in ("github.yaml", "gitlab.yaml", "azure.yaml", "Jenkinsfile.tmpl",
                 "jenkins-check.groovy", "jenkins-deploy.groovy", "jenkins-input.groovy"):
        assert (root / name).is_file(), name
    pipeline = build_pipeline(CiOptions(platform="gitlab", model="m"))
    assert [j.id for j in pipeline.jobs] == ["test", "validate", "security",
                                             "deploy-staging", "deploy-production"]
    assert pipeline.check_ids == ("test", "validate", "security")
    lines = deploy_lines(CiOptions(platform="gitlab", model="m"), "production")
    assert not any("register" in repr(line) for line in lines)
