"""TLS, bearer tokens, model names that never become paths."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client.api import WaveNetClient
from client.cli import main as client_main
from server.auth import bearer, load_tokens
from tests.serving import LIMITS, RunningServer
from wavenet.v1 import wavenet_pb2 as pb
from wavenet.v1 import wavenet_pb2_grpc as pb_grpc

TOKEN = "s3cret-token"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def secure_server(model_path: Path, certificate: tuple[Path, Path]) -> Iterator[RunningServer]:
    cert, key = certificate
    running = RunningServer([f"tiny={model_path}"], 4, LIMITS, tls_cert=cert.read_bytes(), tls_key=key.read_bytes(),
                            tokens=frozenset({TOKEN, "another"}))
    yield running
    running.stop()


def tls_channel(server: RunningServer, cert: Path) -> grpc.Channel:
    return grpc.secure_channel(f"localhost:{server.port}", grpc.ssl_channel_credentials(cert.read_bytes()))


def test_tls_and_token_let_a_client_in(secure_server: RunningServer, certificate: tuple[Path, Path],
                                       tmp_path: Path) -> None:
    cert, _ = certificate
    with WaveNetClient(f"localhost:{secure_server.port}", ca=cert.read_bytes(), token=TOKEN) as client:
        assert sum(len(c.audio) for c in client.generate(samples=200, seed=1)) == 200
    out = tmp_path / "x.wav"
    assert client_main(["--server", f"localhost:{secure_server.port}", "--ca", str(cert), "--token", TOKEN,
                        "--quiet", "generate", "--seconds", "0.1", "-o", str(out)]) == 0
    assert out.stat().st_size > 44


@pytest.mark.parametrize("metadata", [None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)],
                         ids=["no token", "wrong token", "no Bearer prefix"])
def test_calls_without_a_known_token_are_unauthenticated(secure_server: RunningServer,
                                                         certificate: tuple[Path, Path], metadata: object) -> None:
    with tls_channel(secure_server, certificate[0]) as channel:
        stub = pb_grpc.WaveNetStub(channel)
        calls = [
            lambda: stub.ListModels(pb.ListModelsRequest(), metadata=metadata),
            lambda: list(stub.Generate(pb.GenerateRequest(samples=10), metadata=metadata)),
            lambda: list(stub.Synthesize(iter([pb.SynthesizeRequest(config=pb.GenerateRequest())]),
                                         metadata=metadata)),
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as error:
                call()
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization" in (error.value.details() or "")
        health = health_pb2_grpc.HealthStub(channel)  # probes stay open
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_client_cannot_talk_to_a_tls_server(secure_server: RunningServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{secure_server.port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.WaveNetStub(channel).ListModels(pb.ListModelsRequest(), timeout=5,
                                                    metadata=(("authorization", f"Bearer {TOKEN}"),))
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("name", ["../../../etc/passwd", "/etc/passwd", "tiny.pt", "models/default.pt", " tiny"])
def test_model_names_never_become_paths(stub: pb_grpc.WaveNetStub, name: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Generate(pb.GenerateRequest(model=name, samples=10)))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert np.any(["tiny" in (error.value.details() or "")])


def test_tokens_come_from_a_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# operators\nalpha\n\n beta  # ci\nXk9#p2Lq8Zr5\n")  # a # inside a token is the token's
    assert load_tokens(str(path), {"WAVENET_TOKENS": "gamma, delta,"}) == {"alpha", "beta", "Xk9#p2Lq8Zr5", "gamma",
                                                                           "delta"}
    assert load_tokens(None, {}) == frozenset()


def test_a_tokens_file_without_a_token_is_refused_not_an_open_server(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# production tokens\n\n")
    with pytest.raises(ValueError, match="no token in it"):
        load_tokens(str(path), {"WAVENET_TOKENS": "gamma"})


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_read_in_any_case(scheme: str) -> None:
    """RFC 7235: the scheme name is case-insensitive, and some clients send it in lower case."""
    assert bearer((("authorization", f"{scheme} {TOKEN}"),)) == TOKEN
    assert bearer((("authorization", f"Basic {TOKEN}"),)) is None


def test_a_key_that_is_not_the_certificates_is_named(certificate: tuple[Path, Path], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """gRPC said only 'cannot listen on ...' (the cause was in its C log)."""
    from server.service import main

    other = tmp_path / "other.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(other), "2048"], check=True, capture_output=True)
    assert main(["--tls-cert", str(certificate[0]), "--tls-key", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wavenet-server: --tls-cert {certificate[0]} / --tls-key {other}: not a certificate and its "
                          "key (") and err.count("\n") == 1
    assert main(["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(other)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"No such file or directory: '{tmp_path / 'missing.pem'}'")
