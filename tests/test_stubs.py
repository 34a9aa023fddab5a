"""The committed gRPC stubs match proto/stt.proto (regenerated with the pinned grpcio-tools)."""

from tools.gen_proto import stale_stubs


def test_generated_stubs_are_fresh():
    assert stale_stubs() == [], "run: python tools/gen_proto.py"


def test_stubs_import_as_one_package():
    from appliance.api import stt_pb2, stt_pb2_grpc

    assert stt_pb2.DESCRIPTOR.package == "stt.v1"
    assert hasattr(stt_pb2_grpc, "SpeechToTextStub")
