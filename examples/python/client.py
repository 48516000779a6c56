#!/usr/bin/env python3
"""Example client of wnology-gateway: list organizations, read usage counts, handle errors.

It needs the Python stubs generated from the repository's protos (not committed):

    python -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT \\
        proto/wnology/v1/*.proto
    PYTHONPATH=OUT python examples/python/client.py

Settings (environment):
    WNOLOGY_GATEWAY_ADDR  host:port of the gateway (default 127.0.0.1:50051)
    WNOLOGY_TOKEN         the upstream API token, sent as `authorization: Bearer <token>`
                          (required; `wnology-gateway --sandbox` prints demo tokens)
    WNOLOGY_GATEWAY_TLS   `1` to connect with TLS (system roots) instead of plaintext
    WNOLOGY_ORG_FILTER    glob on organization names for the listing (default `*`)

Every step checks what it gets: the script exits non-zero on anything unexpected, so it also
serves as an end-to-end check (`.ci/clients.sh` runs it against the sandbox).
"""

import os
import sys
import uuid

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

try:
    from wnology.v1 import common_pb2, me_pb2, me_pb2_grpc, org_pb2, org_pb2_grpc
except ImportError as error:  # pragma: no cover - a setup mistake, explained
    sys.exit(
        f"cannot import the generated stubs ({error}): generate them with\n"
        "  python -m grpc_tools.protoc -I proto --python_out=OUT --grpc_python_out=OUT "
        "proto/wnology/v1/*.proto\nand put OUT on PYTHONPATH"
    )

TIMEOUT_SECONDS = 10
PAGE_SIZE = 2
# A well-formed id (24 hexadecimal characters) that names no organization.
UNKNOWN_ORG_ID = "0123456789abcdef01234567"


class Unexpected(Exception):
    """Something the example did not expect: the script exits non-zero."""


def expect(condition, what):
    if not condition:
        raise Unexpected(what)


def channel_for(address):
    if os.environ.get("WNOLOGY_GATEWAY_TLS") == "1":
        return grpc.secure_channel(address, grpc.ssl_channel_credentials())
    return grpc.insecure_channel(address)


def list_organizations(orgs, metadata, name_filter):
    """OrgService/List, filtered by name and read page by page."""
    print(f"== OrgService/List (filter name={name_filter!r}, {PAGE_SIZE} per page)")
    collected, page, total = [], 0, None
    while True:
        reply = orgs.List(
            org_pb2.OrgListRequest(
                filter_field=common_pb2.FILTER_FIELD_NAME,
                filter=name_filter,
                sort_field=common_pb2.SORT_FIELD_NAME,
                sort_direction=common_pb2.SORT_DIRECTION_ASC,
                page=page,
                per_page=PAGE_SIZE,
            ),
            metadata=metadata,
            timeout=TIMEOUT_SECONDS,
        )
        total = reply.total_count
        expect(len(reply.items) <= PAGE_SIZE, f"page {page} has {len(reply.items)} items")
        print(f"   page {page}: {len(reply.items)} of {total}")
        for org in reply.items:
            print(f"     {org.id}  {org.name}")
        collected.extend(reply.items)
        if not reply.items or len(collected) >= total:
            break
        page += 1
        expect(page < 1000, "more than 1000 pages")
    expect(len(collected) == total, f"read {len(collected)} organizations, total_count {total}")
    ids = [org.id for org in collected]
    expect(len(set(ids)) == len(ids), "an organization appeared on two pages")
    return collected


def read_usage(me, orgs, metadata, org):
    """MeService/PayloadCounts and OrgService/DeviceCounts (default window: the last 30 days)."""
    print("== MeService/PayloadCounts")
    stats = me.PayloadCounts(me_pb2.MePayloadCountsRequest(), metadata=metadata, timeout=TIMEOUT_SECONDS)
    sources = {}
    for field, counts in stats.ListFields():  # each field maps a payload source to its count
        sources[field.name] = sum(counts.values())
    expect(sources, "no payload counts at all")
    for name, total in sorted(sources.items()):
        print(f"   {name:<20} {total:>12,.0f}")

    print(f"== OrgService/DeviceCounts ({org.name})")
    devices = orgs.DeviceCounts(
        org_pb2.OrgDeviceCountsRequest(org_id=org.id), metadata=metadata, timeout=TIMEOUT_SECONDS
    )
    expect(devices.counts, "no device counts")
    start, end = devices.start.ToDatetime(), devices.end.ToDatetime()
    last = devices.counts[-1]
    print(f"   {len(devices.counts)} days from {start:%Y-%m-%d} to {end:%Y-%m-%d}; "
          f"last day: {last.total} devices ({last.created} created, {last.deleted} deleted)")


def details_of(error):
    """The google.rpc.Status of a failed call (from `grpc-status-details-bin`), unpacked."""
    status = rpc_status.from_call(error)
    expect(status is not None, "the error carries no google.rpc.Status details")
    expect(status.code == error.code().value[0], "Status.code differs from the call's code")
    unpacked = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest,
                     error_details_pb2.RequestInfo, error_details_pb2.RetryInfo):
            if detail.Is(kind.DESCRIPTOR):
                message = kind()
                detail.Unpack(message)
                unpacked[kind.DESCRIPTOR.name] = message
    return unpacked


def show_error(error, details):
    print(f"   code:    {error.code().name}")
    print(f"   message: {error.details()}")
    if "ErrorInfo" in details:
        info = details["ErrorInfo"]
        print(f"   ErrorInfo: reason={info.reason} domain={info.domain} metadata={dict(info.metadata)}")
    if "BadRequest" in details:
        for violation in details["BadRequest"].field_violations:
            print(f"   BadRequest: field={violation.field} description={violation.description}")
    if "RequestInfo" in details:
        print(f"   RequestInfo: request_id={details['RequestInfo'].request_id}")
    if "RetryInfo" in details:
        print(f"   RetryInfo: retry after {details['RetryInfo'].retry_delay.ToTimedelta()}")


def call_expecting_error(call, request, metadata):
    try:
        call(request, metadata=metadata, timeout=TIMEOUT_SECONDS)
    except grpc.RpcError as error:
        return error
    raise Unexpected("the call succeeded")


def show_errors(orgs, metadata):
    # An unknown organization: the upstream answers 404, the gateway NOT_FOUND with ErrorInfo
    # (reason = the upstream error type, domain = the upstream host) and RequestInfo.
    request_id = f"example-python-{uuid.uuid4()}"
    print(f"== OrgService/Get, unknown org_id {UNKNOWN_ORG_ID} (x-request-id {request_id})")
    error = call_expecting_error(
        orgs.Get, org_pb2.OrgGetRequest(org_id=UNKNOWN_ORG_ID), metadata + (("x-request-id", request_id),)
    )
    details = details_of(error)
    show_error(error, details)
    expect(error.code() == grpc.StatusCode.NOT_FOUND, f"expected NOT_FOUND, got {error.code().name}")
    expect("ErrorInfo" in details, "no ErrorInfo")
    expect(details["ErrorInfo"].reason == "NOT_FOUND", "ErrorInfo.reason is not NOT_FOUND")
    expect(details["ErrorInfo"].metadata.get("http_status") == "404", "ErrorInfo lacks http_status 404")
    expect("RequestInfo" in details, "no RequestInfo")
    expect(details["RequestInfo"].request_id == request_id, "RequestInfo does not echo x-request-id")
    trailing = dict(error.trailing_metadata() or ())
    expect(trailing.get("x-request-id") == request_id, "x-request-id is not in the trailers")

    # A malformed id: refused by the gateway itself, nothing sent upstream; BadRequest names the field.
    print("== OrgService/Get, malformed org_id 'not-an-org-id'")
    error = call_expecting_error(orgs.Get, org_pb2.OrgGetRequest(org_id="not-an-org-id"), metadata)
    details = details_of(error)
    show_error(error, details)
    expect(error.code() == grpc.StatusCode.INVALID_ARGUMENT,
           f"expected INVALID_ARGUMENT, got {error.code().name}")
    expect("BadRequest" in details, "no BadRequest")
    fields = [violation.field for violation in details["BadRequest"].field_violations]
    expect(fields == ["org_id"], f"BadRequest names {fields}, not org_id")
    expect(details["ErrorInfo"].domain == "wnology-gateway", "ErrorInfo.domain is not wnology-gateway")


def main():
    address = os.environ.get("WNOLOGY_GATEWAY_ADDR", "127.0.0.1:50051")
    token = os.environ.get("WNOLOGY_TOKEN")
    if not token:
        sys.exit("set WNOLOGY_TOKEN to an API token (`wnology-gateway --sandbox` prints demo tokens)")
    metadata = (("authorization", f"Bearer {token}"),)
    print(f"wnology-gateway at {address}")
    with channel_for(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=TIMEOUT_SECONDS)
        orgs = org_pb2_grpc.OrgServiceStub(channel)
        me = me_pb2_grpc.MeServiceStub(channel)
        try:
            found = list_organizations(orgs, metadata, os.environ.get("WNOLOGY_ORG_FILTER", "*"))
            expect(found, "no organizations to read usage from")
            read_usage(me, orgs, metadata, found[0])
            show_errors(orgs, metadata)
        except grpc.RpcError as error:
            print(f"unexpected RPC failure: {error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        except Unexpected as error:
            print(f"unexpected: {error}", file=sys.stderr)
            return 1
    print("python client: all steps OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
