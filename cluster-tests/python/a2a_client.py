"""A2A client check with the official `a2a-sdk` (pinned in scripts/test.sh).

Usage: a2a_client.py <agent endpoint URL>, with CONCLAVE_API_KEY set. Resolves the agent card
from `<url>/.well-known/agent-card.json`, sends one message with `SendMessage`, reads the task
back with `GetTask` and `ListTasks`, and prints a JSON report as its last line. Any mismatch
exits non-zero with the reason.
"""

import asyncio
import json
import os
import sys
import uuid

import httpx
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    TaskState,
)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"check failed: {what}")


async def main(url: str) -> None:
    key = os.environ["CONCLAVE_API_KEY"]
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as http:
        # The card, as any A2A client discovers it (the factory adds `A2A-Version: 1.0`).
        config = ClientConfig(streaming=False, httpx_client=http)
        factory = ClientFactory(config)
        card = await A2ACardResolver(http, url).get_agent_card()
        check(card.name == url.rsplit("/", 1)[-1], f"card name {card.name!r}")
        check(
            any(i.url == url and i.protocol_version == "1.0" for i in card.supported_interfaces),
            f"card interfaces {list(card.supported_interfaces)}",
        )
        check(card.capabilities.streaming, "card says streaming")
        check("bearer" in card.security_schemes, "card names the bearer scheme")
        check(
            card.skills and card.skills[0].id == "summarise",
            f"card skills {list(card.skills)}",
        )

        client = await factory.create_from_url(url)
        request = SendMessageRequest(
            message=Message(
                message_id=str(uuid.uuid4()),
                role=Role.ROLE_USER,
                parts=[Part(text="hello from the a2a-sdk")],
            )
        )
        tasks = [
            event.task
            async for event in client.send_message(request)
            if event.HasField("task")
        ]
        check(len(tasks) == 1, f"one task back, got {tasks}")
        sent = tasks[0]
        check(sent.status.state == TaskState.TASK_STATE_SUBMITTED, f"sent state {sent.status}")

        got = await client.get_task(GetTaskRequest(id=sent.id))
        check(got.id == sent.id, f"GetTask id {got.id}")
        check(got.context_id == sent.context_id, "same context")
        check(
            got.history and got.history[0].parts[0].text == "hello from the a2a-sdk",
            f"history {list(got.history)}",
        )
        listed = await client.list_tasks(ListTasksRequest(page_size=10))
        check([t.id for t in listed.tasks] == [sent.id], f"ListTasks {listed}")
        await client.close()
        print(
            json.dumps(
                {
                    "card_name": card.name,
                    "task_id": sent.id,
                    "context_id": sent.context_id,
                    "get_state": TaskState.Name(got.status.state),
                }
            )
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
