"""The checked-in stubs under wavenet/v1 are exactly what protoc makes of protos/ (regenerate: make protos)."""

from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("wavenet_pb2.py", "wavenet_pb2.pyi", "wavenet_pb2_grpc.py")


def test_checked_in_stubs_match_the_proto(tmp_path: Path) -> None:
    args = ["protoc", f"-I{ROOT / 'protos'}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}", str(ROOT / "protos" / "wavenet" / "v1" / "wavenet.proto")]
    assert protoc.main(args) == 0
    for name in GENERATED:
        fresh = (tmp_path / "wavenet" / "v1" / name).read_text()
        assert (ROOT / "wavenet" / "v1" / name).read_text() == fresh, f"wavenet/v1/{name} is stale: regenerate it"
