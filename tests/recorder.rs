//! A watch that records every Pod added to or deleted from a namespace.

use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, ResourceExt as _, WatchEvent, WatchParams};

use crate::uid_of;

/// What a [`PodRecorder`] saw happen to a Pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The Pod was created.
    Added,
    /// The Pod was removed from the API.
    Deleted,
}

#[derive(Debug, Default)]
struct Journal {
    events: Vec<(Seen, Pod)>,
    error: Option<String>,
}

/// Records, from a watch that starts at the resourceVersion of a list taken when it is
/// created, every Pod added to or deleted from a namespace. Unlike polling, it cannot miss
/// a Pod that exists only briefly (e.g. a sidecar created and deleted again).
pub struct PodRecorder {
    journal: Arc<Mutex<Journal>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodRecorder {
    pub(crate) async fn start(pods: Api<Pod>) -> PodRecorder {
        let mut rv = pods
            .list_metadata(&ListParams::default().limit(1))
            .await
            .expect("list Pods for a resourceVersion")
            .metadata
            .resource_version
            .expect("list resourceVersion");
        let journal = Arc::new(Mutex::new(Journal::default()));
        let sink = journal.clone();
        let task = tokio::spawn(async move {
            let fail = |e: String| sink.lock().expect("journal").error = Some(e);
            loop {
                let wp = WatchParams::default().timeout(120);
                let stream = match pods.watch(&wp, &rv).await {
                    Ok(s) => s,
                    Err(e) => return fail(format!("watch from {rv}: {e}")),
                };
                let mut stream = std::pin::pin!(stream);
                while let Some(event) = stream.next().await {
                    let (seen, pod) = match event {
                        Ok(WatchEvent::Added(p)) => (Some(Seen::Added), p),
                        Ok(WatchEvent::Deleted(p)) => (Some(Seen::Deleted), p),
                        Ok(WatchEvent::Modified(p)) => (None, p),
                        Ok(WatchEvent::Bookmark(b)) => {
                            rv = b.metadata.resource_version;
                            continue;
                        }
                        Ok(WatchEvent::Error(status)) => return fail(format!("watch: {status:?}")),
                        Err(e) => return fail(format!("watch: {e}")),
                    };
                    rv = pod.resource_version().unwrap_or_else(|| rv.clone());
                    if let Some(seen) = seen {
                        sink.lock().expect("journal").events.push((seen, pod));
                    }
                }
            }
        });
        PodRecorder { journal, task }
    }

    /// The Pods seen `seen` so far, in order; panics if the watch failed (the record would
    /// be incomplete).
    pub fn seen(&self, seen: Seen) -> Vec<Pod> {
        let journal = self.journal.lock().expect("journal");
        if let Some(e) = &journal.error {
            panic!("the Pod recorder's watch failed, its record is incomplete: {e}");
        }
        journal
            .events
            .iter()
            .filter(|(s, _)| *s == seen)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Every add and delete seen so far, in order; panics if the watch failed.
    pub fn journal(&self) -> Vec<(Seen, Pod)> {
        let journal = self.journal.lock().expect("journal");
        if let Some(e) = &journal.error {
            panic!("the Pod recorder's watch failed, its record is incomplete: {e}");
        }
        journal.events.clone()
    }

    /// The uids of the Pods named `name` created so far, in order.
    pub fn added_uids(&self, name: &str) -> Vec<String> {
        self.seen(Seen::Added)
            .iter()
            .filter(|p| p.name_any() == name)
            .map(uid_of)
            .collect()
    }
}
