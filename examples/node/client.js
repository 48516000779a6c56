#!/usr/bin/env node
// Example client of wnology-gateway: list organizations, read usage counts, handle errors.
//
// The protos are loaded at run time from the repository's proto/ directory (no generated code);
// the rich error details (`grpc-status-details-bin`, a google.rpc.Status) are decoded with
// protobufjs from the googleapis copies under proto/google/rpc/ (the ones reflection serves).
//
//   cd examples/node && npm ci && WNOLOGY_TOKEN=... node client.js
//
// Settings (environment):
//   WNOLOGY_GATEWAY_ADDR  host:port of the gateway (default 127.0.0.1:50051)
//   WNOLOGY_TOKEN         the upstream API token, sent as `authorization: Bearer <token>`
//                         (required; `wnology-gateway --sandbox` prints demo tokens)
//   WNOLOGY_GATEWAY_TLS   `1` to connect with TLS (system roots) instead of plaintext
//   WNOLOGY_PROTO_DIR     the gateway's proto/ directory (default ../../proto from this file)
//   WNOLOGY_ORG_FILTER    glob on organization names for the listing (default `*`)
//
// Every step checks what it gets: the script exits non-zero on anything unexpected, so it also
// serves as an end-to-end check (`.ci/clients.sh` runs it against the sandbox).

'use strict';

const path = require('node:path');
const crypto = require('node:crypto');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const TIMEOUT_MS = 10_000;
const PAGE_SIZE = 2;
// A well-formed id (24 hexadecimal characters) that names no organization.
const UNKNOWN_ORG_ID = '0123456789abcdef01234567';

class Unexpected extends Error {}

function expect(condition, what) {
  if (!condition) throw new Unexpected(what);
}

// --- The gateway's services, loaded from its protos --------------------------------------------

const protoDir = process.env.WNOLOGY_PROTO_DIR || path.join(__dirname, '..', '..', 'proto');
const definition = protoLoader.loadSync(
  ['wnology/v1/me.proto', 'wnology/v1/org.proto'],
  {
    includeDirs: [protoDir],
    keepCase: false, // fields in lowerCamelCase: orgId, perPage, totalCount
    longs: Number, // int64 counts and times as numbers
    enums: String, // enum values by name: 'FILTER_FIELD_NAME'
    defaults: false,
    oneofs: true,
  },
);
const wnology = grpc.loadPackageDefinition(definition).wnology.v1;

// --- google.rpc.Status and its details ---------------------------------------------------------

const rpcTypes = protobuf.loadSync([
  path.join(protoDir, 'google', 'rpc', 'status.proto'),
  path.join(protoDir, 'google', 'rpc', 'error_details.proto'),
]);
const Status = rpcTypes.lookupType('google.rpc.Status');

// The google.rpc.Status in an error's `grpc-status-details-bin` trailer, with each detail
// (a google.protobuf.Any) decoded to a plain object and keyed by its type name (`ErrorInfo`).
function detailsOf(error) {
  const [bin] = error.metadata ? error.metadata.get('grpc-status-details-bin') : [];
  expect(bin, 'the error carries no grpc-status-details-bin');
  const status = Status.decode(bin);
  expect(status.code === error.code, 'Status.code differs from the call\'s code');
  const details = {};
  for (const any of status.details) {
    const typeName = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    const type = rpcTypes.lookupType(typeName);
    details[type.name] = type.toObject(type.decode(any.value), { longs: Number, defaults: true });
  }
  return details;
}

function showError(error, details) {
  console.log(`   code:    ${grpc.status[error.code]}`);
  console.log(`   message: ${error.details}`);
  if (details.ErrorInfo) {
    const { reason, domain, metadata } = details.ErrorInfo;
    console.log(`   ErrorInfo: reason=${reason} domain=${domain} metadata=${JSON.stringify(metadata)}`);
  }
  for (const violation of details.BadRequest?.fieldViolations ?? []) {
    console.log(`   BadRequest: field=${violation.field} description=${violation.description}`);
  }
  if (details.RequestInfo) console.log(`   RequestInfo: request_id=${details.RequestInfo.requestId}`);
  if (details.RetryInfo) console.log(`   RetryInfo: retry after ${details.RetryInfo.retryDelay.seconds} s`);
}

// --- Calls -------------------------------------------------------------------------------------

// A unary call as a promise, with a deadline.
function call(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + TIMEOUT_MS }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

async function callExpectingError(client, method, request, metadata) {
  try {
    await call(client, method, request, metadata);
  } catch (error) {
    if (error instanceof Unexpected) throw error;
    return error;
  }
  throw new Unexpected(`${method} succeeded`);
}

// OrgService/List, filtered by name and read page by page.
async function listOrganizations(orgs, metadata, nameFilter) {
  console.log(`== OrgService/List (filter name='${nameFilter}', ${PAGE_SIZE} per page)`);
  const collected = [];
  let total = 0;
  for (let page = 0; ; page += 1) {
    expect(page < 1000, 'more than 1000 pages');
    const reply = await call(orgs, 'List', {
      filterField: 'FILTER_FIELD_NAME',
      filter: nameFilter,
      sortField: 'SORT_FIELD_NAME',
      sortDirection: 'SORT_DIRECTION_ASC',
      page,
      perPage: PAGE_SIZE,
    }, metadata);
    const items = reply.items ?? [];
    total = reply.totalCount;
    expect(items.length <= PAGE_SIZE, `page ${page} has ${items.length} items`);
    console.log(`   page ${page}: ${items.length} of ${total}`);
    for (const org of items) console.log(`     ${org.id}  ${org.name}`);
    collected.push(...items);
    if (items.length === 0 || collected.length >= total) break;
  }
  expect(collected.length === total, `read ${collected.length} organizations, totalCount ${total}`);
  expect(new Set(collected.map((org) => org.id)).size === collected.length,
    'an organization appeared on two pages');
  return collected;
}

const day = (timestamp) => new Date(timestamp.seconds * 1000).toISOString().slice(0, 10);

// MeService/PayloadCounts and OrgService/DeviceCounts (default window: the last 30 days).
async function readUsage(me, orgs, metadata, org) {
  console.log('== MeService/PayloadCounts');
  const stats = await call(me, 'PayloadCounts', {}, metadata);
  // Each field maps a payload source to its count.
  const sources = Object.entries(stats)
    .map(([source, counts]) => [source, Object.values(counts).reduce((a, b) => a + b, 0)])
    .sort();
  expect(sources.length > 0, 'no payload counts at all');
  for (const [source, total] of sources) {
    console.log(`   ${source.padEnd(20)} ${total.toLocaleString('en-US').padStart(12)}`);
  }

  console.log(`== OrgService/DeviceCounts (${org.name})`);
  const devices = await call(orgs, 'DeviceCounts', { orgId: org.id }, metadata);
  const counts = devices.counts ?? [];
  expect(counts.length > 0, 'no device counts');
  const last = counts[counts.length - 1];
  console.log(`   ${counts.length} days from ${day(devices.start)} to ${day(devices.end)}; ` +
    `last day: ${last.total} devices (${last.created} created, ${last.deleted} deleted)`);
}

async function showErrors(orgs, metadata) {
  // An unknown organization: the upstream answers 404, the gateway NOT_FOUND with ErrorInfo
  // (reason = the upstream error type, domain = the upstream host) and RequestInfo.
  const requestId = `example-node-${crypto.randomUUID()}`;
  console.log(`== OrgService/Get, unknown orgId ${UNKNOWN_ORG_ID} (x-request-id ${requestId})`);
  const traced = metadata.clone();
  traced.set('x-request-id', requestId);
  let error = await callExpectingError(orgs, 'Get', { orgId: UNKNOWN_ORG_ID }, traced);
  let details = detailsOf(error);
  showError(error, details);
  expect(error.code === grpc.status.NOT_FOUND, `expected NOT_FOUND, got ${grpc.status[error.code]}`);
  expect(details.ErrorInfo?.reason === 'NOT_FOUND', 'ErrorInfo.reason is not NOT_FOUND');
  expect(details.ErrorInfo.metadata.http_status === '404', 'ErrorInfo lacks http_status 404');
  expect(details.RequestInfo?.requestId === requestId, 'RequestInfo does not echo x-request-id');
  expect(error.metadata.get('x-request-id')[0] === requestId, 'x-request-id is not in the trailers');

  // A malformed id: refused by the gateway itself, nothing sent upstream; BadRequest names the field.
  console.log("== OrgService/Get, malformed orgId 'not-an-org-id'");
  error = await callExpectingError(orgs, 'Get', { orgId: 'not-an-org-id' }, metadata);
  details = detailsOf(error);
  showError(error, details);
  expect(error.code === grpc.status.INVALID_ARGUMENT,
    `expected INVALID_ARGUMENT, got ${grpc.status[error.code]}`);
  const fields = (details.BadRequest?.fieldViolations ?? []).map((violation) => violation.field);
  expect(JSON.stringify(fields) === '["org_id"]', `BadRequest names ${JSON.stringify(fields)}, not org_id`);
  expect(details.ErrorInfo?.domain === 'wnology-gateway', 'ErrorInfo.domain is not wnology-gateway');
}

async function main() {
  const address = process.env.WNOLOGY_GATEWAY_ADDR || '127.0.0.1:50051';
  const token = process.env.WNOLOGY_TOKEN;
  if (!token) {
    console.error('set WNOLOGY_TOKEN to an API token (`wnology-gateway --sandbox` prints demo tokens)');
    return 2;
  }
  const credentials = process.env.WNOLOGY_GATEWAY_TLS === '1'
    ? grpc.credentials.createSsl()
    : grpc.credentials.createInsecure();
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);
  console.log(`wnology-gateway at ${address}`);
  const orgs = new wnology.OrgService(address, credentials);
  const me = new wnology.MeService(address, credentials, { channelOverride: orgs.getChannel() });
  try {
    const found = await listOrganizations(orgs, metadata, process.env.WNOLOGY_ORG_FILTER || '*');
    expect(found.length > 0, 'no organizations to read usage from');
    await readUsage(me, orgs, metadata, found[0]);
    await showErrors(orgs, metadata);
  } catch (error) {
    if (error instanceof Unexpected) {
      console.error(`unexpected: ${error.message}`);
    } else if (error.code !== undefined) {
      console.error(`unexpected RPC failure: ${grpc.status[error.code]}: ${error.details}`);
    } else {
      console.error(error);
    }
    return 1;
  } finally {
    orgs.close();
  }
  console.log('node client: all steps OK');
  return 0;
}

main().then((code) => { process.exitCode = code; });
