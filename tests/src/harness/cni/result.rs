//! Reading a CNI result (spec 1.0 layout) without modelling all of it.

use serde_json::Value;

/// The `ips[].address` entries ("10.244.0.5/24"), in result order.
pub fn result_addresses(result: &Value) -> Vec<String> {
    entries(result, "ips", "address")
}

/// The `interfaces[].name` entries, in result order (the bridge plugin
/// lists bridge, host veth, then the pod's interface).
pub fn result_interfaces(result: &Value) -> Vec<String> {
    entries(result, "interfaces", "name")
}

fn entries(result: &Value, list: &str, field: &str) -> Vec<String> {
    result
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get(field)?.as_str().map(str::to_string))
        .collect()
}
