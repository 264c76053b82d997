"""Drives Conclave's MCP endpoint with the official Python MCP SDK (pinned by scripts/test.sh).

Run by cluster-tests/tests/mcp.rs against a cluster it started; exits non-zero on any failed
check. Modes:

  session   URL KEY        ClientSession.initialize() (the session form), list_tools, a call of
                           every tool, skill refusals, then DELETE ends the session everywhere.
  auto      URL KEY        mcp.Client(URL) in its default auto mode (the stateless form, found
                           through server/discover), with the key carried in the URL, and a
                           subscriptions/listen stream.
  failover  URL KEY URLS   a session begun on URL through a switchable "load balancer"; prints
                           READY, waits for `SWITCH <url>` on stdin (the test kills the first
                           node meanwhile), then continues the same session on the other node.

URLS is a comma-separated list of every node's base URL (used to check a session's end).
"""

import asyncio
import base64
import json
import sys
import time
import urllib.parse

import httpx2
import mcp
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import listen

MIN_TOOLS = 30
RETRY_SECONDS = 180


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def payload(result):
    """The JSON a tool returned."""
    check(result.content and result.content[0].type == "text", f"text content: {result}")
    return json.loads(result.content[0].text)


def unknown_outcome(body):
    """A 503 saying a write may have happened (the node handling it failed)."""
    err = body.get("error", {})
    return err.get("status") == 503 and "unknown" in err.get("message", "")


async def call(session, name, args, *, error=False):
    """Calls a tool; retries while the cluster answers 503 (an election, or an overloaded
    machine). A conflict (409) after a write whose outcome was unknown means the earlier
    attempt landed: that counts as success, and the answer is `{}`."""
    deadline = time.monotonic() + RETRY_SECONDS
    maybe_landed = False
    while True:
        result = await session.call_tool(name, args)
        body = payload(result)
        status = body.get("error", {}).get("status") if result.is_error else None
        if status == 503 and time.monotonic() < deadline:
            maybe_landed |= unknown_outcome(body)
            await asyncio.sleep(0.5)
            continue
        if status in (404, 409) and maybe_landed and not error:
            return {}
        check(
            bool(result.is_error) == error,
            f"{name}({args}): is_error={result.is_error}, wanted {error}: {body}",
        )
        return body


class Switch(httpx2.AsyncBaseTransport):
    """A client-side load balancer: sends every request to the current backend, and records
    every Mcp-Session-Id it carries."""

    def __init__(self, backend):
        self.backend = backend
        self.inner = httpx2.AsyncHTTPTransport()
        self.sessions = set()

    async def handle_async_request(self, request):
        target = urllib.parse.urlsplit(self.backend)
        request.url = request.url.copy_with(host=target.hostname, port=target.port)
        request.headers["host"] = f"{target.hostname}:{target.port}"
        sid = request.headers.get("mcp-session-id")
        if sid:
            self.sessions.add(sid)
        return await self.inner.handle_async_request(request)

    async def aclose(self):
        await self.inner.aclose()


def http_client(key, transport=None, agent=None):
    headers = {"authorization": f"Bearer {key}"}
    if agent:
        headers["conclave-agent"] = agent
    return httpx2.AsyncClient(
        headers=headers,
        transport=transport,
        timeout=httpx2.Timeout(30, read=120),
    )


async def rest(base, key, method, path, body=None):
    """A REST call, retried while the key or an election is still spreading (401, 503)."""
    async with httpx2.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            r = await c.request(method, base + path, json=body)
            if r.status_code in (401, 503) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                continue
            return r.status_code, (r.json() if r.content else None)


async def rest_ok(base, key, method, path, body=None):
    status, answer = await rest(base, key, method, path, body)
    check(status < 300, f"{method} {path}: {status} {answer}")
    return answer


async def ensure_named(base, key, path, body):
    """Creates a team or skill named body["name"], or finds the one an earlier attempt made."""
    status, answer = await rest(base, key, "POST", path, body)
    if status == 201:
        return answer
    check(status == 409, f"POST {path}: {status} {answer}")
    listed = await rest_ok(base, key, "GET", path + "?limit=1000")
    return next(i for i in listed["items"] if i["name"] == body["name"])


async def grant(base, key, team, agent, skill):
    """Adds `agent` to `team` and grants `skill` to it (both idempotent here)."""
    status, answer = await rest(base, key, "POST", f"/v1/teams/{team}/members", {"agent": agent})
    check(status in (200, 201, 409), f"add member: {status} {answer}")
    status, answer = await rest(base, key, "POST", f"/v1/skills/{skill}/teams/{team}")
    check(status in (200, 201, 409), f"grant: {status} {answer}")


async def list_all_tools(session):
    tools = (await session.list_tools()).tools
    names = [t.name for t in tools]
    check(len(tools) >= MIN_TOOLS, f"{len(tools)} tools: {names}")
    check(names == sorted(names), f"tools are not in name order: {names}")
    for t in tools:
        schema = t.input_schema
        check(schema.get("type") == "object", f"{t.name} schema {schema}")
        check(schema.get("additionalProperties") is False, f"{t.name} schema is not closed")
        check(t.description, f"{t.name} has no description")
    return names


async def every_tool(session, base, key, tag):
    """Calls every tool once with valid arguments; returns the names called."""
    called = []

    async def c(name, args, **kw):
        called.append(name)
        return await call(session, name, args, **kw)

    agent = f"mcp-bot-{tag}"
    topic = f"mcp-news-{tag}"
    await c("register_agent", {"name": agent, "capabilities": ["mcp"]})
    check((await c("whoami", {})).get("workspace"), "whoami names the workspace")
    await c("heartbeat_agent", {"agent": agent})
    agents = await c("list_agents", {"limit": 1000})
    check(any(a["name"] == agent for a in agents["items"]), f"agent listed: {agents}")
    await c("send_message", {"to": f"agent:{agent}", "body": {"hello": tag},
                             "idempotency_key": f"hello-{tag}"})
    inbox = await c("list_messages", {"agent": agent})
    check([m["body"] for m in inbox["items"]] == [{"hello": tag}], f"inbox {inbox}")
    events = await c("wait_for_events", {"agent": agent, "include_tasks": False, "timeout_ms": 0})
    check(len(events["messages"]) == 1 and not events["timed_out"], f"events {events}")

    task = await c("create_task", {"title": f"task {tag}"})
    await c("get_task", {"task_id": task["id"]})
    tasks = await c("list_tasks", {"limit": 1000})
    check(any(t["id"] == task["id"] for t in tasks["items"]), "task listed")
    claim = await c("claim_task", {"task_id": task["id"], "agent": agent})
    if "fencing_token" not in claim:  # the claim landed on an attempt whose answer was lost
        claim = await c("get_task", {"task_id": task["id"]})
    await c(
        "update_task",
        {"task_id": task["id"], "status": "done", "agent": agent,
         "fencing_token": claim["fencing_token"]},
    )
    gated = await c("create_task", {"title": f"gated {tag}", "mode": "approval"})
    await c("approve_task", {"task_id": gated["id"]})
    approved = await c("get_task", {"task_id": gated["id"]})
    check(approved["status"] == "open", f"approved {approved}")
    # A business error is a result with isError, in the REST error shape.
    again = await c("claim_task", {"task_id": task["id"], "agent": agent}, error=True)
    check(again["error"]["status"] == 409, f"claim of a done task: {again}")

    await c("create_topic", {"name": topic})
    check(any(t["name"] == topic for t in (await c("list_topics", {"limit": 1000}))["items"]),
          "topic listed")
    await c("subscribe_topic", {"topic": topic, "agent": agent})
    subs = await c("list_topic_subscriptions", {"agent": agent})
    check(any(s["topic"] == topic for s in subs["items"]), f"subscriptions {subs}")
    await c("publish_topic", {"topic": topic, "body": {"n": 1}})
    read = await c("read_topic", {"topic": topic})
    check({"n": 1} in [m["body"] for m in read["items"]], f"topic read {read}")
    await c("unsubscribe_topic", {"topic": topic, "agent": agent})

    key_name = f"mcp/{tag}"
    await c("set_context", {"key": key_name, "value": {"v": tag}})
    got = await c("get_context", {"key": key_name})
    check(got["value"] == {"v": tag}, f"context {got}")
    await c("list_context", {"limit": 1000})
    await c("store_embedding", {"id": f"e-{tag}", "vector": [1.0, 0.0, 0.5],
                                "namespace": f"ns-{tag}", "text": "hello"})
    await c("list_embeddings", {"namespace": f"ns-{tag}"})
    found = await c("search_context", {"vector": [1.0, 0.0, 0.5], "namespace": f"ns-{tag}"})
    check(found["items"] and found["items"][0]["id"] == f"e-{tag}", f"search {found}")
    await c("delete_context", {"key": key_name})
    await c("get_context", {"key": key_name}, error=True)

    art = await c("create_artifact", {"name": f"notes-{tag}.txt", "content": "hi there"})
    await c("get_artifact", {"artifact_id": art["id"]})
    await c("list_artifacts", {})
    content = await c("get_artifact_content", {"artifact_id": art["id"]})
    check(content.get("text") == "hi there", f"content {content}")

    # Teams and skills are set up through REST; the lookups go through MCP.
    team = await ensure_named(base, key, "/v1/teams", {"name": f"team-{tag}", "description": ""})
    skill = await ensure_named(base, key, "/v1/skills", {"name": f"skill-{tag}", "description": ""})
    await grant(base, key, team["id"], agent, skill["id"])
    check(any(t["id"] == team["id"] for t in (await c("list_teams", {}))["items"]), "team listed")
    await c("list_team_members", {"team_id": team["id"]})
    await c("list_team_skills", {"team_id": team["id"]})
    await c("list_skills", {})
    await c("invoke_skill", {"skill": skill["id"], "agent": agent})
    await c("invoke_skill", {"skill": skill["id"], "agent": "stranger"}, error=True)

    await c("disconnect_agent", {"agent": agent})
    await c("delete_agent", {"agent": agent})
    return called


async def wait_is_woken(session, agent):
    """wait_for_events blocks until a message arrives, then returns it."""
    await call(session, "register_agent", {"name": agent})
    first = await call(session, "wait_for_events",
                       {"agent": agent, "include_tasks": False, "timeout_ms": 0})
    check(first["timed_out"] and not first["messages"], f"nothing yet: {first}")
    started = time.monotonic()
    waiter = asyncio.create_task(call(
        session, "wait_for_events",
        {"agent": agent, "cursor": first["cursor"], "include_tasks": False, "timeout_ms": 60000}))
    await call(session, "send_message", {"to": f"agent:{agent}", "body": "wake up",
                                         "idempotency_key": f"wake-{agent}"})
    got = await waiter
    check([m["body"] for m in got["messages"]] == ["wake up"], f"woken with {got}")
    check(not got["timed_out"] and time.monotonic() - started < 60, "woken before the timeout")
    # The returned cursor points past it.
    after = await call(session, "wait_for_events",
                       {"agent": agent, "cursor": got["cursor"], "include_tasks": False,
                        "timeout_ms": 0})
    check(after["timed_out"] and not after["messages"], f"nothing after the cursor: {after}")


async def session_mode(url, key, urls):
    base = url.rsplit("/mcp", 1)[0]
    sw = Switch(url)
    async with http_client(key, sw) as hc:
        async with streamable_http_client(url, http_client=hc) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                check(init.protocol_version == "2025-11-25", f"version {init.protocol_version}")
                names = await list_all_tools(session)
                called = await every_tool(session, base, key, "s")
                await wait_is_woken(session, "mcp-waiter-s")
                missing = sorted(set(names) - set(called) - {"wait_for_events"})
                check(not missing, f"tools never called: {missing}")
                # Unknown tool: a protocol error, not a result.
                try:
                    await session.call_tool("no_such_tool", {})
                    check(False, "unknown tool accepted")
                except mcp.MCPError as e:
                    check(e.error.code == -32602, f"unknown tool: {e.error}")
                # Unknown argument: a tool error.
                bad = await call(session, "whoami", {"nope": 1}, error=True)
                check(bad["error"]["status"] == 400, f"bad argument: {bad}")
    # Leaving the client sent DELETE: the session has ended on every node.
    check(len(sw.sessions) == 1, f"one session throughout: {sw.sessions}")
    await session_is_gone(key, next(iter(sw.sessions)), urls)
    print(f"session: {len(names)} tools listed, {len(set(called))} called")


async def session_is_gone(key, sid, urls):
    msg = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for base in urls:
        async with httpx2.AsyncClient(timeout=30) as c:
            deadline = time.monotonic() + RETRY_SECONDS
            while True:
                r = await c.post(base + "/mcp", json=msg, headers={
                    "authorization": f"Bearer {key}", "mcp-session-id": sid,
                    "accept": "application/json, text/event-stream",
                    "mcp-protocol-version": "2025-11-25"})
                if r.status_code == 404 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)  # the end is still replicating to this node
            check(r.status_code == 404, f"{base}: ended session answered {r.status_code}")


async def skill_mode(url, key):
    """With skill mcp.tasks registered and granted to one team, only its agent may use the
    tasks tools; a refusal is recorded as a violation."""
    base = url.rsplit("/mcp", 1)[0]
    team = await ensure_named(base, key, "/v1/teams", {"name": "mcp-tasks-team", "description": ""})
    skill = await ensure_named(base, key, "/v1/skills", {"name": "mcp.tasks", "description": ""})
    await grant(base, key, team["id"], "mcp-worker", skill["id"])
    for agent, allowed in [("mcp-worker", True), ("mcp-outsider", False)]:
        async with http_client(key, agent=agent) as hc:
            async with streamable_http_client(url, http_client=hc) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    deadline = time.monotonic() + RETRY_SECONDS
                    while True:  # the grant may still be reaching this node's replica
                        r = await session.call_tool("list_tasks", {})
                        if bool(r.is_error) == (not allowed) or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.2)
                    body = payload(r)
                    check(bool(r.is_error) == (not allowed), f"{agent}: {body}")
                    if not allowed:
                        check(body["error"]["code"] == "policy_violation", f"{body}")
                        check("recorded as policy violation" in body["error"]["message"], f"{body}")
                    # Tools of other groups stay open (no such skill is registered).
                    await call(session, "list_topics", {})
    violations = await rest_ok(base, key, "GET", "/v1/audit/violations?limit=1000")
    check(any(v.get("via") == "mcp:list_tasks" and v.get("agent") == "mcp-outsider"
              for v in violations["items"]), f"violation recorded: {violations}")
    print("skills: refusal recorded")


async def auto_mode(url, key):
    parts = urllib.parse.urlsplit(url)
    with_key = urllib.parse.urlunsplit(
        (parts.scheme, f"agent:{key}@{parts.netloc}", parts.path, "", ""))
    async with mcp.Client(with_key) as client:
        check(client.session.protocol_version == "2026-07-28",
              f"auto mode spoke {client.session.protocol_version}")
        tools = (await client.list_tools()).tools
        check(len(tools) >= MIN_TOOLS, f"{len(tools)} tools")
        await call(client, "whoami", {})
        await call(client, "register_agent", {"name": "mcp-auto"})
        await call(client, "send_message", {"to": "agent:mcp-auto", "body": "hi",
                                            "idempotency_key": "auto-hi"})
        body = await call(client, "wait_for_events",
                          {"agent": "mcp-auto", "timeout_ms": 0})
        check([m["body"] for m in body["messages"]] == ["hi"], f"events {body}")
        err = await call(client, "get_task", {"task_id": "task_1_999999"}, error=True)
        check(err["error"]["status"] == 404, f"missing task: {err}")
        async with client.listen(tools_list_changed=True) as sub:
            check(sub.honored.tools_list_changed, f"listen honoured {sub.honored}")
    # A request whose headers disagree with its body is refused.
    async with httpx2.AsyncClient(timeout=30) as c:
        meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}
        r = await c.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                                    "params": {"_meta": meta}},
                         headers={"authorization": f"Bearer {key}",
                                  "mcp-protocol-version": "2026-07-28",
                                  "mcp-method": "tools/call"})
        check(r.status_code == 400 and r.json()["error"]["code"] == -32020, f"mismatch: {r.text}")
        meta["io.modelcontextprotocol/protocolVersion"] = "2099-01-01"
        r = await c.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list",
                                    "params": {"_meta": meta}},
                         headers={"authorization": f"Bearer {key}",
                                  "mcp-protocol-version": "2099-01-01",
                                  "mcp-method": "tools/list"})
        check(r.status_code == 400 and r.json()["error"]["code"] == -32022
              and "2026-07-28" in r.json()["error"]["data"]["supported"], f"version: {r.text}")
        r = await c.post(url, json={"jsonrpc": "2.0", "id": 3, "method": "ping"})
        check(r.status_code == 401, f"no key: {r.status_code}")
    print(f"auto: {len(tools)} tools over 2026-07-28")


async def failover_mode(url, key, urls):
    base = url.rsplit("/mcp", 1)[0]
    sw = Switch(url)
    async with http_client(key, sw) as hc:
        async with streamable_http_client(url, http_client=hc) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                await call(session, "set_context", {"key": "mcp/failover", "value": "before"})
                await call(session, "register_agent", {"name": "mcp-survivor"})
                print("READY", flush=True)
                line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
                verb, target = line.split()
                check(verb == "SWITCH", f"unexpected instruction {line!r}")
                sw.backend = target + "/mcp"
                got = await call(session, "get_context", {"key": "mcp/failover"})
                check(got["value"] == "before", f"context after failover {got}")
                await call(session, "set_context", {"key": "mcp/failover", "value": "after"})
                await call(session, "send_message", {"to": "agent:mcp-survivor", "body": 1,
                                                     "idempotency_key": "survivor-1"})
                ev = await call(session, "wait_for_events",
                                {"agent": "mcp-survivor", "include_tasks": False, "timeout_ms": 0})
                check(len(ev["messages"]) == 1, f"events after failover {ev}")
                await list_all_tools(session)
    check(len(sw.sessions) == 1, f"one session before and after the failover: {sw.sessions}")
    await session_is_gone(key, next(iter(sw.sessions)), [u for u in urls if u != base])
    print("failover: the session continued on another node")


def main():
    mode, url, key = sys.argv[1], sys.argv[2], sys.argv[3]
    urls = sys.argv[4].split(",") if len(sys.argv) > 4 else [url.rsplit("/mcp", 1)[0]]
    run = {
        "session": lambda: session_mode(url, key, urls),
        "skills": lambda: skill_mode(url, key),
        "auto": lambda: auto_mode(url, key),
        "failover": lambda: failover_mode(url, key, urls),
    }[mode]
    asyncio.run(run())


if __name__ == "__main__":
    main()
