// Browser example of wnology-gateway over gRPC-Web: lists the caller's organizations
// (OrgService/List) and charts one organization's payload counts (OrgService/PayloadCounts).
//
// The client is @connectrpc/connect-web's gRPC-Web transport with code generated from the
// repository's proto/ by buf and protoc-gen-es (src/gen/, `npm run generate`). The gateway URL
// and the token come from the form or the page's fragment
// (`#gateway=http://localhost:50051&token=…&org=…`): a fragment never reaches a server.
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { OrgService } from "./gen/wnology/v1/org_pb.js";
import { SortField } from "./gen/wnology/v1/common_pb.js";
import { type PayloadStats, PayloadStatsSchema } from "./gen/wnology/v1/models_pb.js";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RequestInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

const SVG = "http://www.w3.org/2000/svg";

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text?: string,
  attributes: Record<string, string> = {},
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function svg(tag: string, attributes: Record<string, string | number>, text?: string): SVGElement {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function byId<T extends HTMLElement>(id: string): T {
  const node = document.getElementById(id);
  if (!node) throw new Error(`#${id} is missing from the page`);
  return node as T;
}

function setState(state: "idle" | "loading" | "ready" | "error"): void {
  document.body.dataset.state = state;
}

// One total per payload type (the sum over its sources), in the message's field order.
function totals(stats: PayloadStats): { type: string; total: number }[] {
  return PayloadStatsSchema.fields.map((field) => {
    const counts = (stats as unknown as Record<string, Record<string, number>>)[field.localName] ?? {};
    const total = Object.values(counts).reduce((sum, count) => sum + count, 0);
    return { type: field.jsonName, total };
  });
}

// A horizontal bar chart (SVG) of the non-zero totals.
function chart(stats: PayloadStats): SVGElement {
  const rows = totals(stats).filter((row) => row.total > 0);
  const max = Math.max(1, ...rows.map((row) => row.total));
  const [labelWidth, barWidth, rowHeight] = [150, 420, 24];
  const height = Math.max(1, rows.length) * rowHeight + 8;
  const root = svg("svg", {
    id: "chart",
    width: labelWidth + barWidth + 90,
    height,
    role: "img",
    "aria-label": "Payload counts by type",
    "data-bars": rows.length,
  });
  rows.forEach((row, index) => {
    const y = index * rowHeight + 4;
    const width = Math.max(1, Math.round((row.total / max) * barWidth));
    root.append(
      svg("text", { x: labelWidth - 8, y: y + 16, "text-anchor": "end", class: "label" }, row.type),
      svg("rect", {
        x: labelWidth,
        y,
        width,
        height: rowHeight - 6,
        class: "bar",
        "data-type": row.type,
        "data-total": row.total,
      }),
      svg("text", { x: labelWidth + width + 6, y: y + 16, class: "value" }, row.total.toLocaleString("en-US")),
    );
  });
  if (rows.length === 0) root.append(svg("text", { x: 8, y: 20 }, "no payloads in the window"));
  return root;
}

// The error as the gateway sent it: code, message and its decoded google.rpc details.
function showError(error: unknown): void {
  const failure = ConnectError.from(error);
  const box = byId("error");
  box.replaceChildren(element("strong", `${Code[failure.code]}: ${failure.rawMessage}`));
  const details = element("ul");
  for (const info of failure.findDetails(ErrorInfoSchema)) {
    const metadata = Object.entries(info.metadata).map(([k, v]) => `${k}=${v}`).join(", ");
    details.append(element("li", `ErrorInfo: ${info.reason} (${info.domain}) ${metadata}`));
  }
  for (const bad of failure.findDetails(BadRequestSchema)) {
    for (const violation of bad.fieldViolations) {
      details.append(element("li", `BadRequest: ${violation.field}: ${violation.description}`));
    }
  }
  for (const request of failure.findDetails(RequestInfoSchema)) {
    details.append(element("li", `RequestInfo: request id ${request.requestId}`));
  }
  box.append(details);
  box.hidden = false;
  setState("error");
}

async function run(gateway: string, token: string, wantedOrg: string | null): Promise<void> {
  setState("loading");
  byId("error").hidden = true;
  const transport = createGrpcWebTransport({ baseUrl: gateway, useBinaryFormat: true });
  const orgs = createClient(OrgService, transport);
  const headers = { authorization: `Bearer ${token}` };

  const list = await orgs.list({ sortField: SortField.NAME, perPage: 100 }, { headers });
  const items = byId<HTMLUListElement>("orgs");
  items.replaceChildren(
    ...list.items.map((org) => {
      const button = element("button", org.name ?? org.id ?? "?", { type: "button" });
      button.addEventListener("click", () => {
        void showCounts(org.id ?? "", org.name ?? "").catch(showError);
      });
      const item = element("li", undefined, { "data-org-id": org.id ?? "" });
      item.append(button);
      return item;
    }),
  );
  byId("org-count").textContent = `${list.items.length} organizations`;

  async function showCounts(orgId: string, name: string): Promise<void> {
    setState("loading");
    let cache = "";
    const stats = await orgs.payloadCounts(
      { orgId },
      { headers, onHeader: (answer) => (cache = answer.get("x-cache") ?? "") },
    );
    byId("chart-title").textContent = `Payload counts of ${name}, last 30 days`;
    byId("chart-box").replaceChildren(chart(stats));
    byId("cache").textContent = cache ? `x-cache: ${cache}` : "";
    setState("ready");
  }

  const first = list.items.find((org) => org.id === wantedOrg) ?? list.items[0];
  if (first) {
    await showCounts(first.id ?? "", first.name ?? "");
  } else {
    setState("ready");
  }
}

function start(): void {
  const params = new URLSearchParams(location.hash.slice(1));
  const form = byId<HTMLFormElement>("connect");
  const gateway = byId<HTMLInputElement>("gateway");
  const token = byId<HTMLInputElement>("token");
  gateway.value = params.get("gateway") ?? gateway.value;
  token.value = params.get("token") ?? "";
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void run(gateway.value, token.value, null).catch(showError);
  });
  setState("idle");
  if (token.value) void run(gateway.value, token.value, params.get("org")).catch(showError);
}

start();
