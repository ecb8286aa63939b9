//! What crispd owns on the host without a record of it, found and removed
//! at start.
//!
//! A pod or container gets its record only once the host work is done
//! (the call answers after that). Killed in between, crispd leaves host
//! state no record names: a sandbox holder, a container's monitor and
//! container, cgroups, mounts (namespaces, rootfs, image volumes), a CNI
//! attachment with its IP lease, files. Each of these is made only after
//! its object's directory and description exist — the intent —
//! (`<runtime_dir>/pods/<id>/sandbox.json` before the pod's cgroup and
//! holder; `<runtime_dir>/containers/<id>/meta.json` before the
//! container's cgroup, mounts and monitor; `<state_dir>/cri/net/<id>.json`
//! before CNI ADD), so an object whose directory or network file has no
//! record is an orphan, and what its files describe says what to undo.
//! Processes are found by their command line too (a holder's
//! `sandbox --id <id>`, a monitor's `<id>`), should one have been forked
//! before its pid was written down. Inside the cgroups of the pods that
//! do have records, a `crisp-<id>` cgroup of no known container (an
//! orphan container's, whose directory went) is ended and removed too.
//!
//! Each removal is logged (warn: it undoes a crash).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crisp_core::cri::is_valid_id;

use super::{cgroup_children, container, kill_and_wait, remove_cgroup, sandbox, Host};

/// The IDs of what the state machine restored from records.
#[derive(Debug, Default)]
pub struct Known {
    pub pods: BTreeSet<String>,
    pub containers: BTreeSet<String>,
}

/// What [`reclaim`] removed, for the log line that sums it up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    pub pods: usize,
    pub containers: usize,
    pub processes: usize,
    pub cgroups: usize,
    pub files: usize,
}

/// Find and remove everything crispd made that `known` does not name.
pub fn reclaim(host: &Host, known: &Known) -> Reclaimed {
    let mut done = Reclaimed::default();
    let run = &host.config.runtime_dir;
    let state = &host.config.state_dir;
    let orphan_ctrs: BTreeSet<String> = ids_in(&run.join("containers"))
        .chain(ids_in(&state.join("containers")))
        .filter(|id| !known.containers.contains(id))
        .collect();
    let net_ids = fs::read_dir(host.records_dir().join("net"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")
                .filter(|id| is_valid_id(id))
                .map(str::to_owned)
        });
    let orphan_pods: BTreeSet<String> = ids_in(&run.join("pods"))
        .chain(net_ids)
        .filter(|id| !known.pods.contains(id))
        .collect();

    // Processes first: what is still starting must not outlive the sweep.
    let orphans: BTreeSet<&str> = orphan_ctrs
        .iter()
        .chain(&orphan_pods)
        .map(String::as_str)
        .collect();
    if !orphans.is_empty() {
        done.processes += kill_processes_of(&orphans);
    }
    for id in &orphan_ctrs {
        tracing::warn!(
            container = %id,
            "reclaiming a container crispd has no record of (its creation was cut short)"
        );
        match container::remove(host, id) {
            Ok(()) => done.containers += 1,
            Err(e) => tracing::warn!(container = %id, error = %e.message, "cannot reclaim"),
        }
    }
    for id in &orphan_pods {
        tracing::warn!(
            pod = %id,
            "reclaiming a pod sandbox crispd has no record of (its creation was cut short)"
        );
        match sandbox::remove(host, id) {
            Ok(()) => done.pods += 1,
            Err(e) => tracing::warn!(pod = %id, error = %e.message, "cannot reclaim"),
        }
    }
    for pod in &known.pods {
        let Some(meta) = sandbox::read_meta(host, pod) else {
            continue;
        };
        done.cgroups += remove_stray_cgroups(host, &meta.pod_cgroup, |x| {
            x == pod || known.containers.contains(x)
        });
    }
    done.files += remove_temporaries(&host.records_dir());
    done.files += remove_temporaries(&host.records_dir().join("net"));
    done
}

/// Entries of `dir` named like a pod or container ID.
fn ids_in(dir: &Path) -> impl Iterator<Item = String> {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_valid_id(n))
}

/// SIGKILL every process of crispd's making (its program's name says
/// `crispd`: holders, monitors, the tiny monitor's `crispd-monitor`) that
/// has one of `ids` as an argument, and wait for each to go. IDs are 256
/// random bits: no other process names them.
fn kill_processes_of(ids: &BTreeSet<&str>) -> usize {
    let me = std::process::id();
    let mut killed = 0;
    let Ok(procs) = fs::read_dir("/proc") else {
        return 0;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let program = args
            .first()
            .map(|a| a.rsplit(|&b| b == b'/').next().unwrap_or(a));
        if !program.is_some_and(|p| p.windows(6).any(|w| w == b"crispd")) {
            continue;
        }
        let Some(id) = args
            .iter()
            .skip(1)
            .find_map(|a| ids.iter().find(|id| id.as_bytes() == *a))
        else {
            continue;
        };
        tracing::warn!(
            pid,
            id = %id,
            command = %String::from_utf8_lossy(&cmdline.split(|&b| b == 0).take(3).collect::<Vec<_>>().join(&b' ')),
            "killing a process of a pod or container crispd has no record of"
        );
        kill_and_wait(pid, id, Duration::from_secs(10));
        killed += 1;
    }
    killed
}

/// End and remove every `crisp-<id>` cgroup directly below `pod_cgroup`
/// whose `<id>` is not kept (`keep`): cgroups crisp made for a holder or a
/// container it no longer knows. Other cgroups there (kubelet's) are left
/// alone. Returns how many it removed.
pub fn remove_stray_cgroups(host: &Host, pod_cgroup: &str, keep: impl Fn(&str) -> bool) -> usize {
    let mut removed = 0;
    for child in cgroup_children(host, pod_cgroup) {
        let Some(id) = child.strip_prefix("crisp-") else {
            continue;
        };
        if keep(id) {
            continue;
        }
        let cg = format!("{pod_cgroup}/{child}");
        tracing::warn!(cgroup = %cg, "removing a cgroup of a pod sandbox or container crispd has no record of");
        match remove_cgroup(host, &cg) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(cgroup = %cg, error = %e.message, "cannot remove"),
        }
    }
    removed
}

/// Remove the temporary files of atomic writes a crash interrupted
/// (`.<name>.tmp-<pid>`) in `dir`.
fn remove_temporaries(dir: &Path) -> usize {
    let mut removed = 0;
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".tmp-") && fs::remove_file(e.path()).is_ok() {
            tracing::info!(file = %e.path().display(), "removed the temporary file of an interrupted write");
            removed += 1;
        }
    }
    removed
}
