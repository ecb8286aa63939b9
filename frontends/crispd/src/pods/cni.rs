//! Pod networking through CNI plugins (the CNI protocol: the plugin
//! binary is executed with CNI_* variables and the network configuration
//! on stdin, and answers a result, or an error, as JSON on stdout).
//!
//! Every pod gets the loopback plugin, then the first configuration in the
//! CNI conf dir (`.conf`, `.json` or `.conflist`; a list calls each plugin
//! in order, each given the previous one's result). What was set up is
//! written to `<state_dir>/cri/net/<pod>.json` *before* ADD, so a crash
//! at any point still lets StopPodSandbox (DEL) undo it.
//!
//! The pod's port mappings reach the plugins as the `portMappings`
//! runtime capability (CNI spec, "Dynamic plugin specific fields"): only
//! to a plugin whose configuration declares
//! `"capabilities": {"portMappings": true}` (the `portmap` plugin), as
//! `runtimeConfig.portMappings`, on ADD and on DEL (the recorded ones, so
//! a DEL after a crash removes the same rules), as containerd and CRI-O
//! pass them.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{internal, write_failed, Host};
use crate::persist;
use crisp_core::grpc::Status;

/// One network: the plugin configurations to call in order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
    pub ifname: String,
}

/// One port mapping as the `portMappings` capability carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The CRI port mappings in CNI form. Mappings without a host port are
/// left out (they publish nothing; containerd drops them too).
pub fn port_mappings(ports: &[crisp_proto::cri::PortMapping]) -> Vec<PortMapping> {
    use crisp_proto::cri::Protocol;
    ports
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match Protocol::try_from(p.protocol).unwrap_or(Protocol::Tcp) {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
                Protocol::Sctp => "sctp",
            }
            .to_owned(),
            host_ip: p.host_ip.clone(),
        })
        .collect()
}

/// What a pod has (or may have, after a crash) set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodNet {
    pub pod_id: String,
    pub netns: String,
    pub cni_args: String,
    pub networks: Vec<Network>,
    /// Handed to plugins with the `portMappings` capability.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// The last result of each network, once ADD completed.
    #[serde(default)]
    pub results: Vec<Value>,
}

fn loopback() -> Network {
    Network {
        name: "cni-loopback".into(),
        cni_version: "1.0.0".into(),
        plugins: vec![serde_json::json!({"type": "loopback"})],
        ifname: "lo".into(),
    }
}

/// Why a CNI network configuration file is unusable.
#[derive(Debug)]
pub struct LoadError {
    path: PathBuf,
    kind: LoadErrorKind,
}

#[derive(Debug)]
pub enum LoadErrorKind {
    Read(std::io::Error),
    Json(serde_json::Error),
    PluginsNotAList,
    NoPlugins,
    PluginWithoutType,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display();
        match &self.kind {
            LoadErrorKind::Read(e) => write!(f, "{path}: {e}"),
            LoadErrorKind::Json(e) => write!(f, "{path}: invalid JSON: {e}"),
            LoadErrorKind::PluginsNotAList => write!(f, "{path}: \"plugins\" is not a list"),
            LoadErrorKind::NoPlugins => write!(f, "{path}: no plugins"),
            LoadErrorKind::PluginWithoutType => write!(f, "{path}: a plugin without \"type\""),
        }
    }
}

impl std::error::Error for LoadError {}

/// Read a `.conf`/`.json` (one plugin) or `.conflist` file.
pub fn load(path: &Path) -> Result<Network, LoadError> {
    let err = |kind| LoadError {
        path: path.to_owned(),
        kind,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(LoadErrorKind::Read(e)))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| err(LoadErrorKind::Json(e)))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let cni_version = v
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("0.4.0")
        .to_owned();
    let plugins = match v.get("plugins") {
        Some(Value::Array(list)) => list.clone(),
        Some(_) => return Err(err(LoadErrorKind::PluginsNotAList)),
        None => vec![v.clone()],
    };
    if plugins.is_empty() {
        return Err(err(LoadErrorKind::NoPlugins));
    }
    for p in &plugins {
        if p.get("type").and_then(Value::as_str).is_none() {
            return Err(err(LoadErrorKind::PluginWithoutType));
        }
    }
    Ok(Network {
        name,
        cni_version,
        plugins,
        ifname: "eth0".into(),
    })
}

/// Set up the pod's networks in `netns`. Returns the primary IP and the
/// others.
pub fn setup(
    host: &Host,
    pod_id: &str,
    netns: &str,
    config: &crisp_proto::cri::PodSandboxConfig,
) -> Result<(String, Vec<String>), Status> {
    let mut networks = vec![loopback()];
    if let Some(path) = crate::host::cni_config(&host.config.cni_conf_dir) {
        networks.push(
            load(&path).map_err(|e| {
                Status::failed_precondition(format!("CNI network configuration: {e}"))
            })?,
        );
    }
    let cni_args = match config.metadata.as_ref() {
        Some(m) => format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={pod_id};K8S_POD_UID={}",
            m.namespace, m.name, m.uid
        ),
        None => "IgnoreUnknown=1".into(),
    };
    let mut state = PodNet {
        pod_id: pod_id.into(),
        netns: netns.into(),
        cni_args,
        networks,
        port_mappings: port_mappings(&config.port_mappings),
        results: Vec::new(),
    };
    save(host, &state)?;
    let mut ips = Vec::new();
    for i in 0..state.networks.len() {
        let net = state.networks[i].clone();
        let result = call_network(host, &state, &net, "ADD", None)?;
        if net.ifname != "lo" {
            ips.extend(result_ips(&result));
        }
        state.results.push(result);
        save(host, &state)?;
    }
    let mut ips = ips.into_iter();
    let primary = ips.next().unwrap_or_default();
    Ok((primary, ips.collect()))
}

/// Tear down whatever `setup` recorded (DEL, last network first, each
/// list's plugins in reverse). Idempotent: no record, nothing to do.
pub fn teardown(host: &Host, pod_id: &str) -> Result<(), Status> {
    let path = host.net_state(pod_id);
    let state: PodNet = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| internal(format!("cannot read {}", path.display()), e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(internal(format!("cannot read {}", path.display()), e)),
    };
    // With the namespace gone there is nothing in it to undo, but IPAM
    // still holds the address: DEL is called with an empty CNI_NETNS then.
    let mut st = state.clone();
    if !Path::new(&state.netns).exists() {
        st.netns = String::new();
    }
    for (i, net) in state.networks.iter().enumerate().rev() {
        let prev = state.results.get(i).cloned();
        call_network(host, &st, net, "DEL", prev)?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(internal(format!("cannot remove {}", path.display()), e)),
    }
}

fn save(host: &Host, state: &PodNet) -> Result<(), Status> {
    let path = host.net_state(&state.pod_id);
    let bytes = serde_json::to_vec(state).map_err(|e| internal("encode CNI state", e))?;
    persist::write_atomic(&path, &bytes)
        .map_err(|e| write_failed(format_args!("cannot write {}", path.display()), &e))
}

fn call_network(
    host: &Host,
    state: &PodNet,
    net: &Network,
    command: &str,
    del_prev: Option<Value>,
) -> Result<Value, Status> {
    let order: Vec<&Value> = if command == "DEL" {
        net.plugins.iter().rev().collect()
    } else {
        net.plugins.iter().collect()
    };
    let mut prev: Option<Value> = del_prev.clone();
    let mut last = Value::Null;
    for plugin in order {
        let mut conf = plugin.clone();
        if let Some(obj) = conf.as_object_mut() {
            obj.insert("name".into(), Value::String(net.name.clone()));
            obj.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
            match &prev {
                Some(p) if !p.is_null() => {
                    obj.insert("prevResult".into(), p.clone());
                }
                _ => {}
            }
        }
        inject_runtime_config(&mut conf, &state.port_mappings);
        let out = exec_plugin(host, state, net, &conf, command)?;
        if command == "ADD" {
            prev = Some(out.clone());
            last = out;
        } else {
            prev = del_prev.clone();
        }
    }
    Ok(last)
}

/// Whether a plugin configuration declares capability `name`.
fn has_capability(conf: &Value, name: &str) -> bool {
    conf.get("capabilities")
        .and_then(|c| c.get(name))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Add the runtime capabilities the plugin declares to its
/// `runtimeConfig` (keeping whatever else the configuration put there).
fn inject_runtime_config(conf: &mut Value, ports: &[PortMapping]) {
    if !has_capability(conf, "portMappings") {
        return;
    }
    let Some(obj) = conf.as_object_mut() else {
        return;
    };
    let rc = obj
        .entry("runtimeConfig")
        .or_insert_with(|| Value::Object(Default::default()));
    if !rc.is_object() {
        *rc = Value::Object(Default::default());
    }
    if let Some(rc) = rc.as_object_mut() {
        rc.insert(
            "portMappings".into(),
            serde_json::to_value(ports).unwrap_or_default(),
        );
    }
}

fn exec_plugin(
    host: &Host,
    state: &PodNet,
    net: &Network,
    conf: &Value,
    command: &str,
) -> Result<Value, Status> {
    let kind = conf
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if kind.contains('/') || kind.is_empty() {
        return Err(Status::invalid_argument(format!(
            "CNI plugin type {kind:?} is not a plain name"
        )));
    }
    let bin = host.config.cni_bin_dir.join(&kind);
    let timeout = std::time::Duration::from_secs(host.config.cni_timeout_secs.max(1));
    let child = Command::new(&bin)
        // Its own process group: on a timeout the plugin and whatever it
        // started are killed together (a child left holding its stdout
        // would keep the output open).
        .process_group(0)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &state.pod_id)
        .env("CNI_NETNS", &state.netns)
        .env("CNI_IFNAME", &net.ifname)
        .env("CNI_PATH", &host.config.cni_bin_dir)
        .env("CNI_ARGS", &state.cni_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Status::failed_precondition(format!("cannot run CNI plugin {}: {e}", bin.display()))
        })?;
    let input = serde_json::to_vec(conf).map_err(|e| internal("encode CNI config", e))?;
    let out = match wait_with_timeout(child, &input, timeout) {
        Ok(Some(out)) => out,
        Ok(None) => {
            return Err(Status::deadline_exceeded(format!(
                "CNI plugin {kind} {command} on network {:?} did not finish within {}s (cni_timeout_secs) and was killed",
                net.name,
                timeout.as_secs()
            )))
        }
        Err(e) => return Err(internal(format!("CNI plugin {kind}"), e)),
    };
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        let msg = parsed
            .get("msg")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_owned());
        let details = parsed
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(Status::internal(format!(
            "CNI plugin {kind} {command} on network {:?} failed ({}): {msg} {details}",
            net.name, out.status
        )));
    }
    Ok(parsed)
}

/// Feed `input` to the plugin's stdin and collect its output, unless it
/// takes longer than `timeout`: then its process group is killed, and
/// `None`. The plugin is waited for on a thread of its own, so that the
/// usual case costs no polling.
fn wait_with_timeout(
    mut child: std::process::Child,
    input: &[u8],
    timeout: std::time::Duration,
) -> std::io::Result<Option<std::process::Output>> {
    let pgid = i32::try_from(child.id()).ok();
    let (tx, rx) = std::sync::mpsc::channel();
    let input = input.to_vec();
    std::thread::Builder::new()
        .name("crispd-cni".into())
        .spawn(move || {
            if let Some(mut stdin) = child.stdin.take() {
                // A plugin that exits without reading its input is no
                // error here.
                let _ = stdin.write_all(&input);
            }
            let _ = tx.send(child.wait_with_output());
        })?;
    match rx.recv_timeout(timeout) {
        Ok(out) => out.map(Some),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            // Reaped once its output ends (a process outside its group
            // could hold it open: then the thread is left to it).
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
            Ok(None)
        }
    }
}

/// The addresses (without prefix length) of a CNI result, IPv4 first.
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        for ip in ips {
            if let Some(addr) = ip.get("address").and_then(Value::as_str) {
                let a = addr.split('/').next().unwrap_or_default().to_owned();
                if a.contains(':') {
                    v6.push(a);
                } else {
                    v4.push(a);
                }
            }
        }
    }
    v4.extend(v6);
    v4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_addresses_ipv4_first() {
        let r = serde_json::json!({"ips": [
            {"address": "fd00::5/64"}, {"address": "10.88.0.5/24", "gateway": "10.88.0.1"}
        ]});
        assert_eq!(result_ips(&r), vec!["10.88.0.5", "fd00::5"]);
        assert!(result_ips(&Value::Null).is_empty());
    }

    #[test]
    fn port_mappings_only_to_plugins_that_ask() {
        use crisp_proto::cri;
        let ports = port_mappings(&[
            cri::PortMapping {
                protocol: cri::Protocol::Udp as i32,
                container_port: 53,
                host_port: 5353,
                host_ip: "127.0.0.1".into(),
            },
            cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 80,
                host_port: 8080,
                host_ip: String::new(),
            },
            // No host port: nothing to publish.
            cri::PortMapping {
                protocol: cri::Protocol::Tcp as i32,
                container_port: 9000,
                host_port: 0,
                host_ip: String::new(),
            },
        ]);
        let mut portmap = serde_json::json!({
            "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"other": 1},
        });
        inject_runtime_config(&mut portmap, &ports);
        assert_eq!(
            portmap["runtimeConfig"],
            serde_json::json!({"other": 1, "portMappings": [
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
                {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            ]})
        );
        let mut bridge = serde_json::json!({"type": "bridge"});
        inject_runtime_config(&mut bridge, &ports);
        assert_eq!(bridge, serde_json::json!({"type": "bridge"}));
        let mut off =
            serde_json::json!({"type": "portmap", "capabilities": {"portMappings": false}});
        inject_runtime_config(&mut off, &ports);
        assert!(off.get("runtimeConfig").is_none());
        // A record written before port mappings were kept still reads.
        let old: PodNet = serde_json::from_str(
            r#"{"pod_id":"p","netns":"","cni_args":"","networks":[],"results":[]}"#,
        )
        .unwrap();
        assert!(old.port_mappings.is_empty());
    }

    #[test]
    fn conf_and_conflist() {
        let dir = std::env::temp_dir().join(format!("crisp-cni-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let list = dir.join("10-a.conflist");
        std::fs::write(
            &list,
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
        )
        .unwrap();
        let n = load(&list).unwrap();
        assert_eq!(n.plugins.len(), 2);
        assert_eq!(n.name, "n");
        let one = dir.join("20-b.conf");
        std::fs::write(&one, r#"{"cniVersion":"0.4.0","name":"m","type":"bridge"}"#).unwrap();
        assert_eq!(load(&one).unwrap().plugins.len(), 1);
        std::fs::write(&one, r#"{"name":"m"}"#).unwrap();
        assert!(load(&one).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
