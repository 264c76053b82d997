//! A small dataset of every kind (context keys, a topic, tasks) written through one node and
//! checked through any, so tests can assert that data survives what they do to the cluster.
//!
//! Reads in [`Dataset::verify`] retry only transient errors, so a node that is still catching
//! up may answer late but never differently.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::client::NodeClient;
use crate::model::{ContextEntry, Task};
use crate::wait::retry_transient;

/// Deadline of each read in [`Dataset::verify`], retries included.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// A little of everything, written through one node and checked through any.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The context entries as last written (the first one at version 2).
    pub entries: Vec<ContextEntry>,
    /// The topic's name.
    pub topic: String,
    /// Its messages: `(seq, body)`, seqs 1 to 10.
    pub messages: Vec<(u64, Value)>,
    /// An open task and a claimed one.
    pub tasks: Vec<Task>,
}

impl Dataset {
    /// Puts five keys (one twice), creates a topic with ten messages and two tasks (one
    /// claimed with an hour-long lease, so it stays claimed through the test).
    pub async fn write(api: &NodeClient, tag: &str) -> Result<Self> {
        let mut entries = Vec::new();
        for i in 0..5 {
            let key = format!("{tag}-key-{i}");
            entries.push(api.put_context(&key, json!({ "tag": tag, "i": i })).await?);
        }
        let rewritten = json!({ "tag": tag, "i": 0, "rewritten": true });
        entries[0] = api.put_context(&entries[0].key, rewritten).await?;
        ensure!(entries[0].version == 2, "rewrite got {:?}", entries[0]);

        let topic = format!("{tag}-topic");
        api.create_topic(&topic).await?;
        let mut messages = Vec::new();
        for n in 1..=10u64 {
            let body = json!({ "tag": tag, "n": n });
            let published = api.publish(&topic, body.clone()).await?;
            ensure!(published.seq == n, "publish {n} got seq {}", published.seq);
            messages.push((published.seq, body));
        }

        let open = api.create_task(&format!("{tag}-open")).await?;
        let to_claim = api.create_task(&format!("{tag}-claimed")).await?;
        let claimed = api
            .claim_task_with_lease(&to_claim.id, "agent-a", 3600)
            .await?;
        Ok(Dataset {
            entries,
            topic,
            messages,
            tasks: vec![open, claimed],
        })
    }

    /// Reads everything back through `api`, retrying only transient errors.
    pub async fn verify(&self, api: &NodeClient) -> Result<()> {
        for entry in &self.entries {
            let read = retry_transient(VERIFY_TIMEOUT, async || api.get_context(&entry.key).await)
                .await
                .with_context(|| format!("reading {}", entry.key))?;
            ensure!(
                read.value == entry.value && read.version == entry.version,
                "{}: wrote {entry:?}, read {read:?}",
                entry.key
            );
        }
        let page = retry_transient(VERIFY_TIMEOUT, async || {
            api.read_topic_all(&self.topic).await
        })
        .await
        .with_context(|| format!("reading topic {}", self.topic))?;
        let read: Vec<(u64, Value)> = page.items.into_iter().map(|m| (m.seq, m.body)).collect();
        ensure!(read == self.messages, "topic {}: read {read:?}", self.topic);
        for task in &self.tasks {
            let read = retry_transient(VERIFY_TIMEOUT, async || api.get_task(&task.id).await)
                .await
                .with_context(|| format!("reading task {}", task.id))?;
            ensure!(
                read.status == task.status
                    && read.claimed_by == task.claimed_by
                    && read.fencing_token == task.fencing_token,
                "task {}: wrote {task:?}, read {read:?}",
                task.id
            );
        }
        Ok(())
    }
}
