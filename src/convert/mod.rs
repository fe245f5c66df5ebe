//! `certpilot convert`: cert-manager manifests (`cert-manager.io/v1` Certificate, Issuer and
//! ClusterIssuer) rewritten as certpilot ones, with a report of everything that could not be
//! carried over and why. Pure text in, text out: no cluster is consulted.

mod certificate;
mod issuer;
pub mod report;
mod source;
mod values;

use crate::api::{Certificate, ClusterIssuer, Issuer, issuer::ClusterIssuerSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
pub use report::{Finding, Problem, ResourceId};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;
use std::io::{Read, Write};

/// A converted resource (a Certificate is boxed: it is the largest by far).
#[derive(Debug, Clone)]
pub enum Resource {
    Certificate(Box<Certificate>),
    Issuer(Issuer),
    ClusterIssuer(ClusterIssuer),
}

/// The certpilot resources made from the input, and the report.
#[derive(Debug, Default)]
pub struct Conversion {
    pub resources: Vec<Resource>,
    pub findings: Vec<Finding>,
}

/// The input is not YAML.
#[derive(Debug, thiserror::Error)]
#[error("not YAML: {0}")]
pub struct ReadError(String);

impl Conversion {
    /// Whether everything in the input is in the output, as it was meant.
    pub fn is_complete(&self) -> bool {
        !self.findings.iter().any(Finding::is_loss)
    }

    /// The resources as one multi-document YAML stream.
    pub fn manifests(&self) -> Result<String, yaml_serde::Error> {
        let mut out = String::new();
        for resource in &self.resources {
            let yaml = match resource {
                Resource::Certificate(r) => yaml_serde::to_string(r)?,
                Resource::Issuer(r) => yaml_serde::to_string(r)?,
                Resource::ClusterIssuer(r) => yaml_serde::to_string(r)?,
            };
            out += "---\n";
            out += &yaml;
        }
        Ok(out)
    }

    /// The report: one `# ...` line per finding, then a summary.
    pub fn report(&self) -> String {
        let mut out: String = self.findings.iter().map(|f| format!("{f}\n")).collect();
        let losses = self.findings.iter().filter(|f| f.is_loss()).count();
        out += &format!(
            "# converted {} resource(s); {losses} thing(s) not converted, {} note(s)\n",
            self.resources.len(),
            self.findings.len() - losses
        );
        out
    }
}

/// Converts every document of `text` (`---`-separated, or `kind: List`).
pub fn convert(text: &str) -> Result<Conversion, ReadError> {
    let mut conversion = Conversion::default();
    for (index, document) in documents(text)?.into_iter().enumerate() {
        convert_document(document, index + 1, &mut conversion);
    }
    Ok(conversion)
}

/// `certpilot convert -f FILE` (`-` for stdin): manifests on stdout, the report on stderr.
/// Returns the exit status: 0 when everything converted, 2 when something did not, 1 when the
/// input cannot be read.
pub fn command(file: &str) -> i32 {
    let text = match read(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("certpilot convert: cannot read {file}: {e}");
            return 1;
        }
    };
    let conversion = match convert(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("certpilot convert: {file}: {e}");
            return 1;
        }
    };
    let manifests = match conversion.manifests() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("certpilot convert: cannot write YAML: {e}");
            return 1;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let written = stdout.write_all(manifests.as_bytes()).and_then(|()| stdout.flush());
    eprint!("{}", conversion.report());
    match (written, conversion.is_complete()) {
        (Err(_), _) => 1,
        (Ok(()), true) => 0,
        (Ok(()), false) => 2,
    }
}

fn read(file: &str) -> std::io::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

/// The documents, with the items of `List`s in their place.
fn documents(text: &str) -> Result<Vec<Value>, ReadError> {
    let mut out = Vec::new();
    for document in yaml_serde::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(|e| ReadError(e.to_string()))?;
        flatten_lists(value, &mut out);
    }
    Ok(out)
}

fn flatten_lists(value: Value, out: &mut Vec<Value>) {
    let is_list = value["kind"].as_str().is_some_and(|k| k.ends_with("List")) && value["items"].is_array();
    match value {
        Value::Null => {}
        Value::Object(mut map) if is_list => {
            if let Some(Value::Array(items)) = map.remove("items") {
                items.into_iter().for_each(|item| flatten_lists(item, out));
            }
        }
        other => out.push(other),
    }
}

/// What kind of cert-manager resource a document is, from its apiVersion and kind.
enum DocumentKind {
    Certificate,
    Issuer,
    ClusterIssuer,
    IssuanceRecord,
    OldApiVersion,
    Foreign,
}

fn document_kind(api_version: &str, kind: &str) -> DocumentKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    match (group, version, kind) {
        ("cert-manager.io", "v1", "Certificate") => DocumentKind::Certificate,
        ("cert-manager.io", "v1", "Issuer") => DocumentKind::Issuer,
        ("cert-manager.io", "v1", "ClusterIssuer") => DocumentKind::ClusterIssuer,
        ("cert-manager.io" | "acme.cert-manager.io", "v1", _) => DocumentKind::IssuanceRecord,
        ("cert-manager.io" | "certmanager.k8s.io" | "acme.cert-manager.io", _, _) => DocumentKind::OldApiVersion,
        _ => DocumentKind::Foreign,
    }
}

/// Findings about one input resource.
pub(crate) struct Findings<'a> {
    resource: ResourceId,
    list: &'a mut Vec<Finding>,
}

impl Findings<'_> {
    fn add(&mut self, path: impl Into<String>, problem: Problem) {
        self.list.push(Finding { resource: self.resource.clone(), path: path.into(), problem });
    }

    /// The whole resource is left out, for this reason.
    fn left_out(&mut self, problem: Problem) {
        self.add("", problem);
    }

    /// Fields certpilot has no counterpart for, each reported with `problem_for(key)`.
    fn rest(&mut self, path: &str, rest: &source::Rest, problem_for: impl Fn(&str) -> Problem) {
        for key in rest.keys() {
            self.add(format!("{path}.{key}"), problem_for(key));
        }
    }

    fn unmapped(&mut self, path: &str, rest: &source::Rest) {
        self.rest(path, rest, |_| Problem::NoCounterpartField);
    }
}

fn convert_document(document: Value, index: usize, conversion: &mut Conversion) {
    let api_version = document["apiVersion"].as_str().unwrap_or_default().to_string();
    let kind = document["kind"].as_str().unwrap_or_default().to_string();
    let meta: ObjectMeta = serde_json::from_value(document["metadata"].clone()).unwrap_or_default();
    let resource = ResourceId {
        kind: if kind.is_empty() { "(no kind)".into() } else { kind.clone() },
        namespace: meta.namespace.clone().filter(|_| kind != "ClusterIssuer"),
        name: meta.name.clone().unwrap_or_else(|| format!("(document {index})")),
    };
    let mut findings = Findings { resource, list: &mut conversion.findings };
    let doc_kind = document_kind(&api_version, &kind);
    if !matches!(doc_kind, DocumentKind::Foreign) && meta.name.is_none() {
        findings.left_out(Problem::Malformed { error: "metadata.name is missing".into() });
        return;
    }
    let converted = match doc_kind {
        DocumentKind::Certificate => convert_certificate(&document, meta, &mut findings),
        DocumentKind::Issuer => convert_issuer(&document, meta, &mut findings, false),
        DocumentKind::ClusterIssuer => convert_issuer(&document, meta, &mut findings, true),
        DocumentKind::IssuanceRecord => {
            findings.left_out(Problem::NoCounterpart);
            None
        }
        DocumentKind::OldApiVersion => {
            findings.left_out(Problem::OldApiVersion { api_version });
            None
        }
        DocumentKind::Foreign => {
            let api_version = if api_version.is_empty() { "no apiVersion".into() } else { api_version };
            findings.left_out(Problem::NotCertManager { api_version });
            None
        }
    };
    conversion.resources.extend(converted);
}

/// The document's `spec` as `T`, or the resource is reported as malformed.
fn spec<T: DeserializeOwned>(document: &Value, findings: &mut Findings) -> Option<T> {
    let spec = document.get("spec").cloned().unwrap_or_else(|| Value::Object(Default::default()));
    serde_json::from_value(spec).map_err(|e| findings.left_out(Problem::Malformed { error: format!("spec: {e}") })).ok()
}

fn convert_certificate(document: &Value, meta: ObjectMeta, findings: &mut Findings) -> Option<Resource> {
    let spec = certificate::convert(spec(document, findings)?, findings)?;
    let metadata = metadata(meta, true, findings);
    Some(Resource::Certificate(Box::new(Certificate { metadata, spec, status: None })))
}

fn convert_issuer(document: &Value, meta: ObjectMeta, findings: &mut Findings, cluster: bool) -> Option<Resource> {
    let namespace = meta.namespace.clone().filter(|_| !cluster);
    let scope = if cluster { issuer::Scope::Cluster } else { issuer::Scope::Namespace(namespace) };
    let spec = issuer::convert(spec(document, findings)?, &scope, findings)?;
    let metadata = metadata(meta, !cluster, findings);
    Some(match cluster {
        true => {
            Resource::ClusterIssuer(ClusterIssuer { metadata, spec: ClusterIssuerSpec { issuer: spec }, status: None })
        }
        false => Resource::Issuer(Issuer { metadata, spec, status: None }),
    })
}

/// Name, namespace, labels and annotations: what a user wrote, not what the cluster added
/// (`kubectl get -o yaml` output carries uid, resourceVersion and the like).
fn metadata(meta: ObjectMeta, namespaced: bool, findings: &mut Findings) -> ObjectMeta {
    let annotations = meta.annotations.map(|annotations| {
        annotations
            .into_iter()
            .filter(|(key, _)| key != "kubectl.kubernetes.io/last-applied-configuration")
            .filter(|(key, _)| {
                let cert_manager = key.split('/').next().is_some_and(|domain| domain.ends_with("cert-manager.io"));
                if cert_manager {
                    findings.add(format!("metadata.annotations.{key}"), Problem::CertManagerAnnotation);
                }
                !cert_manager
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    });
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace.filter(|_| namespaced),
        labels: meta.labels.filter(|l| !l.is_empty()),
        annotations: annotations.filter(|a| !a.is_empty()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
