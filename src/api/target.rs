//! What a scenario acts on. Its steps get the namespace as `TITAN_TARGET_NAMESPACE`; the
//! addresses of its restores and probes may name it as `$(TITAN_TARGET_NAMESPACE)`, so that
//! the same scenario recovers production and runs as a drill in a namespace of its own.

use super::disaster_recovery::{DisasterRecoverySpec, Step};

/// How an address names the namespace a run acts on, e.g.
/// `titan-redis.$(TITAN_TARGET_NAMESPACE).svc:6379` (the spelling of the kubelet's
/// variable references).
pub const TARGET_NAMESPACE_REF: &str = "$(TITAN_TARGET_NAMESPACE)";

/// Where a restore or a probe of the scenario reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint<'a> {
    pub step: &'a str,
    /// Whether the step writes there (a restore) or only reads (a probe).
    pub writes: bool,
    /// The field and its value, e.g. `restore.redis.address titan-redis.titan.svc:6379`.
    pub what: String,
    /// The cluster namespace it is in, when it names one (a Service host or a probe's
    /// namespace).
    pub namespace: Option<&'a str>,
}

impl DisasterRecoverySpec {
    /// This scenario acting on `namespace`: `targetNamespace` is it, and every
    /// `$(TITAN_TARGET_NAMESPACE)` in a restore's or probe's address is replaced by it.
    pub fn acting_on(&self, namespace: &str) -> Self {
        let mut spec = self.clone();
        spec.target_namespace = Some(namespace.to_owned());
        let steps = spec
            .steps
            .iter_mut()
            .chain(&mut spec.validations)
            .chain(&mut spec.rollback);
        for step in steps {
            for field in addresses_mut(step) {
                *field = field.replace(TARGET_NAMESPACE_REF, namespace);
            }
        }
        spec
    }

    /// Every address its restores and probes reach.
    pub fn endpoints(&self) -> Vec<Endpoint<'_>> {
        let steps = self
            .steps
            .iter()
            .chain(&self.validations)
            .chain(&self.rollback);
        let mut found = Vec::new();
        for step in steps {
            let step_name = step.name.as_str();
            let redis_restore = step.restore.as_ref().and_then(|r| r.redis.as_ref());
            if let Some(redis) = redis_restore {
                found.push(Endpoint {
                    step: step_name,
                    writes: true,
                    what: format!("restore.redis.address {}", redis.address),
                    namespace: service_namespace(host_of(&redis.address)),
                });
            }
            let Some(probe) = &step.probe else { continue };
            let mut read = |what: String, namespace| {
                found.push(Endpoint {
                    step: step_name,
                    writes: false,
                    what,
                    namespace,
                })
            };
            if let Some(redis) = &probe.redis {
                let namespace = service_namespace(host_of(&redis.address));
                read(format!("probe.redis.address {}", redis.address), namespace);
            }
            if let Some(http) = &probe.http {
                let namespace = service_namespace(host_of(&http.url));
                read(format!("probe.http.url {}", http.url), namespace);
            }
            if let Some(namespace) = probe
                .kubernetes
                .as_ref()
                .and_then(|k| k.namespace.as_deref())
            {
                read(
                    format!("probe.kubernetes.namespace {namespace}"),
                    Some(namespace),
                );
            }
        }
        found
    }
}

/// The address fields of a step that may name the target namespace.
fn addresses_mut(step: &mut Step) -> Vec<&mut String> {
    let mut fields = Vec::new();
    if let Some(redis) = step.restore.as_mut().and_then(|r| r.redis.as_mut()) {
        fields.push(&mut redis.address);
    }
    if let Some(probe) = step.probe.as_mut() {
        if let Some(redis) = probe.redis.as_mut() {
            fields.push(&mut redis.address);
        }
        if let Some(http) = probe.http.as_mut() {
            fields.push(&mut http.url);
        }
        if let Some(kubernetes) = probe.kubernetes.as_mut() {
            fields.extend(kubernetes.namespace.as_mut());
        }
    }
    fields
}

/// The host of `host:port` or of a URL.
fn host_of(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        // An IPv6 literal is never a Service name.
        return host_port;
    }
    host_port.split(':').next().unwrap_or_default()
}

/// The namespace of a Service host: `svc.ns`, `svc.ns.svc` or `svc.ns.svc.<cluster domain>`;
/// none for a bare name (the pod's own namespace), an IP or another host.
fn service_namespace(host: &str) -> Option<&str> {
    let labels: Vec<&str> = host.split('.').collect();
    let service_like = match labels.as_slice() {
        [_, ns] => !ns.bytes().all(|b| b.is_ascii_digit()),
        [_, _, "svc", ..] => true,
        _ => false,
    };
    service_like.then(|| labels[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DisasterRecoverySpec {
        serde_yaml::from_str(
            "scenario: s\ntargetNamespace: titan\nsteps:\n  - {name: r, restore: {backup: b, redis: {address: 'titan-redis.$(TITAN_TARGET_NAMESPACE).svc:6379'}}}\nvalidations:\n  - {name: h, probe: {http: {url: 'http://user@titan-shared.$(TITAN_TARGET_NAMESPACE).svc.cluster.local:3000/health'}}}\n  - {name: k, probe: {kubernetes: {kind: Deployment, namespace: $(TITAN_TARGET_NAMESPACE)}}}\n  - {name: p, probe: {redis: {address: '10.0.0.1:6379'}}}\n",
        )
        .unwrap()
    }

    #[test]
    fn the_target_namespace_is_written_into_every_address() {
        let drill = spec().acting_on("titan-7-drill");
        assert_eq!(drill.target_namespace.as_deref(), Some("titan-7-drill"));
        let found: Vec<_> = drill
            .endpoints()
            .into_iter()
            .map(|e| (e.step, e.writes, e.namespace))
            .collect();
        assert_eq!(
            found,
            [
                ("r", true, Some("titan-7-drill")),
                ("h", false, Some("titan-7-drill")),
                ("k", false, Some("titan-7-drill")),
                ("p", false, None),
            ]
        );
        let restore = &drill.steps[0].restore.as_ref().unwrap().redis;
        assert_eq!(
            restore.as_ref().unwrap().address,
            "titan-redis.titan-7-drill.svc:6379"
        );
    }

    #[test]
    fn service_hosts_name_their_namespace_and_other_hosts_none() {
        for (host, namespace) in [
            ("redis", None),
            ("redis.titan", Some("titan")),
            ("redis.titan.svc", Some("titan")),
            ("redis.titan.svc.cluster.local", Some("titan")),
            ("example.com", Some("com")),
            ("www.example.com", None),
            ("10.0.0.1", None),
            ("[::1]", None),
        ] {
            assert_eq!(service_namespace(host), namespace, "{host}");
        }
        assert_eq!(host_of("https://a.b.svc:8443/x?y"), "a.b.svc");
        assert_eq!(host_of("redis.titan.svc:6379"), "redis.titan.svc");
    }
}
