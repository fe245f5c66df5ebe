//! The kinds the server serves: a fixed set of built-in kinds plus every registered CRD.

use crate::{
    error::{ApiError, ApiResult},
    meta::NameRule,
};
use serde_json::Value;
use std::{collections::HashMap, sync::Arc};

/// How a list field merges under server-side apply, from `x-kubernetes-list-type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

/// One served resource (a group + plural), with the behaviour its strategy gives it.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub versions: Vec<String>,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// Custom resources bump `metadata.generation` on spec changes and need a resourceVersion on PUT.
    pub custom: bool,
    /// Whether `metadata.generation` counts spec changes (custom resources and some built-in kinds).
    pub tracks_generation: bool,
    /// The `openAPIV3Schema` of a custom resource's storage version.
    pub schema: Option<Value>,
    /// Whether DELETE answers with the object (custom resources, namespaces) or a `Status`.
    pub returns_deleted_object: bool,
    /// A custom resource's `additionalPrinterColumns` (of its storage version): what `kubectl get`
    /// shows, rendered by the server as a `Table`.
    pub printer_columns: Vec<Value>,
    /// Written through the `core/v1` face of a kind stored in another form (Events): the
    /// validation of that face applies.
    pub core_face: bool,
    /// A custom resource's `selectableFields` (of its storage version), as field-selector
    /// labels: `status.phase` for the JSON path `.status.phase`.
    pub selectable_fields: Vec<String>,
    /// What discovery lists for kubectl: `kubectl get cpcert`, `kubectl get certpilot`.
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
}

impl ResourceType {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool, status: bool) -> Self {
        Self {
            group: group.into(),
            versions: vec![version.into()],
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status_subresource: status,
            custom: false,
            tracks_generation: group == "admissionregistration.k8s.io",
            schema: None,
            printer_columns: Vec::new(),
            core_face: false,
            selectable_fields: Vec::new(),
            short_names: builtin_short_names(plural).iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            returns_deleted_object: plural == "namespaces",
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() { version.to_string() } else { format!("{}/{}", self.group, version) }
    }

    /// `secrets` or `widgets.example.com`, as the API server names a resource in messages.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `Widget.example.com`, as the API server names a kind in 422 messages. Events are core
    /// Events inside the API server whatever API wrote them: plain `Event`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() || (self.group == "events.k8s.io" && self.plural == "events") {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// How `metadata.name` is validated: namespaces are DNS labels, services RFC 1035 labels,
    /// RBAC kinds path segments, everything else (custom resources included) DNS subdomains.
    pub fn name_rule(&self) -> NameRule {
        match (self.group.as_str(), self.plural.as_str()) {
            ("", "namespaces") => NameRule::DnsLabel,
            ("", "services") => NameRule::Dns1035Label,
            (crate::rbac::GROUP, _) => NameRule::PathSegment,
            _ => NameRule::DnsSubdomain,
        }
    }

    /// Field selectors this kind accepts.
    pub fn field_selectors(&self) -> Vec<&str> {
        let fixed: &[&str] = match (self.group.as_str(), self.plural.as_str()) {
            ("", "secrets") => &["metadata.name", "metadata.namespace", "type"],
            ("", "events") => &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.namespace",
                "involvedObject.name",
                "involvedObject.uid",
                "involvedObject.apiVersion",
                "involvedObject.resourceVersion",
                "involvedObject.fieldPath",
                "reason",
                "reportingComponent",
                "source",
                "type",
            ],
            _ => &["metadata.name", "metadata.namespace"],
        };
        fixed.iter().copied().chain(self.selectable_fields.iter().map(String::as_str)).collect()
    }

    /// The schema node for `path` (object keys; list items are entered with `"[]"`).
    pub fn schema_at<'a>(&'a self, path: &[&str]) -> Option<&'a Value> {
        let mut node = self.schema.as_ref()?;
        for part in path {
            node = if *part == "[]" {
                node.get("items")?
            } else {
                node.get("properties")
                    .and_then(|p| p.get(*part))
                    .or_else(|| node.get("additionalProperties").filter(|a| a.is_object()))?
            };
        }
        Some(node)
    }

    /// The list type of the list at `path`; metadata lists and built-in kinds use fixed knowledge.
    pub fn list_type(&self, path: &[&str]) -> ListType {
        match path {
            ["metadata", "ownerReferences"] => return ListType::Map(vec!["uid".into()]),
            ["metadata", "finalizers"] => return ListType::Set,
            ["spec", "ports"] if self.plural == "services" => {
                return ListType::Map(vec!["port".into(), "protocol".into()]);
            }
            _ => {}
        }
        let Some(node) = self.schema_at(path) else {
            return ListType::Atomic;
        };
        match node.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => ListType::Map(
                node.get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|keys| keys.iter().filter_map(|k| k.as_str().map(String::from)).collect())
                    .unwrap_or_default(),
            ),
            _ => ListType::Atomic,
        }
    }

    /// Whether the map at `path` is `x-kubernetes-map-type: atomic` (applied and owned as a whole).
    pub fn map_is_atomic(&self, path: &[&str]) -> bool {
        self.schema_at(path).and_then(|n| n.get("x-kubernetes-map-type")).and_then(Value::as_str) == Some("atomic")
    }
}

/// All served kinds, keyed by (group, plural).
#[derive(Debug, Default, Clone)]
pub struct Registry {
    types: HashMap<(String, String), Arc<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut registry = Self::default();
        for rt in [
            ResourceType::builtin("", "v1", "namespaces", "Namespace", false, true),
            ResourceType::builtin("", "v1", "secrets", "Secret", true, false),
            ResourceType::builtin("", "v1", "configmaps", "ConfigMap", true, false),
            ResourceType::builtin("", "v1", "events", "Event", true, false),
            ResourceType::builtin("", "v1", "services", "Service", true, true),
            ResourceType::builtin("", "v1", "serviceaccounts", "ServiceAccount", true, false),
            ResourceType::builtin("events.k8s.io", "v1", "events", "Event", true, false),
            ResourceType::builtin("coordination.k8s.io", "v1", "leases", "Lease", true, false),
            ResourceType::builtin("networking.k8s.io", "v1", "ingresses", "Ingress", true, true),
            // Enforced by `crate::rbac` for every user outside `system:masters`.
            ResourceType::builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", true, false),
            ResourceType::builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true, false),
            ResourceType::builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false, false),
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "v1",
                "clusterrolebindings",
                "ClusterRoleBinding",
                false,
                false,
            ),
            // Stored, never acted on, for the Helm chart's objects (tests/helm.rs).
            ResourceType::builtin("apps", "v1", "deployments", "Deployment", true, true),
            ResourceType::builtin("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true, true),
            ResourceType::builtin("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", true, false),
            ResourceType::builtin(
                "admissionregistration.k8s.io",
                "v1",
                "validatingadmissionpolicies",
                "ValidatingAdmissionPolicy",
                false,
                true,
            ),
            ResourceType::builtin(
                "admissionregistration.k8s.io",
                "v1",
                "validatingadmissionpolicybindings",
                "ValidatingAdmissionPolicyBinding",
                false,
                false,
            ),
            ResourceType::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                true,
            ),
        ] {
            registry.insert(rt);
        }
        registry
    }

    pub fn insert(&mut self, rt: ResourceType) {
        self.types.insert((rt.group.clone(), rt.plural.clone()), Arc::new(rt));
    }

    pub fn remove(&mut self, group: &str, plural: &str) {
        self.types.remove(&(group.to_string(), plural.to_string()));
    }

    pub fn get(&self, group: &str, version: &str, plural: &str) -> ApiResult<Arc<ResourceType>> {
        self.types
            .get(&(group.to_string(), plural.to_string()))
            .filter(|rt| rt.versions.iter().any(|v| v == version))
            .cloned()
            .ok_or_else(|| ApiError::not_found_path(group, version, plural))
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Builds the served kind for a `CustomResourceDefinition` object.
    pub fn from_crd(crd: &Value) -> ApiResult<ResourceType> {
        let spec = &crd["spec"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let served: Vec<&Value> = spec["versions"]
            .as_array()
            .map(|vs| vs.iter().filter(|v| v["served"].as_bool().unwrap_or(false)).collect())
            .unwrap_or_default();
        let storage = served
            .iter()
            .find(|v| v["storage"].as_bool().unwrap_or(false))
            .ok_or_else(|| ApiError::bad_request("spec.versions: must have exactly one storage version"))?;
        Ok(ResourceType {
            group: text(&spec["group"]),
            versions: served.iter().map(|v| text(&v["name"])).collect(),
            plural: text(&spec["names"]["plural"]),
            kind: text(&spec["names"]["kind"]),
            namespaced: spec["scope"] == "Namespaced",
            status_subresource: storage["subresources"]["status"].is_object(),
            custom: true,
            tracks_generation: true,
            schema: storage["schema"]["openAPIV3Schema"].as_object().map(|o| Value::Object(o.clone())),
            returns_deleted_object: true,
            printer_columns: storage["additionalPrinterColumns"].as_array().cloned().unwrap_or_default(),
            core_face: false,
            selectable_fields: storage["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f["jsonPath"].as_str().map(|p| p.trim_start_matches('.').to_string()))
                .collect(),
            short_names: strings(&spec["names"]["shortNames"]),
            categories: strings(&spec["names"]["categories"]),
        })
    }
}

fn strings(list: &Value) -> Vec<String> {
    list.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(String::from)).collect()
}

/// The short names the real API server's discovery gives built-in kinds.
fn builtin_short_names(plural: &str) -> &'static [&'static str] {
    match plural {
        "customresourcedefinitions" => &["crd", "crds"],
        "namespaces" => &["ns"],
        "configmaps" => &["cm"],
        "services" => &["svc"],
        "events" => &["ev"],
        "ingresses" => &["ing"],
        "serviceaccounts" => &["sa"],
        "pods" => &["po"],
        "deployments" => &["deploy"],
        _ => &[],
    }
}

impl ApiError {
    pub fn not_found_path(group: &str, version: &str, plural: &str) -> Self {
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        ApiError::not_found_plain(format!("the server could not find the requested resource ({plural} {gv})"))
    }
}
