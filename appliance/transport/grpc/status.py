"""ApplianceError -> gRPC status with the code in the message and in rich details (google.rpc)."""

from __future__ import annotations

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from appliance.errors import ApplianceError

ERROR_DOMAIN = "stt.appliance"


def to_grpc_status(err: ApplianceError) -> grpc.Status:
    code = grpc.StatusCode[err.grpc_status]
    info = error_details_pb2.ErrorInfo(reason=err.code, domain=ERROR_DOMAIN)
    details = [info]
    if err.retry_after_sec is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(err.retry_after_sec * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=str(err))
    for detail in details:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext, err: ApplianceError) -> None:
    status = to_grpc_status(err)
    await context.abort(status.code, status.details, status.trailing_metadata)
