//! Installing `amesh-cni` into a node's CNI config, against real files in
//! throwaway conf, bin and backup dirs.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use amesh_cni::cni::install::{
    ConfigChange, InstallConfig, InstallError, PLUGIN_TYPE, WatchOptions, active_config, install,
    install_config, uninstall, watch_with,
};
use serde_json::{Value, json};

/// Every wait is bounded by this.
const T: Duration = Duration::from_secs(10);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A node's CNI dirs under a unique temp dir, removed on drop (also when
/// the test fails).
struct Node {
    root: PathBuf,
    cfg: InstallConfig,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

const CALICO: &str = r#"{
	"name": "k8s-pod-network",
	"cniVersion": "0.3.1",
	"plugins": [
		{"type": "calico", "datastore_type": "kubernetes", "ipam": {"type": "calico-ipam"}},
		{"type": "portmap", "snat": true, "capabilities": {"portMappings": true}}
	],
	"x-vendor": {"keep": ["me", 1]}
}"#;

const BRIDGE: &str = r#"{"cniVersion": "0.4.0", "name": "bridge", "type": "bridge", "bridge": "cni0",
 "isGateway": true, "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}}
"#;

impl Node {
    fn new(tag: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root =
            std::env::temp_dir().join(format!("amesh-install-{}-{n}-{tag}", std::process::id()));
        let node = Self {
            cfg: InstallConfig {
                bin_dir: root.join("opt/cni/bin"),
                conf_dir: root.join("etc/cni/net.d"),
                plugin_binary: root.join("image/amesh-cni"),
                entry: entry("info"),
                backup_dir: root.join("run/amesh/cni-backup"),
            },
            root,
        };
        let _ = fs::remove_dir_all(&node.root);
        fs::create_dir_all(&node.cfg.bin_dir).unwrap();
        fs::create_dir_all(&node.cfg.conf_dir).unwrap();
        fs::create_dir_all(node.root.join("image")).unwrap();
        fs::write(&node.cfg.plugin_binary, b"\x7fELF fake amesh-cni v1").unwrap();
        node
    }

    fn conf(&self, name: &str) -> PathBuf {
        self.cfg.conf_dir.join(name)
    }

    fn write(&self, name: &str, text: &str) {
        fs::write(self.conf(name), text).unwrap();
    }

    /// As a primary CNI that writes atomically does.
    fn write_by_rename(&self, name: &str, text: &str) {
        let tmp = self.root.join(format!("{name}.primary-tmp"));
        fs::write(&tmp, text).unwrap();
        fs::rename(&tmp, self.conf(name)).unwrap();
    }

    fn json(&self, name: &str) -> Value {
        serde_json::from_slice(&fs::read(self.conf(name)).unwrap()).unwrap()
    }

    /// Every file in the conf dir, name → bytes.
    fn conf_dir(&self) -> BTreeMap<String, Vec<u8>> {
        files_in(&self.cfg.conf_dir)
    }

    fn binary(&self) -> PathBuf {
        self.cfg.bin_dir.join(PLUGIN_TYPE)
    }
}

fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| {
            let e = e.unwrap();
            let bytes = fs::read(e.path()).unwrap_or_default();
            (e.file_name().into_string().unwrap(), bytes)
        })
        .collect()
}

fn entry(level: &str) -> serde_json::Map<String, Value> {
    match json!({"socket": "/var/run/amesh/cni.sock", "logLevel": level}) {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn plugin_types(list: &Value) -> Vec<&str> {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap())
        .collect()
}

fn mtime(path: &Path) -> std::time::SystemTime {
    fs::metadata(path).unwrap().modified().unwrap()
}

fn no_temp_files(node: &Node) {
    for dir in [&node.cfg.conf_dir, &node.cfg.bin_dir, &node.cfg.backup_dir] {
        for name in files_in(dir).keys() {
            assert!(
                !name.ends_with(".amesh-tmp"),
                "{name} left in {}",
                dir.display()
            );
        }
    }
}

/// Polls `check` every 20 ms until it holds, for at most [`T`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !check() {
        assert!(Instant::now() < deadline, "not within {T:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has_our_entry(node: &Node, name: &str) -> bool {
    fs::read(node.conf(name))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .is_some_and(|list| {
            list["plugins"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["type"] == PLUGIN_TYPE))
        })
}

fn fast() -> WatchOptions {
    // A long resync: the tests must pass on inotify events alone.
    WatchOptions {
        debounce: Duration::from_millis(20),
        resync: Duration::from_secs(60),
    }
}

#[test]
fn conflist_gets_our_entry_last_and_a_second_run_writes_nothing() {
    let node = Node::new("conflist");
    node.write("10-calico.conflist", CALICO);
    node.write(
        "99-later.conflist",
        r#"{"name": "later", "plugins": [{"type": "x"}]}"#,
    );
    let conf = node.conf("10-calico.conflist");

    let report = install(&node.cfg).unwrap();
    assert!(report.binary_updated);
    assert_eq!(
        report.config,
        ConfigChange::Written {
            file: conf.clone(),
            converted_from: None
        }
    );
    let list = node.json("10-calico.conflist");
    let original: Value = serde_json::from_str(CALICO).unwrap();
    assert_eq!(plugin_types(&list), ["calico", "portmap", PLUGIN_TYPE]);
    assert_eq!(list["plugins"][0], original["plugins"][0]);
    assert_eq!(list["plugins"][1], original["plugins"][1]);
    assert_eq!(
        list["plugins"][2],
        json!({"type": PLUGIN_TYPE, "socket": "/var/run/amesh/cni.sock", "logLevel": "info"})
    );
    assert_eq!(list["x-vendor"], original["x-vendor"]);
    assert_eq!(list["cniVersion"], "0.3.1");
    assert!(!has_our_entry(&node, "99-later.conflist"));

    // An agent restart.
    let bytes = fs::read(&conf).unwrap();
    let (conf_mtime, bin_mtime) = (mtime(&conf), mtime(&node.binary()));
    let again = install(&node.cfg).unwrap();
    assert!(!again.binary_updated);
    assert_eq!(again.config, ConfigChange::Unchanged { file: conf.clone() });
    assert_eq!(fs::read(&conf).unwrap(), bytes);
    assert_eq!(mtime(&conf), conf_mtime);
    assert_eq!(mtime(&node.binary()), bin_mtime);
    no_temp_files(&node);
}

#[test]
fn new_settings_update_our_entry_in_place() {
    let node = Node::new("update");
    node.write(
        "10-flannel.conflist",
        &json!({"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": true}},
            {"type": PLUGIN_TYPE, "logLevel": "info"},
            {"type": "portmap"}
        ]})
        .to_string(),
    );
    let mut cfg = node.cfg.clone();
    cfg.entry = entry("debug");
    // Whatever `type` the caller gives, ours is forced.
    cfg.entry.insert("type".into(), json!("something-else"));
    install(&cfg).unwrap();
    let list = node.json("10-flannel.conflist");
    assert_eq!(plugin_types(&list), ["flannel", PLUGIN_TYPE, "portmap"]);
    assert_eq!(list["plugins"][1]["logLevel"], "debug");
    assert_eq!(list["plugins"][0]["delegate"], json!({"hairpinMode": true}));
    assert_eq!(
        install_config(&cfg).unwrap(),
        ConfigChange::Unchanged {
            file: node.conf("10-flannel.conflist")
        }
    );
}

#[test]
fn a_lone_conf_is_converted_and_uninstall_brings_it_back_byte_for_byte() {
    let node = Node::new("convert");
    node.write("10-bridge.conf", BRIDGE);
    node.write(
        "99-loopback.conf",
        r#"{"cniVersion": "0.4.0", "name": "lo", "type": "loopback"}"#,
    );
    fs::set_permissions(
        node.conf("10-bridge.conf"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let before = node.conf_dir();

    let report = install(&node.cfg).unwrap();
    let list_path = node.conf("10-bridge.conflist");
    assert_eq!(
        report.config,
        ConfigChange::Written {
            file: list_path.clone(),
            converted_from: Some(node.conf("10-bridge.conf"))
        }
    );
    assert!(!node.conf("10-bridge.conf").exists());
    assert_eq!(
        active_config(&node.cfg.conf_dir).unwrap(),
        Some(list_path.clone())
    );
    assert_eq!(
        node.json("10-bridge.conflist"),
        json!({"cniVersion": "0.4.0", "name": "bridge", "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": true,
             "ipam": {"type": "host-local", "subnet": "10.22.0.0/16"}},
            {"type": PLUGIN_TYPE, "socket": "/var/run/amesh/cni.sock", "logLevel": "info"}
        ]})
    );
    assert_eq!(
        fs::metadata(&list_path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let converted = fs::read(&list_path).unwrap();
    assert_eq!(
        install(&node.cfg).unwrap().config,
        ConfigChange::Unchanged {
            file: list_path.clone()
        }
    );
    assert_eq!(fs::read(&list_path).unwrap(), converted);

    let undone = uninstall(&node.cfg).unwrap();
    assert_eq!(undone.restored, [node.conf("10-bridge.conf")]);
    assert!(undone.stripped.is_empty());
    assert!(undone.binary_removed);
    assert_eq!(node.conf_dir(), before);
    assert_eq!(
        fs::metadata(node.conf("10-bridge.conf"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert!(!node.binary().exists());
    assert!(!node.cfg.backup_dir.exists());
}

#[test]
fn a_conf_rewritten_after_conversion_is_converted_again() {
    let node = Node::new("reconvert");
    node.write("10-bridge.conf", BRIDGE);
    install(&node.cfg).unwrap();
    // The primary writes its `.conf` again: it sorts first, before our list.
    let rewritten = BRIDGE.replace("10.22.0.0/16", "10.23.0.0/16");
    node.write("10-bridge.conf", &rewritten);
    assert_eq!(
        install_config(&node.cfg).unwrap(),
        ConfigChange::Written {
            file: node.conf("10-bridge.conflist"),
            converted_from: Some(node.conf("10-bridge.conf"))
        }
    );
    let list = node.json("10-bridge.conflist");
    assert_eq!(list["plugins"][0]["ipam"]["subnet"], "10.23.0.0/16");
    assert_eq!(plugin_types(&list), ["bridge", PLUGIN_TYPE]);
    // Uninstall gives back the primary's latest `.conf`.
    uninstall(&node.cfg).unwrap();
    assert_eq!(
        node.conf_dir().keys().collect::<Vec<_>>(),
        ["10-bridge.conf"]
    );
    assert_eq!(
        fs::read_to_string(node.conf("10-bridge.conf")).unwrap(),
        rewritten
    );
}

#[test]
fn uninstall_restores_the_original_bytes_of_a_conflist() {
    let node = Node::new("restore");
    // Tabs, key order and no final newline: nothing we would write.
    node.write("10-calico.conflist", CALICO);
    node.write("calico-kubeconfig", "apiVersion: v1\n");
    let before = node.conf_dir();
    install(&node.cfg).unwrap();
    assert_ne!(node.conf_dir(), before);
    // A settings update in between does not lose the original.
    let mut cfg = node.cfg.clone();
    cfg.entry = entry("debug");
    install(&cfg).unwrap();

    let undone = uninstall(&cfg).unwrap();
    assert_eq!(undone.restored, [node.conf("10-calico.conflist")]);
    assert!(undone.binary_removed);
    assert_eq!(node.conf_dir(), before);
    assert!(!node.binary().exists());
    assert!(!cfg.backup_dir.exists());
    // Once more: nothing left to do.
    assert_eq!(uninstall(&cfg).unwrap(), Default::default());
    assert_eq!(node.conf_dir(), before);
}

#[test]
fn uninstall_keeps_changes_made_by_others_and_only_removes_our_entry() {
    let node = Node::new("changed");
    node.write("10-calico.conflist", CALICO);
    install(&node.cfg).unwrap();
    // The primary edits the file, keeping our entry (as Calico's installer
    // does when it merges).
    let mut list = node.json("10-calico.conflist");
    list["plugins"]
        .as_array_mut()
        .unwrap()
        .insert(2, json!({"type": "bandwidth"}));
    node.write("10-calico.conflist", &list.to_string());

    let undone = uninstall(&node.cfg).unwrap();
    assert_eq!(undone.stripped, [node.conf("10-calico.conflist")]);
    assert!(undone.restored.is_empty());
    let after = node.json("10-calico.conflist");
    assert_eq!(plugin_types(&after), ["calico", "portmap", "bandwidth"]);
    assert_eq!(after["x-vendor"], json!({"keep": ["me", 1]}));
    assert!(!node.cfg.backup_dir.exists());
}

#[test]
fn uninstall_without_backups_still_removes_our_entry() {
    // The backup dir is on a tmpfs: a reboot loses it, the conf dir stays.
    let node = Node::new("no-backup");
    node.write("10-calico.conflist", CALICO);
    install(&node.cfg).unwrap();
    fs::remove_dir_all(&node.cfg.backup_dir).unwrap();
    assert_eq!(
        install(&node.cfg).unwrap().config,
        ConfigChange::Unchanged {
            file: node.conf("10-calico.conflist")
        }
    );
    let undone = uninstall(&node.cfg).unwrap();
    assert_eq!(undone.stripped, [node.conf("10-calico.conflist")]);
    let after = node.json("10-calico.conflist");
    assert_eq!(after, serde_json::from_str::<Value>(CALICO).unwrap());
}

#[test]
fn uninstall_where_nothing_is_installed_is_a_no_op() {
    let node = Node::new("nothing");
    node.write("10-calico.conflist", CALICO);
    let before = node.conf_dir();
    assert_eq!(uninstall(&node.cfg).unwrap(), Default::default());
    assert_eq!(node.conf_dir(), before);
    fs::remove_dir_all(&node.root).unwrap();
    assert_eq!(uninstall(&node.cfg).unwrap(), Default::default());
}

#[test]
fn invalid_json_is_an_error_naming_the_file_and_line_and_is_left_untouched() {
    let node = Node::new("invalid");
    let broken = "{\n  \"name\": \"k8s-pod-network\",\n  \"plugins\": [\n    {\"type\": \"calico\",}\n  ]\n}\n";
    node.write("10-calico.conflist", broken);
    let conf = node.conf("10-calico.conflist");
    let err = install(&node.cfg).unwrap_err();
    assert!(matches!(err, InstallError::Json { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{}: not valid JSON: ", conf.display())),
        "{message}"
    );
    assert!(message.contains("line 4"), "{message}");
    assert_eq!(fs::read_to_string(&conf).unwrap(), broken);
    assert_eq!(node.conf_dir().len(), 1);
    assert!(!node.cfg.backup_dir.exists());

    // Valid JSON that is no CNI config is refused the same way.
    node.write(
        "10-calico.conflist",
        r#"{"name": "x", "plugins": {"type": "calico"}}"#,
    );
    let err = install(&node.cfg).unwrap_err().to_string();
    assert_eq!(err, format!("{}: `plugins` is not a list", conf.display()));
}

#[test]
fn a_conversion_that_would_change_the_active_file_is_refused() {
    let node = Node::new("reorder");
    node.write("10-bridge.conf", BRIDGE);
    // Sorts after `10-bridge.conf` but before `10-bridge.conflist`.
    node.write("10-bridge.confa.json", r#"{"name": "x", "type": "x"}"#);
    let before = node.conf_dir();
    let err = install_config(&node.cfg).unwrap_err();
    assert!(matches!(err, InstallError::Conflict { .. }), "{err:?}");
    assert!(err.to_string().contains("10-bridge.confa.json"), "{err}");
    assert_eq!(node.conf_dir(), before);

    // Nor is one that would overwrite someone else's file.
    fs::remove_file(node.conf("10-bridge.confa.json")).unwrap();
    node.write(
        "10-bridge.conflist",
        r#"{"name": "other", "plugins": [{"type": "y"}]}"#,
    );
    let before = node.conf_dir();
    let err = install_config(&node.cfg).unwrap_err();
    assert!(err.to_string().contains("not ours"), "{err}");
    assert_eq!(node.conf_dir(), before);
}

#[test]
fn the_binary_is_copied_atomically_and_only_when_it_differs() {
    let node = Node::new("binary");
    let report = install(&node.cfg).unwrap();
    assert!(report.binary_updated);
    assert_eq!(report.config, ConfigChange::NoConfig);
    let target = node.binary();
    assert_eq!(fs::read(&target).unwrap(), b"\x7fELF fake amesh-cni v1");
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o755
    );

    let unchanged = mtime(&target);
    assert!(!install(&node.cfg).unwrap().binary_updated);
    assert_eq!(mtime(&target), unchanged);

    // A new version replaces the file (a new inode), never writes into the
    // old one: a runtime executing it keeps its bytes.
    let old = node.root.join("old-amesh-cni");
    fs::hard_link(&target, &old).unwrap();
    fs::write(&node.cfg.plugin_binary, b"\x7fELF fake amesh-cni v2").unwrap();
    assert!(install(&node.cfg).unwrap().binary_updated);
    assert_eq!(fs::read(&target).unwrap(), b"\x7fELF fake amesh-cni v2");
    assert_eq!(fs::read(&old).unwrap(), b"\x7fELF fake amesh-cni v1");

    // Same bytes, wrong mode: fixed.
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(install(&node.cfg).unwrap().binary_updated);
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    no_temp_files(&node);
    assert_eq!(files_in(&node.cfg.bin_dir).len(), 1);
}

#[tokio::test]
async fn watch_reinserts_when_the_primary_rewrites_its_config() {
    let node = Node::new("rewrite");
    node.write("10-calico.conflist", CALICO);
    install(&node.cfg).unwrap();
    let watcher = tokio::spawn(watch_with(node.cfg.clone(), fast()));

    // Calico's installer writes in place, without our entry.
    node.write("10-calico.conflist", CALICO);
    eventually("entry re-inserted after an in-place rewrite", || {
        has_our_entry(&node, "10-calico.conflist")
    })
    .await;
    // A rename, with other content.
    let upgraded = CALICO.replace("0.3.1", "1.0.0");
    node.write_by_rename("10-calico.conflist", &upgraded);
    eventually("entry re-inserted after a rename", || {
        has_our_entry(&node, "10-calico.conflist")
    })
    .await;
    assert_eq!(node.json("10-calico.conflist")["cniVersion"], "1.0.0");
    watcher.abort();
    let _ = watcher.await;

    // The backup followed the primary's rewrite: uninstall gives back its
    // latest bytes.
    uninstall(&node.cfg).unwrap();
    assert_eq!(
        fs::read_to_string(node.conf("10-calico.conflist")).unwrap(),
        upgraded
    );
}

#[tokio::test]
async fn watch_inserts_into_a_new_file_that_sorts_first() {
    let node = Node::new("new-first");
    node.write(
        "20-flannel.conflist",
        r#"{"name": "cbr0", "plugins": [{"type": "flannel"}]}"#,
    );
    install(&node.cfg).unwrap();
    let watcher = tokio::spawn(watch_with(node.cfg.clone(), fast()));

    node.write_by_rename(
        "05-cilium.conflist",
        r#"{"name": "cilium", "plugins": [{"type": "cilium-cni"}]}"#,
    );
    eventually("entry inserted into the new first file", || {
        has_our_entry(&node, "05-cilium.conflist")
    })
    .await;
    assert_eq!(
        plugin_types(&node.json("05-cilium.conflist")),
        ["cilium-cni", PLUGIN_TYPE]
    );
    watcher.abort();
    let _ = watcher.await;

    let undone = uninstall(&node.cfg).unwrap();
    assert_eq!(
        undone.restored,
        [
            node.conf("05-cilium.conflist"),
            node.conf("20-flannel.conflist")
        ]
    );
    assert!(!has_our_entry(&node, "20-flannel.conflist"));
}

#[tokio::test]
async fn watch_installs_and_inserts_once_the_primary_writes_its_first_config() {
    let node = Node::new("first-config");
    assert_eq!(install_config(&node.cfg).unwrap(), ConfigChange::NoConfig);
    // The agent runs `watch` alone: it installs the binary too.
    let watcher = tokio::spawn(watch_with(node.cfg.clone(), fast()));
    eventually("binary installed", || node.binary().exists()).await;
    node.write("10-bridge.conf", BRIDGE);
    eventually("lone .conf converted with our entry", || {
        has_our_entry(&node, "10-bridge.conflist") && !node.conf("10-bridge.conf").exists()
    })
    .await;
    watcher.abort();
    let _ = watcher.await;
    uninstall(&node.cfg).unwrap();
    assert_eq!(
        fs::read_to_string(node.conf("10-bridge.conf")).unwrap(),
        BRIDGE
    );
    assert_eq!(node.conf_dir().len(), 1);
}
