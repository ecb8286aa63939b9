//! The read-only calls: status, listings with their filters, and the stats
//! skeletons; and the conversion of pods and containers to CRI messages.

use std::collections::HashMap;

use crisp_proto::cri;

use super::runtime::{Ctr, CtrState, Pod, PodState, Runtime};
use crate::grpc::Status;

/// Reasons containerd reports for an exited container whose exit carried
/// none.
pub const COMPLETED_REASON: &str = "Completed";
pub const ERROR_REASON: &str = "Error";

/// Most items in one message of a `Stream*` call (containerd's batch).
pub const STREAM_BATCH_ITEMS: usize = 5000;
/// Most encoded bytes of items in one message of a `Stream*` call: well
/// under the 16 MiB kubelet accepts per message, and under the 4 MiB
/// gRPC clients accept by default.
pub const STREAM_BATCH_BYTES: usize = 1 << 20;

/// Cut a listing into the messages of its `Stream*` twin, as CRI v1.36
/// asks: every batch holds at least one item (an item above the byte
/// budget goes alone), every item is in exactly one batch, in order; an
/// empty listing is no batch at all (the stream just ends).
pub fn stream_batches<T: prost::Message>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut batches = Vec::new();
    let mut batch: Vec<T> = Vec::new();
    let mut bytes = 0usize;
    for item in items {
        // Each repeated item costs its length prefix and tag too.
        let size = item.encoded_len() + 8;
        if !batch.is_empty()
            && (batch.len() >= STREAM_BATCH_ITEMS || bytes + size > STREAM_BATCH_BYTES)
        {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push(item);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

/// Whether every `selector` label is present in `labels` with the same
/// value (an empty selector matches everything).
pub fn matches_labels(
    selector: &HashMap<String, String>,
    labels: &HashMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A flat JSON object from already-encoded values.
fn json_object(fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{v}", crate::json::string(k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// The fields of the four List* filters (each has some of them), so that
/// one selection serves every listing.
trait ListFilter {
    fn id(&self) -> &str;
    fn pod_sandbox_id(&self) -> &str {
        ""
    }
    fn state(&self) -> Option<i32> {
        None
    }
    fn label_selector(&self) -> &HashMap<String, String>;
}

impl ListFilter for cri::PodSandboxFilter {
    fn id(&self) -> &str {
        &self.id
    }
    fn state(&self) -> Option<i32> {
        self.state.as_ref().map(|s| s.state)
    }
    fn label_selector(&self) -> &HashMap<String, String> {
        &self.label_selector
    }
}

impl ListFilter for cri::ContainerFilter {
    fn id(&self) -> &str {
        &self.id
    }
    fn pod_sandbox_id(&self) -> &str {
        &self.pod_sandbox_id
    }
    fn state(&self) -> Option<i32> {
        self.state.as_ref().map(|s| s.state)
    }
    fn label_selector(&self) -> &HashMap<String, String> {
        &self.label_selector
    }
}

impl ListFilter for cri::ContainerStatsFilter {
    fn id(&self) -> &str {
        &self.id
    }
    fn pod_sandbox_id(&self) -> &str {
        &self.pod_sandbox_id
    }
    fn label_selector(&self) -> &HashMap<String, String> {
        &self.label_selector
    }
}

impl ListFilter for cri::PodSandboxStatsFilter {
    fn id(&self) -> &str {
        &self.id
    }
    fn label_selector(&self) -> &HashMap<String, String> {
        &self.label_selector
    }
}

/// A List* filter with its IDs resolved: every set field must match; an
/// absent filter matches everything.
struct Selection<'a> {
    id: Option<String>,
    pod_id: Option<String>,
    state: Option<i32>,
    labels: Option<&'a HashMap<String, String>>,
}

impl Selection<'_> {
    fn matches(
        &self,
        id: &str,
        pod_id: &str,
        state: i32,
        labels: &HashMap<String, String>,
    ) -> bool {
        self.id.as_deref().is_none_or(|want| id == want)
            && self.pod_id.as_deref().is_none_or(|want| pod_id == want)
            && self.state.is_none_or(|want| state == want)
            && self.labels.is_none_or(|want| matches_labels(want, labels))
    }
}

impl Runtime {
    /// `filter` with its IDs resolved: a unique prefix becomes the full
    /// ID; `normalize_id` does that for the listed kind.
    fn selection<'a, F: ListFilter>(
        &self,
        filter: Option<&'a F>,
        normalize_id: fn(&Runtime, &str) -> String,
    ) -> Selection<'a> {
        Selection {
            id: filter
                .map(ListFilter::id)
                .filter(|id| !id.is_empty())
                .map(|id| normalize_id(self, id)),
            pod_id: filter
                .map(ListFilter::pod_sandbox_id)
                .filter(|id| !id.is_empty())
                .map(|id| self.normalize_pod_id(id)),
            state: filter.and_then(ListFilter::state),
            labels: filter.map(ListFilter::label_selector),
        }
    }

    /// The visible pod sandboxes `filter` selects, sorted by ID.
    fn select_pods<'a, F: ListFilter>(
        &'a self,
        filter: Option<&'a F>,
    ) -> impl Iterator<Item = &'a Pod> + 'a {
        let sel = self.selection(filter, Runtime::normalize_pod_id);
        self.pods.values().filter(move |p| {
            p.visible() && sel.matches(&p.id, &p.id, p.cri_state() as i32, &p.config.labels)
        })
    }

    /// The visible containers `filter` selects, sorted by ID.
    fn select_ctrs<'a, F: ListFilter>(
        &'a self,
        filter: Option<&'a F>,
    ) -> impl Iterator<Item = &'a Ctr> + 'a {
        let sel = self.selection(filter, Runtime::normalize_ctr_id);
        self.ctrs.values().filter(move |c| {
            c.visible() && sel.matches(&c.id, &c.pod_id, c.state.cri() as i32, &c.config.labels)
        })
    }
}

impl Runtime {
    pub(crate) fn pod_status_of(&self, p: &Pod) -> cri::PodSandboxStatus {
        // A stopped sandbox's network is torn down: no IP, as containerd.
        let (ip, additional_ips) = if p.state == PodState::Stopped {
            (String::new(), Vec::new())
        } else {
            (
                p.ip.clone(),
                p.additional_ips
                    .iter()
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            )
        };
        let namespace_options = p
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone());
        cri::PodSandboxStatus {
            id: p.id.clone(),
            metadata: p.config.metadata.clone(),
            state: p.cri_state() as i32,
            created_at: p.created_at,
            network: Some(cri::PodSandboxNetworkStatus { ip, additional_ips }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: namespace_options,
                }),
            }),
            labels: p.config.labels.clone(),
            annotations: p.config.annotations.clone(),
            runtime_handler: p.runtime_handler.clone(),
        }
    }

    fn pod_summary(p: &Pod) -> cri::PodSandbox {
        cri::PodSandbox {
            id: p.id.clone(),
            metadata: p.config.metadata.clone(),
            state: p.cri_state() as i32,
            created_at: p.created_at,
            labels: p.config.labels.clone(),
            annotations: p.config.annotations.clone(),
            runtime_handler: p.runtime_handler.clone(),
        }
    }

    pub(crate) fn container_status_of(c: &Ctr) -> cri::ContainerStatus {
        let mut reason = c.reason.clone();
        if c.state == CtrState::Exited && reason.is_empty() {
            reason = if c.exit_code == 0 {
                COMPLETED_REASON
            } else {
                ERROR_REASON
            }
            .to_owned();
        }
        cri::ContainerStatus {
            id: c.id.clone(),
            metadata: c.config.metadata.clone(),
            state: c.state.cri() as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            reason,
            message: c.message.clone(),
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            mounts: c.config.mounts.clone(),
            log_path: c.log_path.clone(),
            resources: c
                .config
                .linux
                .as_ref()
                .and_then(|l| l.resources.clone())
                .map(|r| cri::ContainerResources {
                    linux: Some(r),
                    windows: None,
                }),
            image_id: c.image_id.clone(),
            user: c.user.clone(),
            stop_signal: effective_stop_signal(c),
        }
    }

    fn container_summary(c: &Ctr) -> cri::Container {
        cri::Container {
            id: c.id.clone(),
            pod_sandbox_id: c.pod_id.clone(),
            metadata: c.config.metadata.clone(),
            image: c.config.image.clone(),
            image_ref: c.image_ref.clone(),
            state: c.state.cri() as i32,
            created_at: c.created_at,
            labels: c.config.labels.clone(),
            annotations: c.config.annotations.clone(),
            image_id: c.image_id.clone(),
        }
    }

    fn container_stats_skeleton(c: &Ctr) -> cri::ContainerStats {
        cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: c.id.clone(),
                metadata: c.config.metadata.clone(),
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
            }),
            ..Default::default()
        }
    }

    fn visible_ctrs_of<'a>(&'a self, pod_id: &'a str) -> impl Iterator<Item = &'a Ctr> + 'a {
        self.ctrs
            .values()
            .filter(move |c| c.visible() && c.pod_id == pod_id)
    }

    pub(crate) fn container_statuses_of_pod(&self, pod_id: &str) -> Vec<cri::ContainerStatus> {
        self.visible_ctrs_of(pod_id)
            .map(Runtime::container_status_of)
            .collect()
    }

    fn pod_stats_skeleton(&self, p: &Pod) -> cri::PodSandboxStats {
        cri::PodSandboxStats {
            attributes: Some(cri::PodSandboxAttributes {
                id: p.id.clone(),
                metadata: p.config.metadata.clone(),
                labels: p.config.labels.clone(),
                annotations: p.config.annotations.clone(),
            }),
            linux: Some(cri::LinuxPodSandboxStats {
                containers: self
                    .visible_ctrs_of(&p.id)
                    .map(Runtime::container_stats_skeleton)
                    .collect(),
                ..Default::default()
            }),
            windows: None,
        }
    }

    /// ListPodSandbox. The filter's `id` may be a unique prefix; a prefix
    /// that matches nothing or several sandboxes matches none. All set
    /// filter fields must match. Sorted by ID.
    pub fn list_pod_sandbox(
        &self,
        req: &cri::ListPodSandboxRequest,
    ) -> cri::ListPodSandboxResponse {
        let items = self
            .select_pods(req.filter.as_ref())
            .map(Runtime::pod_summary)
            .collect();
        cri::ListPodSandboxResponse { items }
    }

    /// PodSandboxStatus, by ID or unique prefix. `containers_statuses` and
    /// `timestamp` (= `now`) are filled for kubelet's evented PLEG.
    pub fn pod_sandbox_status(
        &self,
        req: &cri::PodSandboxStatusRequest,
        now: i64,
    ) -> Result<cri::PodSandboxStatusResponse, Status> {
        let id = self.resolve_pod(&req.pod_sandbox_id)?;
        let Some(p) = self.pods.get(&id) else {
            return Err(Status::not_found(format!("pod sandbox {id:?} not found")));
        };
        let mut info = HashMap::new();
        if req.verbose {
            let state = match p.state {
                PodState::Creating => "creating",
                PodState::Ready => "ready",
                PodState::Exited => "exited",
                PodState::Stopped => "stopped",
            };
            info.insert(
                "info".to_owned(),
                json_object(&[
                    ("id", crate::json::string(&p.id)),
                    ("name", crate::json::string(&p.name)),
                    ("pid", p.pid.to_string()),
                    ("state", crate::json::string(state)),
                    ("netnsPath", crate::json::string(&p.netns_path)),
                    ("runtimeHandler", crate::json::string(&p.runtime_handler)),
                ]),
            );
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(self.pod_status_of(p)),
            info,
            containers_statuses: self.container_statuses_of_pod(&id),
            timestamp: now,
        })
    }

    /// The images containers use, by ID: each container's own and the
    /// ones it mounts as volumes. RemoveImage refuses these.
    pub fn images_in_use(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ctrs
            .values()
            .flat_map(|c| {
                [&c.image_ref, &c.image_id]
                    .into_iter()
                    .chain(c.volume_image_ids.iter())
            })
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// ListContainers. `id` and `pod_sandbox_id` may be unique prefixes;
    /// all set filter fields must match. Sorted by ID.
    pub fn list_containers(&self, req: &cri::ListContainersRequest) -> cri::ListContainersResponse {
        let containers = self
            .select_ctrs(req.filter.as_ref())
            .map(Runtime::container_summary)
            .collect();
        cri::ListContainersResponse { containers }
    }

    /// ContainerStatus, by ID or unique prefix.
    pub fn container_status(
        &self,
        req: &cri::ContainerStatusRequest,
    ) -> Result<cri::ContainerStatusResponse, Status> {
        let id = self.resolve_ctr(&req.container_id)?;
        let Some(c) = self.ctrs.get(&id) else {
            return Err(Status::not_found(format!("container {id:?} not found")));
        };
        let mut info = HashMap::new();
        if req.verbose {
            info.insert(
                "info".to_owned(),
                json_object(&[
                    ("id", crate::json::string(&c.id)),
                    ("sandboxID", crate::json::string(&c.pod_id)),
                    ("name", crate::json::string(&c.name)),
                    ("pid", c.pid.to_string()),
                    ("logPath", crate::json::string(&c.log_path)),
                    ("removing", c.remove_action.is_some().to_string()),
                ]),
            );
        }
        Ok(cri::ContainerStatusResponse {
            status: Some(Runtime::container_status_of(c)),
            info,
        })
    }

    /// ContainerStats: the container's attributes; the frontend fills in
    /// the usage (cpu, memory, writable layer, ...) from the host.
    pub fn container_stats(
        &self,
        req: &cri::ContainerStatsRequest,
    ) -> Result<cri::ContainerStatsResponse, Status> {
        let id = self.resolve_ctr(&req.container_id)?;
        let stats = self.ctrs.get(&id).map(Runtime::container_stats_skeleton);
        Ok(cri::ContainerStatsResponse { stats })
    }

    /// ListContainerStats: one skeleton (attributes only) per matching
    /// container, for the frontend to fill in. Filtered like
    /// [`Runtime::list_containers`] (no state field).
    pub fn list_container_stats(
        &self,
        req: &cri::ListContainerStatsRequest,
    ) -> cri::ListContainerStatsResponse {
        let stats = self
            .select_ctrs(req.filter.as_ref())
            .map(Runtime::container_stats_skeleton)
            .collect();
        cri::ListContainerStatsResponse { stats }
    }

    /// PodSandboxStats: the sandbox's attributes and its containers'
    /// skeletons, for the frontend to fill in.
    pub fn pod_sandbox_stats(
        &self,
        req: &cri::PodSandboxStatsRequest,
    ) -> Result<cri::PodSandboxStatsResponse, Status> {
        let id = self.resolve_pod(&req.pod_sandbox_id)?;
        let stats = self.pods.get(&id).map(|p| self.pod_stats_skeleton(p));
        Ok(cri::PodSandboxStatsResponse { stats })
    }

    /// ListPodSandboxStats: skeletons of the matching READY sandboxes
    /// (containerd, too, skips sandboxes it cannot measure).
    pub fn list_pod_sandbox_stats(
        &self,
        req: &cri::ListPodSandboxStatsRequest,
    ) -> cri::ListPodSandboxStatsResponse {
        let stats = self
            .select_pods(req.filter.as_ref())
            .filter(|p| p.state == PodState::Ready)
            .map(|p| self.pod_stats_skeleton(p))
            .collect();
        cri::ListPodSandboxStatsResponse { stats }
    }
}

/// The signal StopContainer sends, as containerd reports it: the config's,
/// else the image's StopSignal, else SIGTERM.
pub(crate) fn effective_stop_signal(c: &Ctr) -> i32 {
    let default = cri::Signal::RuntimeDefault as i32;
    if c.config.stop_signal != default {
        c.config.stop_signal
    } else if c.image_stop_signal != default {
        c.image_stop_signal
    } else {
        cri::Signal::Sigterm as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_batches_cover_every_item_once_and_none_is_empty() {
        let none: Vec<Vec<cri::Container>> = stream_batches(Vec::new());
        assert!(none.is_empty(), "an empty listing sends no message");
        let ctr = |i: usize| cri::Container {
            id: format!("{i:064}"),
            ..Default::default()
        };
        let items: Vec<_> = (0..STREAM_BATCH_ITEMS * 2 + 3).map(ctr).collect();
        let batches = stream_batches(items.clone());
        assert_eq!(batches.len(), 3);
        assert!(batches.iter().all(|b| !b.is_empty()));
        assert_eq!(batches.concat(), items);
        // The byte budget cuts too; an item larger than it goes alone.
        let big = |i: usize| cri::Container {
            id: format!("{i}"),
            annotations: [("a".to_owned(), "x".repeat(STREAM_BATCH_BYTES / 3))].into(),
            ..Default::default()
        };
        let huge = cri::Container {
            id: "huge".into(),
            annotations: [("a".to_owned(), "x".repeat(STREAM_BATCH_BYTES + 1))].into(),
            ..Default::default()
        };
        let items = vec![big(0), big(1), huge.clone(), big(2), big(3), big(4)];
        let batches = stream_batches(items.clone());
        let sizes: Vec<_> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 1, 2, 1]);
        assert_eq!(batches[1], [huge]);
        assert_eq!(batches.concat(), items);
    }

    #[test]
    fn json_escaping() {
        assert_eq!(
            crate::json::string("a\"b\\c\n\u{1}"),
            "\"a\\\"b\\\\c\\n\\u0001\""
        );
        assert_eq!(
            json_object(&[("a", "1".into()), ("b", crate::json::string("x"))]),
            "{\"a\":1,\"b\":\"x\"}"
        );
    }

    #[test]
    fn label_selector() {
        let labels: HashMap<String, String> = [
            ("app".into(), "web".into()),
            ("tier".into(), "front".into()),
        ]
        .into();
        assert!(matches_labels(&HashMap::new(), &labels));
        assert!(matches_labels(
            &[("app".into(), "web".into())].into(),
            &labels
        ));
        assert!(!matches_labels(
            &[("app".into(), "db".into())].into(),
            &labels
        ));
        assert!(!matches_labels(
            &[("zone".into(), "a".into())].into(),
            &labels
        ));
        assert!(!matches_labels(
            &[("app".into(), "web".into()), ("zone".into(), "a".into())].into(),
            &labels
        ));
    }
}
