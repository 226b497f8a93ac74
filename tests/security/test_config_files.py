"""The TLS and tokens files a config names, through the real ``splitway check`` and ``run``.

Before the fix ``check`` validated the config alone: a missing certificate, key or tokens
file passed it, then ``run`` failed — for TLS with ``[Errno 2] No such file or directory``
naming no file. Now both read the files the same way (:mod:`proxy.config_files`) and print
one line per problem naming the field, exit 2; ``check --no-files`` skips them.
"""

from __future__ import annotations

import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.harness import proxy_config, run_cli, running_proxy

ROUTES = [{"name": "r", "match": {"path_prefix": "/"}, "variants": {"a": "v1"},
           "split": {"weights": {"a": 1}}}]


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def write(tmp_path: Path, **extra: object) -> Path:
    cfg = proxy_config({"v1": ["http://127.0.0.1:9"]}, ROUTES, **extra)
    cfg["state"] = f"sqlite:///{tmp_path / 'state.db'}"
    path = tmp_path / "splitway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("command", ["check", "run"])
async def test_missing_files_are_named_by_check_and_run(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, tls={"cert": "tls/cert.pem", "key": "/nowhere/key.pem"},
                 admin={"tokens_file": "tokens.yaml"})
    code, out, err = await run_cli(command, "-c", str(path), cwd=tmp_path)
    assert code == 2, err
    assert err.splitlines() == [
        f"{path}: tls.cert: file not found: {tmp_path / 'tls' / 'cert.pem'}",
        f"{path}: tls.key: file not found: /nowhere/key.pem",
        f"{path}: admin.tokens_file: file not found: {tmp_path / 'tokens.yaml'}",
    ], err
    assert "ready" not in out

    code, out, err = await run_cli("check", "--no-files", "-c", str(path), cwd=tmp_path)
    assert code == 0 and out.strip() == f"{path}: ok", err


@pytest.mark.parametrize("command", ["check", "run"])
async def test_unusable_files_are_named(tmp_path: Path, command: str) -> None:
    cert, key = make_cert(tmp_path, "a")
    _, other_key = make_cert(tmp_path, "b")
    (tmp_path / "tokens.yaml").write_text("tokens:\n  - {sha256: abc, user: ann, roles: [root]}\n")
    path = write(tmp_path, tls={"cert": str(cert), "key": str(other_key)},
                 admin={"tokens_file": "tokens.yaml"})
    code, _, err = await run_cli(command, "-c", str(path), cwd=tmp_path)
    assert code == 2 and "Traceback" not in err, err
    lines = err.splitlines()
    assert lines[0] == f"{path}: tls.key: {other_key} does not match the certificate in {cert}"
    tokens = tmp_path / "tokens.yaml"
    assert lines[1].startswith(f"{path}: admin.tokens_file: {tokens}: tokens[0].sha256: "), lines
    assert lines[2].startswith(f"{path}: admin.tokens_file: {tokens}: tokens[0].roles[0]: "), lines

    path = write(tmp_path, tls={"cert": str(key), "key": str(cert)})  # swapped
    code, _, err = await run_cli(command, "-c", str(path), cwd=tmp_path)
    assert code == 2 and err.splitlines() == [
        f"{path}: tls.cert: no PEM certificate in {key}",
        f"{path}: tls.key: no PEM private key in {cert}"], err

    enc = tmp_path / "enc.key"
    subprocess.run(["openssl", "rsa", "-in", str(key), "-aes256", "-passout", "pass:pw",
                    "-out", str(enc)], check=True, capture_output=True, timeout=60)
    path = write(tmp_path, tls={"cert": str(cert), "key": str(enc)})
    code, _, err = await run_cli(command, "-c", str(path), cwd=tmp_path)
    assert code == 2 and err.strip() == (
        f"{path}: tls.key: {enc} is encrypted; give an unencrypted key (file mode 0600)"), err


async def test_good_files_pass_check_and_serve_tls(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, "a")
    token = "tls-test-token"
    (tmp_path / "tokens.yaml").write_text(yaml.safe_dump({"tokens": [
        {"sha256": hashlib.sha256(token.encode()).hexdigest(), "user": "ann",
         "roles": ["viewer"]}]}))
    path = write(tmp_path, tls={"cert": cert.name, "key": key.name},
                 admin={"listen": "127.0.0.1:0", "tokens_file": "tokens.yaml"})
    code, out, err = await run_cli("check", "-c", str(path), cwd=tmp_path)
    assert code == 0 and out.strip() == f"{path}: ok", err

    cfg = yaml.safe_load(path.read_text())
    async with running_proxy(tmp_path, cfg) as p:
        assert p.data_url.startswith("https://")
        ctx = ssl.create_default_context(cafile=str(cert))
        ctx.check_hostname = False
        async with aiohttp.ClientSession() as http:
            async with http.get(p.data_url + "/x", ssl=ctx) as r:
                assert r.status == 502  # TLS works; the backend is not there
            async with http.get(p.admin_url + "/api/v1/routes",
                                headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200
