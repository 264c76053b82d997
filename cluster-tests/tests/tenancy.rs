//! Workspaces, API keys, users and invitations on a three-node cluster, requests spread over
//! the nodes: keys are shown once and scoped, revoke and rotate bite on every node, another
//! workspace's ids answer 404, settings are validated and read back from any node, and an
//! invitation is read publicly by its token and accepted once. Run `cargo build -p
//! conclave-node` first.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conclave_cluster_tests::http::{expect_status as expect, send};
use conclave_cluster_tests::{wait_until, Cluster, NodeClient};
use reqwest::Method;
use serde_json::{json, Value};

/// How long a change may take to reach a node's meta replica.
const SPREAD: Duration = Duration::from_secs(20);

/// A client of node `index` using `key`.
fn as_key(cluster: &Cluster, index: usize, key: &str) -> Result<NodeClient> {
    cluster.api_with_key(index, Some(key))
}

fn text(v: &Value, field: &str) -> Result<String> {
    v[field]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no string {field} in {v}"))
}

/// Waits until `key` gets `status` from `GET /v1/session/me` on every node.
async fn wait_key_status(cluster: &Cluster, key: &str, status: u16) -> Result<()> {
    for i in 0..cluster.len() {
        let client = as_key(cluster, i, key)?;
        wait_until(
            &format!("key to answer {status} on node {i}"),
            SPREAD,
            async || {
                let (got, _) = send(client.request(Method::GET, &["v1", "session", "me"])).await?;
                Ok(got == status)
            },
        )
        .await?;
    }
    Ok(())
}

/// Creates a key of `scope` through node `index`; its answer (with the secret).
async fn create_key(client: &NodeClient, name: &str, scope: &str) -> Result<Value> {
    let body = expect(
        client
            .request(Method::POST, &["v1", "api-keys"])
            .json(&json!({ "name": name, "scope": scope })),
        201,
    )
    .await?;
    let secret = text(&body, "key")?;
    ensure!(secret.starts_with("ck_"), "secret {secret}");
    ensure!(body["prefix"] == json!(secret[..10]), "prefix of {body}");
    ensure!(body["scope"] == json!(scope), "scope of {body}");
    Ok(body)
}

/// Every item of a meta list, following cursors with pages of `limit`.
async fn list_all(client: &NodeClient, path: &[&str], limit: usize) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = expect(client.request(Method::GET, path).query(&query), 200).await?;
        let batch = page["items"].as_array().context("items")?.clone();
        ensure!(batch.len() <= limit, "page larger than its limit");
        items.extend(batch);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Ok(items),
        }
    }
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_and_revoke_and_rotate_bite_on_every_node() -> Result<()> {
    let mut cluster = Cluster::builder().nodes(3).start().await?;
    let admin = cluster.api(0);

    // Keys of each scope, created through different nodes.
    let read = create_key(cluster.api(0), "reader", "read").await?;
    let full = create_key(cluster.api(1), "writer", "full").await?;
    let admin2 = create_key(cluster.api(2), "second-admin", "admin").await?;
    let (read_secret, full_secret) = (text(&read, "key")?, text(&full, "key")?);
    let admin2_secret = text(&admin2, "key")?;
    for secret in [&read_secret, &full_secret, &admin2_secret] {
        wait_key_status(&cluster, secret, 200).await?;
    }

    // Scopes: a read key reads but writes nothing; a full key writes data but no keys.
    let reader = as_key(&cluster, 1, &read_secret)?;
    let put = |c: &NodeClient| {
        c.request(Method::PUT, &["v1", "context", "scoped"])
            .json(&json!({ "value": 1 }))
    };
    expect(put(&reader), 403).await.context("read key write")?;
    expect(reader.request(Method::GET, &["v1", "workspaces"]), 200).await?;
    let new_key = |c: &NodeClient| {
        c.request(Method::POST, &["v1", "api-keys"])
            .json(&json!({ "name": "x", "scope": "read" }))
    };
    expect(new_key(&reader), 403).await?;
    expect(reader.request(Method::GET, &["v1", "api-keys"]), 403).await?;
    let writer = as_key(&cluster, 2, &full_secret)?;
    expect(put(&writer), 200).await.context("full key write")?;
    expect(new_key(&writer), 403)
        .await
        .context("full key creates keys")?;

    // Bad input changes nothing.
    for body in [
        json!({ "name": "", "scope": "read" }),
        json!({ "name": "ok", "scope": "owner" }),
        json!({ "name": "ok", "scope": "read", "extra": 1 }),
        json!({ "name": "bad name!", "scope": "read" }),
    ] {
        expect(
            admin.request(Method::POST, &["v1", "api-keys"]).json(&body),
            400,
        )
        .await
        .with_context(|| format!("body {body}"))?;
    }

    // The list, read through another node, pages by cursor in creation order and never shows
    // secrets or hashes. Enough keys for two-digit ids.
    let mut bulk = Vec::new();
    for n in 0..7 {
        let key = create_key(cluster.api(n % 3), &format!("bulk-{n}"), "read").await?;
        bulk.push(text(&key, "key")?);
    }
    let listed = list_all(cluster.api(2), &["v1", "api-keys"], 3).await?;
    let listed_ids = ids(&listed);
    let unique: BTreeSet<_> = listed_ids.iter().collect();
    ensure!(unique.len() == listed_ids.len(), "a key listed twice");
    ensure!(
        listed_ids.len() == 11,
        "expected bootstrap + 10 keys: {listed_ids:?}"
    );
    let numbers: Vec<u64> = listed_ids
        .iter()
        .filter_map(|id| id.strip_prefix("key_")?.parse().ok())
        .collect();
    ensure!(
        numbers == (1..=11).collect::<Vec<u64>>(),
        "not in creation order: {listed_ids:?}"
    );
    for k in [&read, &full, &admin2] {
        ensure!(listed_ids.contains(&text(k, "id")?), "{k} not listed");
    }
    let raw = serde_json::to_string(&listed)?;
    for secret in [&read_secret, &full_secret, &admin2_secret]
        .into_iter()
        .chain(&bulk)
    {
        ensure!(!raw.contains(secret.as_str()), "a secret is listed");
    }
    ensure!(
        listed
            .iter()
            .all(|k| k.get("key").is_none() && k.get("hash").is_none()),
        "secret fields listed"
    );
    // No listed value looks like a SHA-256 (64 hex digits).
    let hash_like = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.len() >= 64 && s.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    ensure!(
        listed
            .iter()
            .filter_map(Value::as_object)
            .all(|o| !o.values().any(hash_like)),
        "a hash is listed"
    );
    for limit in ["0", "1001"] {
        expect(
            admin
                .request(Method::GET, &["v1", "api-keys"])
                .query(&[("limit", limit)]),
            400,
        )
        .await?;
    }

    // Revoke on node 0: the key fails on every node once each has applied it; idempotent.
    let full_id = text(&full, "id")?;
    let revoked = expect(
        admin.request(Method::POST, &["v1", "api-keys", &full_id, "revoke"]),
        200,
    )
    .await?;
    ensure!(revoked["revoked_at"].is_u64(), "revoked_at: {revoked}");
    wait_key_status(&cluster, &full_secret, 401).await?;
    let again = expect(
        cluster
            .api(1)
            .request(Method::POST, &["v1", "api-keys", &full_id, "revoke"]),
        200,
    )
    .await?;
    ensure!(
        again["revoked_at"] == revoked["revoked_at"],
        "revoked twice"
    );
    expect(
        admin.request(Method::POST, &["v1", "api-keys", &full_id, "rotate"]),
        409,
    )
    .await
    .context("rotate a revoked key")?;
    let live = expect(
        admin
            .request(Method::GET, &["v1", "api-keys"])
            .query(&[("include_revoked", "false")]),
        200,
    )
    .await?;
    ensure!(
        !ids(live["items"].as_array().context("items")?).contains(&full_id),
        "revoked key listed as live"
    );

    // Rotate through node 1: the old secret dies everywhere, the new one works everywhere.
    let admin2_id = text(&admin2, "id")?;
    let rotated = expect(
        cluster
            .api(1)
            .request(Method::POST, &["v1", "api-keys", &admin2_id, "rotate"]),
        200,
    )
    .await?;
    let new_secret = text(&rotated, "key")?;
    ensure!(new_secret != admin2_secret, "rotation kept the secret");
    ensure!(
        text(&rotated, "id")? == admin2_id,
        "rotation changed the id"
    );
    wait_key_status(&cluster, &admin2_secret, 401).await?;
    wait_key_status(&cluster, &new_secret, 200).await?;
    let me = expect(
        as_key(&cluster, 2, &new_secret)?.request(Method::GET, &["v1", "session", "me"]),
        200,
    )
    .await?;
    ensure!(me["key"]["id"] == json!(admin2_id), "session of {me}");

    // The last live admin key cannot be revoked.
    let boot_me = expect(admin.request(Method::GET, &["v1", "session", "me"]), 200).await?;
    let boot_id = boot_me["key"]["id"].as_str().context("key id")?.to_string();
    let second = as_key(&cluster, 2, &new_secret)?;
    expect(
        second.request(Method::POST, &["v1", "api-keys", &boot_id, "revoke"]),
        200,
    )
    .await?;
    wait_key_status(&cluster, cluster.api_key(), 401).await?;
    let refused = expect(
        second.request(Method::POST, &["v1", "api-keys", &admin2_id, "revoke"]),
        409,
    )
    .await?;
    ensure!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("last live admin")),
        "{refused}"
    );
    wait_key_status(&cluster, &new_secret, 200).await?;

    // A restarted node still knows which secrets are dead: the key index is stored with the
    // meta state it was applied with.
    cluster.stop(1).await?;
    cluster.restart(1).await?;
    for (secret, status) in [
        (&full_secret, 401),
        (&admin2_secret, 401),
        (&new_secret, 200),
        (&read_secret, 200),
    ] {
        let client = as_key(&cluster, 1, secret)?;
        expect(
            client.request(Method::GET, &["v1", "session", "me"]),
            status,
        )
        .await
        .context("after a restart")?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_are_isolated_and_settings_are_validated() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let admin = cluster.api(0);
    let home = cluster.workspace_id().to_string();

    // A second workspace with its own admin key.
    let created = expect(
        cluster
            .api(1)
            .request(Method::POST, &["v1", "workspaces"])
            .json(&json!({ "name": "second", "settings": { "task_mode": "approval" } })),
        201,
    )
    .await?;
    let ws_b = text(&created["workspace"], "id")?;
    ensure!(created["workspace"]["settings"]["task_mode"] == "approval");
    ensure!(created["workspace"]["tenant_id"] == "default");
    let b_secret = text(&created["admin_key"], "key")?;
    ensure!(created["admin_key"]["workspace_id"] == json!(ws_b));
    wait_key_status(&cluster, &b_secret, 200).await?;
    let b = as_key(&cluster, 2, &b_secret)?;
    let me = expect(b.request(Method::GET, &["v1", "session", "me"]), 200).await?;
    ensure!(me["workspace"]["id"] == json!(ws_b), "{me}");

    expect(
        admin
            .request(Method::POST, &["v1", "workspaces"])
            .json(&json!({ "name": "second" })),
        409,
    )
    .await
    .context("duplicate name")?;
    for body in [
        json!({ "name": "" }),
        json!({ "name": "x", "settings": { "task_mode": "never" } }),
    ] {
        expect(
            admin
                .request(Method::POST, &["v1", "workspaces"])
                .json(&body),
            400,
        )
        .await?;
    }

    // Workspace A's ids answer 404 to workspace B's key, and nothing of A changes.
    let a_read = create_key(admin, "a-reader", "read").await?;
    let a_read_id = text(&a_read, "id")?;
    let invitation = expect(
        admin
            .request(Method::POST, &["v1", "invitations"])
            .json(&json!({})),
        201,
    )
    .await?;
    let inv_id = text(&invitation, "id")?;
    for (method, path) in [
        (Method::POST, vec!["v1", "api-keys", &a_read_id, "revoke"]),
        (Method::POST, vec!["v1", "api-keys", &a_read_id, "rotate"]),
        (Method::DELETE, vec!["v1", "invitations", &inv_id]),
    ] {
        expect(b.request(method, &path), 404)
            .await
            .with_context(|| format!("{path:?}"))?;
    }
    expect(
        b.request(Method::PATCH, &["v1", "workspaces", &home, "settings"])
            .json(&json!({ "task_mode": "claim_only" })),
        404,
    )
    .await?;
    let b_keys = list_all(&b, &["v1", "api-keys"], 100).await?;
    ensure!(b_keys.len() == 1, "B sees other keys: {b_keys:?}");
    let b_invs = list_all(&b, &["v1", "invitations"], 100).await?;
    ensure!(b_invs.is_empty(), "B sees A's invitations");
    wait_key_status(&cluster, &text(&a_read, "key")?, 200).await?;
    let a_reader = as_key(&cluster, 1, &text(&a_read, "key")?)?;
    expect(
        a_reader.request(Method::GET, &["v1", "workspaces", &ws_b]),
        404,
    )
    .await?;
    let seen = list_all(&a_reader, &["v1", "workspaces"], 10).await?;
    ensure!(ids(&seen) == vec![home.clone()], "read key sees {seen:?}");
    let tenant = list_all(cluster.api(2), &["v1", "workspaces"], 1).await?;
    ensure!(
        ids(&tenant) == vec![ws_b.clone(), home.clone()],
        "admin sees {tenant:?}"
    );

    // Settings: bad values are refused and change nothing; a good patch is seen on every node.
    for body in [
        json!({ "task_mode": "sometimes" }),
        json!({ "presence_timeout_secs": 1 }),
        json!({ "default_retention_hours": 0 }),
        json!({ "name": "bad name!" }),
        json!({ "colour": "red" }),
        json!([null, null]),
    ] {
        expect(
            admin
                .request(Method::PATCH, &["v1", "workspaces", &home, "settings"])
                .json(&body),
            400,
        )
        .await
        .with_context(|| format!("settings {body}"))?;
    }
    expect(
        a_reader
            .request(Method::PATCH, &["v1", "workspaces", &home, "settings"])
            .json(&json!({ "task_mode": "auto" })),
        403,
    )
    .await?;
    let before = expect(
        cluster
            .api(2)
            .request(Method::GET, &["v1", "workspaces", &home]),
        200,
    )
    .await?;
    // An empty patch changes nothing and answers the workspace as it is.
    let unchanged = expect(
        admin
            .request(Method::PATCH, &["v1", "workspaces", &home, "settings"])
            .json(&json!({})),
        200,
    )
    .await?;
    ensure!(
        unchanged["settings"] == before["settings"] && unchanged["name"] == before["name"],
        "empty patch answered {unchanged}, workspace is {before}"
    );
    ensure!(before["settings"]["task_mode"] == "auto", "{before}");
    ensure!(
        before["settings"]["presence_timeout_secs"] == 30,
        "{before}"
    );
    let patched = expect(
        admin
            .request(Method::PATCH, &["v1", "workspaces", &home, "settings"])
            .json(&json!({ "task_mode": "claim_only", "presence_timeout_secs": 60 })),
        200,
    )
    .await?;
    ensure!(patched["settings"]["task_mode"] == "claim_only");
    for i in 1..3 {
        // The read barrier: visible at once through any node.
        let got = expect(
            cluster
                .api(i)
                .request(Method::GET, &["v1", "workspaces", &home]),
            200,
        )
        .await?;
        ensure!(got["settings"] == patched["settings"], "node {i}: {got}");
        ensure!(got["settings"]["default_retention_hours"] == 168, "{got}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_read_by_token_and_accepted_once() -> Result<()> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let admin = cluster.api(0);
    let anonymous: Vec<NodeClient> = (0..3)
        .map(|i| cluster.api_with_key(i, None))
        .collect::<Result<_>>()?;

    // Bad input is refused.
    for body in [
        json!({ "expires_in_secs": 0 }),
        json!({ "expires_in_secs": 2_592_001 }),
        json!({ "email": "not-an-address" }),
        json!({ "scope": "owner" }),
    ] {
        expect(
            admin
                .request(Method::POST, &["v1", "invitations"])
                .json(&body),
            400,
        )
        .await
        .with_context(|| format!("{body}"))?;
    }

    // Create on node 0, read publicly by token on node 1 at once.
    let inv = expect(
        admin
            .request(Method::POST, &["v1", "invitations"])
            .json(&json!({ "email": "ann@example.com", "scope": "full" })),
        201,
    )
    .await?;
    let (inv_id, token) = (text(&inv, "id")?, text(&inv, "token")?);
    ensure!(token.starts_with("cvi_") && inv_id.starts_with("inv_"));
    let public = expect(
        anonymous[1].request(Method::GET, &["v1", "invitations", &token]),
        200,
    )
    .await?;
    ensure!(public["status"] == "pending", "{public}");
    ensure!(public["workspace"]["id"] == json!(cluster.workspace_id()));
    ensure!(public["email"] == "ann@example.com");
    for other in [inv_id.as_str(), "cvi_00"] {
        expect(
            anonymous[1].request(Method::GET, &["v1", "invitations", other]),
            404,
        )
        .await?;
    }
    let listed = list_all(cluster.api(2), &["v1", "invitations"], 10).await?;
    ensure!(ids(&listed) == vec![inv_id.clone()], "{listed:?}");
    ensure!(
        !serde_json::to_string(&listed)?.contains(&token),
        "token listed"
    );

    // Two accepts race on two nodes: exactly one wins.
    let accept = |i: usize, name: &str| {
        anonymous[i]
            .request(Method::POST, &["v1", "invitations", &token, "accept"])
            .json(&json!({ "name": name }))
    };
    let (a, b) = tokio::join!(send(accept(1, "ann")), send(accept(2, "bob")));
    let (a, b) = (a?, b?);
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    ensure!(statuses == [201, 409], "race answered {a:?} and {b:?}");
    let won = if a.0 == 201 { a.1 } else { b.1 };
    expect(accept(0, "carl"), 409)
        .await
        .context("third accept")?;
    let user_id = text(&won["user"], "id")?;
    ensure!(won["user"]["email"] == "ann@example.com", "{won}");
    ensure!(won["api_key"]["scope"] == "full", "{won}");
    let user_secret = text(&won["api_key"], "key")?;
    wait_key_status(&cluster, &user_secret, 200).await?;
    let me = expect(
        as_key(&cluster, 1, &user_secret)?.request(Method::GET, &["v1", "session", "me"]),
        200,
    )
    .await?;
    ensure!(me["user"]["id"] == json!(user_id), "{me}");
    ensure!(me["key"]["id"] == won["api_key"]["id"], "{me}");
    ensure!(me["key"]["scope"] == "full", "{me}");
    let now = expect(
        anonymous[0].request(Method::GET, &["v1", "invitations", &token]),
        200,
    )
    .await?;
    ensure!(now["status"] == "accepted", "{now}");
    expect(
        admin.request(Method::DELETE, &["v1", "invitations", &inv_id]),
        409,
    )
    .await
    .context("revoke an accepted invitation")?;
    let users = list_all(cluster.api(2), &["v1", "users"], 1).await?;
    ensure!(ids(&users).contains(&user_id), "{users:?}");

    // A revoked invitation is gone for its token.
    let revoked = expect(
        admin
            .request(Method::POST, &["v1", "invitations"])
            .json(&json!({})),
        201,
    )
    .await?;
    let revoked_token = text(&revoked, "token")?;
    let del = expect(
        cluster.api(1).request(
            Method::DELETE,
            &["v1", "invitations", &text(&revoked, "id")?],
        ),
        200,
    )
    .await?;
    ensure!(del["deleted"] == true, "{del}");
    expect(
        anonymous[2].request(Method::GET, &["v1", "invitations", &revoked_token]),
        404,
    )
    .await?;
    expect(
        anonymous[2]
            .request(
                Method::POST,
                &["v1", "invitations", &revoked_token, "accept"],
            )
            .json(&json!({ "name": "eve" })),
        404,
    )
    .await?;

    // An expired invitation is refused.
    let short = expect(
        admin
            .request(Method::POST, &["v1", "invitations"])
            .json(&json!({ "expires_in_secs": 1 })),
        201,
    )
    .await?;
    let short_token = text(&short, "token")?;
    wait_until("the invitation to expire", SPREAD, async || {
        let v = expect(
            anonymous[1].request(Method::GET, &["v1", "invitations", &short_token]),
            200,
        )
        .await?;
        Ok(v["status"] == "expired")
    })
    .await?;
    let refused = expect(
        anonymous[2]
            .request(Method::POST, &["v1", "invitations", &short_token, "accept"])
            .json(&json!({ "name": "late" })),
        409,
    )
    .await?;
    ensure!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("expired")),
        "{refused}"
    );
    let expired = expect(
        admin
            .request(Method::GET, &["v1", "invitations"])
            .query(&[("status", "expired")]),
        200,
    )
    .await?;
    ensure!(
        ids(expired["items"].as_array().context("items")?) == vec![text(&short, "id")?],
        "{expired}"
    );

    // Deleting one's own user revokes its keys on every node; the last admin cannot leave.
    let deleted = expect(
        as_key(&cluster, 2, &user_secret)?.request(Method::DELETE, &["v1", "users", "me"]),
        200,
    )
    .await?;
    ensure!(deleted["id"] == json!(user_id), "{deleted}");
    wait_key_status(&cluster, &user_secret, 401).await?;
    let users = list_all(admin, &["v1", "users"], 100).await?;
    ensure!(!ids(&users).contains(&user_id), "deleted user listed");
    expect(admin.request(Method::DELETE, &["v1", "users", "me"]), 409)
        .await
        .context("last admin deletes itself")?;
    let me = expect(admin.request(Method::GET, &["v1", "session", "me"]), 200).await?;
    ensure!(me["user"]["id"] == "usr_1", "{me}");
    Ok(())
}
