"""Config validation: malformed files through the real ``splitway check``, the rest in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.config import HostPort, Settings, effective_weights, parse_listen
from proxy.config_load import interpolate, load_settings, load_settings_file, resolve_relative
from proxy.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """\
version: 1
backends:
  a: {endpoints: [http://127.0.0.1:9001]}
  b: {endpoints: [http://127.0.0.1:9002]}
routes:
  - name: r
    variants: {stable: a, canary: b}
    split: {weights: {stable: 90, canary: 10}}
"""

# contract §2 verbatim, plus the approval policy of §8
FULL = """\
version: 1
listen: 127.0.0.1:8080            # data plane; also a list, and tls: {cert, key}
admin:
  listen: 127.0.0.1:9901          # admin API, /metrics, /healthz, /readyz
  tokens_file: tokens.yaml        # see §8; without it the admin API is read-only
state: sqlite:///splitway-state.db   # embedded default; postgresql://user@host:5432/db for a fleet
notifications:
  webhooks: [http://127.0.0.1:9999/hook]   # rollout/approval events, JSON POST

backends:                         # a backend = one model version's serving endpoints
  sentiment-v1:
    endpoints: [http://127.0.0.1:9001]     # several: load-balanced, outliers ejected
    timeout_s: 30                 # whole upstream exchange
    connect_timeout_s: 2
    max_connections: 256
    health_check: {path: /v2/health/ready, interval_s: 5}   # optional, active
  sentiment-v2:
    endpoints: [http://127.0.0.1:9002]
  sentiment-v3:
    endpoints: [http://127.0.0.1:9003]

routes:
  - name: sentiment
    match: {path_prefix: /v1/models/sentiment}     # also host:, header:, method:
    variants: {stable: sentiment-v1, canary: sentiment-v2}   # variant name -> backend
    split:
      strategy: hash              # random | hash
      hash_on: header:x-user-id   # header:NAME | cookie:NAME | query:NAME | client_ip
      weights: {stable: 90, canary: 10}
      allow_pin: true             # honour x-splitway-variant on the request
    shadow:
      backend: sentiment-v3
      percent: 100                # of this route's requests
      max_in_flight: 64           # beyond it mirrored requests are dropped and counted
      compare: {json_path: predictions, rel_tol: 1.0e-3, abs_tol: 1.0e-6}
    rollout:                      # policy used when a rollout runs on this route
      strategy: canary            # canary | blue_green | rolling
      baseline: stable
      candidate: canary
      steps: [5, 10, 25, 50, 100] # candidate weight per step, percent
      step_interval_s: 60
      analysis:
        min_requests: 1000        # candidate requests in the step before judging
        max_error_rate: 0.01
        max_latency_ratio: 1.5    # candidate quantile / baseline quantile, same window
        latency_quantile: 0.99
        failed_checks_to_rollback: 1
    experiment:                   # an A/B test on this route's split
      name: sentiment-ab
      control: stable
      success: {status_below: 500}  # or {json_field: "ok"} or {header: "x-outcome", equals: "1"}

approvals:
  staging: {required: 1}
  production: {required: 2}     # production only from staging
"""

TWO_ROUTES = MINIMAL + """\
  - name: r
    variants: {stable: a}
    split: {weights: {stable: 1}}
"""


def check(tmp_path: Path, text: str | bytes, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    """Run the real ``python -m proxy check -c FILE``."""
    path = tmp_path / "splitway.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    base = {k: v for k, v in os.environ.items() if not k.startswith("SPLITWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check", "-c", str(path)],
        cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60,
    )


def problem_lines(result: subprocess.CompletedProcess[str], tmp_path: Path) -> list[str]:
    """stderr's lines, without the ``FILE: `` prefix the command may put before each."""
    prefix = f"{tmp_path / 'splitway.yaml'}: "
    return [line.removeprefix(prefix) for line in result.stderr.splitlines()]


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problem lines ``load_settings`` reports for ``text``."""
    with pytest.raises(ConfigError) as info:
        load_settings(text, env)
    return [str(p) for p in info.value.problems]


# --- through the real command -------------------------------------------------------

MALFORMED: list[tuple[str, str, str]] = [
    ("weight-not-a-variant",
     MINIMAL.replace("canary: 10}", "canary: 10, canery: 5}"), "routes[0].split.weights.canery"),
    ("negative-weight", MINIMAL.replace("canary: 10", "canary: -1"),
     "routes[0].split.weights.canary"),
    ("all-zero-weights", MINIMAL.replace("stable: 90, canary: 10", "stable: 0, canary: 0"),
     "routes[0].split.weights"),
    ("bad-url", MINIMAL.replace("http://127.0.0.1:9001", "ftp://127.0.0.1"),
     "backends.a.endpoints[0]"),
    ("bad-url-port", MINIMAL.replace("http://127.0.0.1:9001", "http://127.0.0.1:99999"),
     "backends.a.endpoints[0]"),
    ("duplicate-route-name", TWO_ROUTES, "routes[1].name"),
    ("bad-listen", MINIMAL + "listen: localhost\n", "listen"),
    ("bad-listen-in-list", MINIMAL + "listen: [127.0.0.1:8080, nope]\n", "listen[1]"),
    ("bad-admin-listen", MINIMAL + "admin: {listen: '127.0.0.1:http'}\n", "admin.listen"),
    ("bad-hash-on", MINIMAL.replace("split: {", "split: {strategy: hash, hash_on: user, "),
     "routes[0].split.hash_on"),
    ("hash-without-hash-on", MINIMAL.replace("split: {", "split: {strategy: hash, "),
     "routes[0].split.hash_on"),
    ("unknown-key", MINIMAL.replace("    split:", "    splitt: {}\n    split:"),
     "routes[0].splitt"),
    ("unknown-top-level-key", MINIMAL + "listen_on: 127.0.0.1:1\n", "listen_on"),
    ("variant-undefined-backend", MINIMAL.replace("canary: b}", "canary: nope}"),
     "routes[0].variants.canary"),
    ("shadow-undefined-backend",
     MINIMAL.replace("    split:", "    shadow: {backend: zz}\n    split:"),
     "routes[0].shadow.backend"),
    ("rollout-candidate-not-variant",
     MINIMAL.replace("    split:", "    rollout: {baseline: stable, candidate: b}\n    split:"),
     "routes[0].rollout.candidate"),
    ("version-2", MINIMAL.replace("version: 1", "version: 2"), "version"),
    ("version-missing", MINIMAL.replace("version: 1\n", ""), "version"),
    ("empty-file", "", "(top level)"),
    ("comments-only", "# nothing here\n", "(top level)"),
    ("list-at-top-level", "- version: 1\n", "(top level)"),
    ("missing-env-var",
     MINIMAL.replace("http://127.0.0.1:9001", "http://127.0.0.1:${SPLITWAY_T_PORT}"),
     "line 3, column 36"),
    ("yaml-syntax", MINIMAL.replace("split: {weights", "split: {weights:: {"), "line 8, column "),
    ("duplicate-yaml-key", MINIMAL.replace("  b: {", "  a: {"), "line 4, column 3"),
    ("endpoints-not-a-list",
     MINIMAL.replace("[http://127.0.0.1:9001]", "http://127.0.0.1:9001"), "backends.a.endpoints"),
    ("no-endpoints", MINIMAL.replace("[http://127.0.0.1:9001]", "[]"), "backends.a.endpoints"),
    ("no-routes", MINIMAL.split("routes:")[0] + "routes: []\n", "routes"),
    ("routes-not-a-list", MINIMAL.replace("  - name: r", "  x:\n    name: r"), "routes"),
    ("weight-is-bool", MINIMAL.replace("canary: 10", "canary: yes"),
     "routes[0].split.weights.canary"),
    ("bad-strategy", MINIMAL.replace("split: {", "split: {strategy: sticky, "),
     "routes[0].split.strategy"),
    ("percent-over-100",
     MINIMAL.replace("    split:", "    shadow: {backend: a, percent: 101}\n    split:"),
     "routes[0].shadow.percent"),
    ("bad-approval-stage", MINIMAL + "approvals: {prod: {required: 2}}\n", "approvals.prod"),
    ("bad-state-url", MINIMAL + "state: mysql://db\n", "state"),
    ("tokens-file-not-a-path", MINIMAL + "admin: {tokens_file: [a]}\n", "admin.tokens_file"),
    ("bad-route-name", MINIMAL.replace("name: r", "name: 'R 1'"), "routes[0].name"),
    ("backend-not-a-mapping", MINIMAL.replace("  b: {endpoints: [http://127.0.0.1:9002]}", "  b:"),
     "backends.b"),
]


@pytest.mark.parametrize(("text", "path"), [(t, p) for _, t, p in MALFORMED],
                         ids=[i for i, _, _ in MALFORMED])
def test_check_rejects_malformed_config(tmp_path: Path, text: str, path: str) -> None:
    result = check(tmp_path, text)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = problem_lines(result, tmp_path)
    assert lines, "no problem printed"
    assert any(line.startswith(path) for line in lines), lines
    # one line per problem, each "PATH: message"
    assert all(": " in line and not line.startswith(" ") for line in lines), lines
    # no pydantic internals in the paths
    for noise in ("function-", "constrained-str", "tuple[", "union[", "[key]", "Value error"):
        assert noise not in result.stderr


def test_check_names_specific_problems(tmp_path: Path) -> None:
    text = MINIMAL.replace("stable: 90, canary: 10", "stable: 0, canary: 0")
    assert problem_lines(check(tmp_path, text), tmp_path) == [
        "routes[0].split.weights: give at least one variant a positive weight"]
    text = MINIMAL.replace("version: 1", "version: 2")
    assert "unsupported config version 2" in check(tmp_path, text).stderr
    text = MINIMAL.replace("    split:", "    splitt: {}\n    split:")
    assert "did you mean 'split'" in check(tmp_path, text).stderr
    text = MINIMAL.replace("http://127.0.0.1:9001", "http://127.0.0.1:${SECRET_PORT}")
    err = check(tmp_path, text).stderr
    assert "SECRET_PORT" in err and "not set" in err
    err = check(tmp_path, MINIMAL.replace("  b: {", "  a: {")).stderr
    assert "duplicate key 'a' (first on line 3)" in err


def test_check_reports_every_problem_on_its_own_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("canary: 10", "canary: -1").replace(
        "http://127.0.0.1:9001", "nope").replace("    split:", "    splitt: 1\n    split:")
    result = check(tmp_path, text)
    assert result.returncode == 2
    lines = problem_lines(result, tmp_path)
    assert sorted(line.split(":")[0] for line in lines) == [
        "backends.a.endpoints[0]", "routes[0].split.weights.canary", "routes[0].splitt"]


def test_check_unreadable_files(tmp_path: Path) -> None:
    result = check(tmp_path, b"version: 1\nname: \xff\xfe\n")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "not UTF-8" in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "proxy", "check", "-c", str(tmp_path / "nope.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "nope.yaml" in missing.stderr


@pytest.mark.parametrize("text", [MINIMAL, FULL], ids=["minimal", "contract-example"])
def test_check_accepts_valid_config(tmp_path: Path, text: str) -> None:
    (tmp_path / "tokens.yaml").write_text("tokens: []\n")  # the example names one; check reads it
    result = check(tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip().endswith(": ok")


def test_check_interpolates_environment(tmp_path: Path) -> None:
    text = (MINIMAL.replace("http://127.0.0.1:9001", "http://127.0.0.1:${SPW_PORT}")
            .replace("canary: 10", "canary: ${SPW_W:-10}"))
    assert check(tmp_path, text, {"SPW_PORT": "9100"}).returncode == 0
    bad = check(tmp_path, text, {"SPW_PORT": "9100", "SPW_W": "-3"})
    assert bad.returncode == 2
    assert problem_lines(bad, tmp_path)[0].startswith("routes[0].split.weights.canary: ")
    missing = check(tmp_path, text)
    assert missing.returncode == 2 and "SPW_PORT" in missing.stderr


# --- in-process ---------------------------------------------------------------------


def test_full_example_values() -> None:
    s = load_settings(FULL)
    assert isinstance(s, Settings)
    assert s.listen_addresses == (HostPort("127.0.0.1", 8080),)
    assert s.admin.tokens_file == Path("tokens.yaml")
    assert s.notifications.webhooks == ("http://127.0.0.1:9999/hook",)
    route = s.route("sentiment")
    assert route.split.hash_on == "header:x-user-id" and route.split.allow_pin
    assert route.shadow is not None and route.shadow.compare.json_path == "predictions"
    assert route.rollout is not None and route.rollout.steps == (5, 10, 25, 50, 100)
    assert route.experiment is not None and route.experiment.success.status_below == 500
    assert s.approvals["production"].required == 2
    assert s.backends["sentiment-v1"].health_check is not None
    with pytest.raises(KeyError):
        s.route("nope")


def test_settings_are_frozen() -> None:
    s = load_settings(MINIMAL)
    with pytest.raises(ValueError, match="frozen"):
        s.state = "x"  # type: ignore[misc]


def test_defaults_and_effective_weights() -> None:
    s = load_settings(MINIMAL.replace("stable: 90, canary: 10", "stable: 100"))
    assert effective_weights(s.routes[0]) == {"stable": 100.0, "canary": 0.0}
    assert s.admin.tokens_file is None
    assert {k: v.required for k, v in s.approvals.items()} == {"staging": 1, "production": 2}


def test_approvals_keep_the_default_of_a_stage_left_out() -> None:
    s = load_settings(MINIMAL + "approvals: {production: {required: 3}}\n")
    assert {k: v.required for k, v in s.approvals.items()} == {"staging": 1, "production": 3}


def test_listen_forms() -> None:
    s = load_settings(MINIMAL + "listen: ['127.0.0.1:8080', '[::1]:8081']\n")
    assert s.listen_addresses == (HostPort("127.0.0.1", 8080), HostPort("::1", 8081))
    assert str(s.listen_addresses[1]) == "[::1]:8081"
    assert problems(MINIMAL + "listen: 8080\n") == [
        "listen: should be host:port or a non-empty list of host:port"]
    assert problems(MINIMAL + "listen: []\n")[0].startswith("listen: ")
    assert problems(MINIMAL + "listen: [a:1, a:1]\n") == ["listen[1]: 'a:1' is listed twice"]
    assert problems(MINIMAL + "listen: 127.0.0.1:9901\n") == [
        "admin.listen: '127.0.0.1:9901' is also a data-plane listen address"]


@pytest.mark.parametrize("value", ["nope", ":80", "host:", "host:65536", "::1:80", "[zz]:80",
                                   "[::1]80", "a b:80", "h:８０"])
def test_parse_listen_rejects(value: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_listen(value)


def test_parse_listen_accepts() -> None:
    assert parse_listen("0.0.0.0:0") == HostPort("0.0.0.0", 0)
    assert parse_listen(" localhost:80 ") == HostPort("localhost", 80)
    assert parse_listen("[::]:443") == HostPort("::", 443)


def test_interpolation_rules() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert interpolate("${A} ${B:-d} ${EMPTY:-e} ${A:-z}", env) == "x d e x"
    assert interpolate("$${A} and $${NOPE}", env) == "${A} and ${NOPE}"
    assert interpolate("# ${NOPE}\n  # ${NOPE2}\nk: v\n", env) == "# ${NOPE}\n  # ${NOPE2}\nk: v\n"
    assert interpolate("${EMPTY}", env) == ""
    with pytest.raises(ConfigError) as info:
        interpolate("a: 1\nb: ${NOPE} ${NOPE} ${ALSO}\n", env)
    assert [p.path for p in info.value.problems] == ["line 2, column 4", "line 2, column 20"]
    assert "NOPE" in info.value.problems[0].message


def test_interpolation_inside_flow_mapping() -> None:
    text = MINIMAL.replace("stable: 90, canary: 10", "stable: ${W1}, canary: ${W2:-0}")
    s = load_settings(text, {"W1": "7"})
    assert s.routes[0].split.weights == {"stable": 7.0, "canary": 0.0}


def test_numbers_coerced_to_strings_but_bools_not_to_numbers() -> None:
    text = MINIMAL.replace(
        "    split:",
        "    match: {header: {x-tenant: 7}, method: [get, Post]}\n    split:")
    match = load_settings(text).routes[0].match
    assert match.header == {"x-tenant": "7"} and match.method == ("GET", "POST")
    assert problems(MINIMAL + "grace_period_s: true\n") == [
        "grace_period_s: should be a number, not true/false"]
    assert problems(MINIMAL.replace("version: 1", "version: true"))[0].startswith("version: ")
    assert problems(MINIMAL.replace("    split:", "    match: {method: 'G T'}\n    split:")) == [
        "routes[0].match.method: 'G T' is not an HTTP method"]


def test_paths_keep_user_keys_that_look_like_type_names() -> None:
    # The old filter dropped any path part named "str"; a variant may well be called that.
    text = MINIMAL.replace("stable", "str").replace("canary: 10", "canary: -1").replace(
        "str: 90", "str: -2")
    assert problems(text) == [
        "routes[0].split.weights.str: should be greater than or equal to 0",
        "routes[0].split.weights.canary: should be greater than or equal to 0",
    ]


def test_unknown_key_lists_allowed_keys() -> None:
    (line,) = problems(MINIMAL.replace("  a: {endpoints", "  a: {zzz: 1, endpoints"))
    assert line.startswith("backends.a.zzz: unknown key 'zzz'; expected one of: endpoints,")


def test_cross_checks() -> None:
    route = "    rollout: {baseline: stable, candidate: stable, steps: [10, 5]}\n    split:"
    assert problems(MINIMAL.replace("    split:", route)) == [
        "routes[0].rollout.steps: steps must increase"]
    route = "    rollout: {baseline: stable, candidate: stable}\n    split:"
    assert problems(MINIMAL.replace("    split:", route)) == [
        "routes[0].rollout.candidate: candidate and baseline must differ"]
    exp = "    experiment: {name: e, control: nope, success: {}}\n    split:"
    assert problems(MINIMAL.replace("    split:", exp)) == [
        "routes[0].experiment.control: 'nope' is not a variant (known: stable, canary)",
        "routes[0].experiment.success: give exactly one of status_below, json_field, header",
    ]
    exp = "    experiment: {name: e, control: stable, success: {status_below: 500, equals: 1}}"
    assert problems(MINIMAL.replace("    split:", exp + "\n    split:")) == [
        "routes[0].experiment.success.equals: equals goes with header or json_field"]
    exp = "    experiment: {name: e, control: stable}\n    split:"
    two = TWO_ROUTES.replace("    split:", exp).replace("name: r\n    variants: {stable: a}",
                                                       "name: r2\n    variants: {stable: a}")
    assert problems(two) == [
        "routes[1].experiment.name: experiment 'e' is already defined in routes[0]"]
    assert problems(MINIMAL.replace("  b: {", "  B_1: {").replace("canary: b", "canary: B_1")) == [
        "backends.B_1: backend names are [a-z0-9][a-z0-9._-]{0,63}"]
    assert problems(MINIMAL.replace("split: {", "split: {hash_on: client_ip, ")) == [
        "routes[0].split.hash_on: hash_on is used only with strategy: hash"]
    assert problems(MINIMAL.replace("{stable: 90, canary: 10}", "{}")) == [
        "routes[0].split.weights: give at least one variant a positive weight"]


def test_yaml_errors_name_line_and_column() -> None:
    (line,) = problems("version: 1\nbackends: {a: [1, 2\n")
    assert line.startswith("line 3, column 1: YAML syntax error: ")
    assert "started on line 2" in line
    (line,) = problems("a: !!python/object:os.system x\n")
    assert line.startswith("line 1, column 4: YAML syntax error: ")


def test_duplicate_keys_but_merge_keys_may_override() -> None:
    (line,) = problems(MINIMAL + "version: 1\n")
    assert line == "line 9, column 1: duplicate key 'version' (first on line 1)"
    merged = MINIMAL.replace(
        "  a: {endpoints: [http://127.0.0.1:9001]}",
        "  a: &base {endpoints: [http://127.0.0.1:9001], timeout_s: 3}",
    ).replace("  b: {endpoints: [http://127.0.0.1:9002]}",
              "  b: {<<: *base, endpoints: [http://127.0.0.1:9002]}")
    s = load_settings(merged)
    assert s.backends["b"].timeout_s == 3 and s.backends["b"].endpoints == (
        "http://127.0.0.1:9002",)


def test_problem_messages_are_single_lines() -> None:
    text = (MINIMAL + "tls: {cert: a}\nnotifications: {webhooks: ['http://x/ y']}\n"
            "admin: {listen: '[zz]:1'}\n")
    lines = problems(text)
    assert lines == [
        "tls.key: required, but missing",
        "admin.listen: 'zz' in '[zz]:1' is not an IPv6 address",
        "notifications.webhooks[0]: 'http://x/ y' contains white space",
    ]
    assert all("\n" not in line for line in lines)


def test_load_settings_file_resolves_relative_paths(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "splitway.yaml"
    conf.parent.mkdir()
    conf.write_text(MINIMAL + "admin: {tokens_file: tokens.yaml}\n"
                    "tls: {cert: /abs/cert.pem, key: tls/key.pem}\n", encoding="utf-8")
    s = load_settings_file(conf)
    assert s.admin.tokens_file == conf.parent / "tokens.yaml"
    assert s.tls is not None
    assert s.tls.cert == Path("/abs/cert.pem") and s.tls.key == conf.parent / "tls" / "key.pem"


def test_resolve_relative_leaves_settings_without_paths_alone(tmp_path: Path) -> None:
    s = load_settings(MINIMAL)
    assert resolve_relative(s, tmp_path) is s
    home = resolve_relative(load_settings(MINIMAL + "admin: {tokens_file: ~/t.yaml}\n"), tmp_path)
    assert home.admin.tokens_file == Path.home() / "t.yaml"


def _leaves(data: object, path: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    if isinstance(data, dict):
        return [path] + [p for k, v in data.items() for p in _leaves(v, (*path, k))]
    if isinstance(data, list):
        return [path] + [p for i, v in enumerate(data) for p in _leaves(v, (*path, i))]
    return [path]


def _replaced(data: object, path: tuple[object, ...], value: object) -> object:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {k: _replaced(v, rest, value) if k == head else v for k, v in data.items()}
    assert isinstance(data, list)
    return [_replaced(v, rest, value) if i == head else v for i, v in enumerate(data)]


def test_every_field_with_every_wrong_type_gives_clean_problems() -> None:
    import yaml

    from proxy.config_load import parse_settings

    base = yaml.safe_load(FULL)
    wrong: list[object] = [None, True, "x", -5, 1.5, [1], {"a": 1}, []]
    checked = 0
    for path in _leaves(base)[1:]:
        for value in wrong:
            try:
                parse_settings(_replaced(base, path, value))
            except ConfigError as exc:
                checked += 1
                for p in exc.problems:
                    text = str(p)
                    assert "\n" not in text
                    for noise in ("function-", "constrained-", "tuple[", "union[", "[key]",
                                  "Value error", "lax-or-strict", "json-or-python", "<class"):
                        assert noise not in text, (path, value, text)
    assert checked > 300
