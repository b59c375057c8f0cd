//! Service host names as resources write them (`reviews`, `reviews.shop`,
//! `reviews.shop.svc`, or the FQDN), expanded to FQDNs.

/// The FQDN of `host` written in a resource of namespace `ns`.
///
/// Istio expands a name without dots in the resource's namespace. Like the
/// control plane (which decides which resources reach this waypoint), we
/// also read `name.ns` and `name.ns.svc` as Kubernetes DNS does; anything
/// else with dots is taken as an FQDN.
pub(crate) fn resolve(host: &str, ns: &str, cluster_domain: &str) -> String {
    let suffix = format!(".svc.{cluster_domain}");
    if host.ends_with(&suffix) {
        return host.to_owned();
    }
    if let Some(short) = host.strip_suffix(".svc")
        && let Some((name, other_ns)) = short.split_once('.')
        && !other_ns.contains('.')
    {
        return format!("{name}.{other_ns}{suffix}");
    }
    match host.split_once('.') {
        None => format!("{host}.{ns}{suffix}"),
        Some((name, other_ns)) if !other_ns.contains('.') => format!("{name}.{other_ns}{suffix}"),
        Some(_) => host.to_owned(),
    }
}

/// The FQDN of Service `name` in namespace `ns`.
pub(crate) fn service_fqdn(name: &str, ns: &str, cluster_domain: &str) -> String {
    format!("{name}.{ns}.svc.{cluster_domain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_expand_in_the_resource_namespace() {
        let d = "cluster.local";
        assert_eq!(
            resolve("reviews", "shop", d),
            "reviews.shop.svc.cluster.local"
        );
        assert_eq!(
            resolve("reviews.other", "shop", d),
            "reviews.other.svc.cluster.local"
        );
        assert_eq!(
            resolve("reviews.other.svc", "shop", d),
            "reviews.other.svc.cluster.local"
        );
        assert_eq!(
            resolve("reviews.other.svc.cluster.local", "shop", d),
            "reviews.other.svc.cluster.local"
        );
        assert_eq!(resolve("example.com.io", "shop", d), "example.com.io");
        assert_eq!(
            resolve("reviews", "shop", "corp.example"),
            "reviews.shop.svc.corp.example"
        );
    }
}
